"""Property tests: the simulated FIDO2 key answers every byte string with one CTAP status
byte (never CTAP1_ERR_OTHER, which would mean an internal error) or a U2F status word (never
6F00), answers success only with a canonical CBOR map, keeps its counters in range, and leaves
a state file that loads and matches what the key holds."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fido2 import cbor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_sim.tokens.ctap2 import (
    AlwaysPresent,
    Authenticator,
    decode_cbor,
    load_authenticator,
    new_fido_state,
)
from firmware_sim.tokens.ctap_pin import CtapStatus

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KNOWN_STATUS = {status.value for status in CtapStatus} - {CtapStatus.OTHER}
# SW1 values of ISO 7816-4 5.1.3 a U2F key answers with.
VALID_SW = {0x9000, 0x6700, 0x6985, 0x6A80, 0x6A86, 0x6D00, 0x6E00}


class FrozenClock:
    """Time stands still, so authenticatorReset stays inside its window."""

    def __call__(self) -> float:
        return 0.0


@contextmanager
def fresh_key() -> Iterator[tuple[Path, Authenticator]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "key.json"
        new_fido_state(path, manufacturer_home=Path(folder) / "maker")
        yield path, load_authenticator(path, AlwaysPresent(), clock=FrozenClock())


def check_cbor_answer(request: bytes, response: bytes) -> None:
    assert response, f"no answer to {request.hex()}"
    assert response[0] in KNOWN_STATUS, f"status {response[0]:02X} for {request.hex()}"
    if response[0] != 0:
        assert len(response) == 1, f"data with error {response[0]:02X} for {request.hex()}"
    elif len(response) > 1:
        body = decode_cbor(response[1:])
        assert isinstance(body, dict)
        assert cbor.encode(body) == response[1:]


def check_u2f_answer(apdu: bytes, response: bytes) -> None:
    assert len(response) >= 2, f"no status word for {apdu.hex()}"
    sw = int.from_bytes(response[-2:], "big")
    assert sw in VALID_SW, f"status word {sw:04X} for {apdu.hex()}"
    if sw != 0x9000:
        assert len(response) == 2


def check_state(path: Path, auth: Authenticator) -> None:
    assert 0 <= auth.state.pin_retries <= 8
    reloaded = load_authenticator(path, AlwaysPresent())
    assert reloaded.state.to_json() == auth.state.to_json()


# --- (a) arbitrary bytes --------------------------------------------------------------------

commands = st.sampled_from([0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0B]) | st.integers(0, 255)


@FUZZ
@given(
    requests=st.lists(
        st.binary(max_size=300)
        | st.tuples(commands, st.binary(max_size=300)).map(lambda t: bytes((t[0],)) + t[1]),
        min_size=1,
        max_size=6,
    )
)
def test_any_bytes_get_one_status_byte_and_state_stays_loadable(requests: list[bytes]) -> None:
    with fresh_key() as (path, auth):
        for request in requests:
            check_cbor_answer(request, auth.handle_cbor(request))
        check_state(path, auth)


u2f_headers = st.tuples(
    st.sampled_from([0x00, 0x80]) | st.integers(0, 255),
    st.sampled_from([0x01, 0x02, 0x03]) | st.integers(0, 255),
    st.sampled_from([0x00, 0x03, 0x07, 0x08]) | st.integers(0, 255),
    st.integers(0, 255),
).map(bytes)


@st.composite
def u2f_apdus(draw: st.DrawFn) -> bytes:
    header = draw(u2f_headers)
    data = draw(
        st.binary(max_size=200)
        | st.tuples(st.binary(min_size=64, max_size=64), st.binary(max_size=80)).map(
            lambda t: t[0] + bytes((len(t[1]),)) + t[1]
        )
    )
    if not data:
        return header + draw(st.sampled_from([b"", b"\x00", b"\x00\x00\x00"]))
    if len(data) <= 255 and draw(st.booleans()):
        return header + bytes((len(data),)) + data
    return header + b"\x00" + len(data).to_bytes(2, "big") + data + b"\x00\x00"


@FUZZ
@given(apdus=st.lists(st.binary(max_size=200) | u2f_apdus(), min_size=1, max_size=6))
def test_any_apdu_gets_status_word_and_state_stays_loadable(apdus: list[bytes]) -> None:
    with fresh_key() as (path, auth):
        for apdu in apdus:
            check_u2f_answer(apdu, auth.handle_u2f(apdu))
        check_state(path, auth)


# --- (b) structured requests: a valid command byte and a random CBOR map --------------------

leaves = st.one_of(
    st.integers(-(2**64) + 1, 2**64 - 1),
    st.binary(max_size=70),
    st.text(max_size=20),
    st.booleans(),
    st.sampled_from(
        [
            "example.com",
            "public-key",
            -7,
            -8,
            1,
            2,
            hashlib.sha256(b"x").digest(),
            b"",
        ]
    ),
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "type", "alg", "name", "rk", "up", "uv", "displayName"])
            | st.integers(-3, 12),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)
request_maps = st.dictionaries(
    st.integers(0, 12) | st.sampled_from(["rk", "id"]), values, min_size=0, max_size=8
)


def encode_request(command: int, params: dict[Any, Any]) -> bytes:
    return bytes((command,)) + cbor.encode(params)


@FUZZ
@given(
    requests=st.lists(
        st.tuples(st.sampled_from([0x01, 0x02, 0x06, 0x04, 0x07, 0x08, 0x0B]), request_maps),
        min_size=1,
        max_size=6,
    )
)
def test_random_cbor_maps_get_one_status_byte_and_state_stays_loadable(
    requests: list[tuple[int, dict[Any, Any]]],
) -> None:
    with fresh_key() as (path, auth):
        for command, params in requests:
            request = encode_request(command, params)
            check_cbor_answer(request, auth.handle_cbor(request))
        check_state(path, auth)


@FUZZ
@given(
    changes=st.dictionaries(st.integers(1, 10), values, max_size=4),
    command=st.sampled_from([0x01, 0x02]),
)
def test_mutated_valid_requests_get_one_status_byte(changes: dict[int, Any], command: int) -> None:
    valid: dict[int, dict[int, Any]] = {
        0x01: {
            1: bytes(32),
            2: {"id": "example.com"},
            3: {"id": b"user"},
            4: [{"type": "public-key", "alg": -7}],
        },
        0x02: {1: "example.com", 2: bytes(32)},
    }
    with fresh_key() as (path, auth):
        auth.handle_cbor(encode_request(0x01, valid[0x01] | {7: {"rk": True}}))
        request = encode_request(command, valid[command] | changes)
        check_cbor_answer(request, auth.handle_cbor(request))
        check_state(path, auth)
