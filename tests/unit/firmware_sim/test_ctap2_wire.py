"""The simulated FIDO2 key's bytes: CTAP 2.1 section 8 error codes for malformed, non-canonical,
incomplete and mistyped requests, canonical CBOR answers, and the published CTAP examples
(tests/vectors/ctap2) through the key's own CBOR decoder and COSE encoding."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.webauthn import AuthenticatorData

from firmware_sim.tokens.ctap2 import (
    CREDENTIAL_ID_LENGTH,
    MAX_MSG_SIZE,
    AlwaysPresent,
    Authenticator,
    cose_key,
    decode_cbor,
    load_authenticator,
    new_fido_state,
)

VECTORS = json.loads(
    (Path(__file__).parents[2] / "vectors" / "ctap2" / "spec_examples.json").read_text()
)
CDH = hashlib.sha256(b"client data").digest()
RP = {"id": "example.com", "name": "Example"}
USER = {"id": b"user-1", "name": "alice"}
ES256 = [{"type": "public-key", "alg": -7}]
MC_PARAMS: dict[int, Any] = {1: CDH, 2: RP, 3: USER, 4: ES256}


@pytest.fixture
def auth(tmp_path: Path) -> Authenticator:
    path = tmp_path / "key.json"
    new_fido_state(path, manufacturer_home=tmp_path / "maker")
    return load_authenticator(path, AlwaysPresent())


def status(auth: Authenticator, request: bytes) -> int:
    response = auth.handle_cbor(request)
    assert len(response) == 1 or response[0] == 0, f"data after error {response.hex()}"
    return response[0]


# --- published examples ------------------------------------------------------------------


@pytest.mark.parametrize("message", VECTORS["messages"], ids=lambda m: m["name"])
def test_spec_example_decodes_as_python_fido2_does(message: dict[str, str]) -> None:
    raw = bytes.fromhex(message["cbor"])
    decoded = decode_cbor(raw)
    assert decoded == cbor.decode(raw)
    assert cbor.encode(decoded) == raw  # the examples are canonical, and so is our encoding


def test_spec_example_cose_key_matches_es256_encoding() -> None:
    vector = VECTORS["es256_cose_key"]
    public = ec.EllipticCurvePublicNumbers(
        int(vector["x"], 16), int(vector["y"], 16), ec.SECP256R1()
    ).public_key()
    assert cbor.encode(cose_key(public)) == bytes.fromhex(vector["cbor"])


def test_spec_example_auth_data_has_layout_we_produce(auth: Authenticator) -> None:
    layout = VECTORS["auth_data_layout"]
    example = cbor.decode(bytes.fromhex(VECTORS["messages"][1]["cbor"]))[2]
    parsed = AuthenticatorData(example)
    assert parsed.rp_id_hash.hex() == layout["rp_id_hash"]
    assert parsed.flags == layout["flags"]
    assert parsed.counter == layout["sign_count"]
    assert parsed.credential_data is not None
    assert parsed.credential_data.credential_id.hex() == layout["credential_id"]
    # Ours, parsed the same way, ends exactly where the example's layout says.
    ours = cbor.decode(auth.handle_cbor(b"\x01" + cbor.encode(MC_PARAMS))[1:])[2]
    mine = AuthenticatorData(ours)
    assert mine.credential_data is not None
    assert len(mine.credential_data.credential_id) == CREDENTIAL_ID_LENGTH
    assert mine.credential_data.aaguid == auth.aaguid
    assert bytes(mine) == ours
    assert mine.flags == 0x41


# --- framing -------------------------------------------------------------------------------


def test_empty_request_answers_invalid_length(auth: Authenticator) -> None:
    assert status(auth, b"") == 0x03


@pytest.mark.parametrize("command", [0x00, 0x03, 0x05, 0x09, 0x0A, 0x40, 0xFF])
def test_unknown_command_answers_invalid_command(auth: Authenticator, command: int) -> None:
    assert status(auth, bytes((command,)) + cbor.encode({1: 1})) == 0x01


@pytest.mark.parametrize("command", [0x04, 0x07, 0x08, 0x0B])
def test_parameterless_command_with_payload_answers_invalid_length(
    auth: Authenticator, command: int
) -> None:
    assert status(auth, bytes((command,)) + b"\xa0") == 0x03


def test_request_over_max_msg_size_answers_request_too_large(auth: Authenticator) -> None:
    params = MC_PARAMS | {5: [{"type": "public-key", "id": bytes(100)}] * 11}
    request = b"\x01" + cbor.encode(params)
    assert len(request) > MAX_MSG_SIZE
    assert status(auth, request) == 0x39


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("a1", id="truncated-map"),
        pytest.param("a10158", id="truncated-length"),
        pytest.param("a1015820" + "00" * 31, id="truncated-bytes"),
        pytest.param("a0a0", id="trailing-bytes"),
        pytest.param("bf01ff", id="indefinite-map"),
        pytest.param("a202010101", id="keys-out-of-order"),
        pytest.param("a201010101", id="duplicate-key"),
        pytest.param("a1180101", id="key-not-shortest"),
        pytest.param("a101c240", id="tag"),
        pytest.param("a101f93c00", id="half-float"),
        pytest.param("a101f7", id="undefined"),
        pytest.param("a10162c328", id="bad-utf8"),
        pytest.param("a1018181818181", id="nested-too-deep"),
        pytest.param("a1a10101", id="map-as-key"),
        pytest.param("1c", id="reserved-additional-info"),
    ],
)
def test_malformed_cbor_answers_invalid_cbor(auth: Authenticator, payload: str) -> None:
    for command in (0x01, 0x02, 0x06):
        assert status(auth, bytes((command,)) + bytes.fromhex(payload)) == 0x12


@pytest.mark.parametrize("payload", ["80", "01", "40", "f5", "f6"])
def test_request_that_is_not_a_map_answers_unexpected_type(
    auth: Authenticator, payload: str
) -> None:
    assert status(auth, b"\x01" + bytes.fromhex(payload)) == 0x11


def test_command_without_parameters_answers_missing_parameter(auth: Authenticator) -> None:
    for command in (0x01, 0x02, 0x06):
        assert status(auth, bytes((command,))) == 0x14


@pytest.mark.parametrize("drop", [1, 2, 3, 4])
def test_missing_make_credential_member_answers_missing_parameter(
    auth: Authenticator, drop: int
) -> None:
    params = {k: v for k, v in MC_PARAMS.items() if k != drop}
    assert status(auth, b"\x01" + cbor.encode(params)) == 0x14


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        pytest.param({1: "hash"}, 0x11, id="clientDataHash-text"),
        pytest.param({2: ["example.com"]}, 0x11, id="rp-array"),
        pytest.param({2: {"id": 5}}, 0x11, id="rp-id-int"),
        pytest.param({2: {"name": "x"}}, 0x14, id="rp-id-missing"),
        pytest.param({3: {"id": "text"}}, 0x11, id="user-id-text"),
        pytest.param({3: {"name": "x"}}, 0x14, id="user-id-missing"),
        pytest.param({3: {"id": bytes(65)}}, 0x02, id="user-id-too-long"),
        pytest.param({4: {"alg": -7}}, 0x11, id="params-map"),
        pytest.param({4: [{"type": "public-key", "alg": "ES256"}]}, 0x11, id="alg-text"),
        pytest.param({4: [{"type": "public-key"}]}, 0x14, id="alg-missing"),
        pytest.param({4: [7]}, 0x11, id="param-int"),
        pytest.param({5: [{"type": "public-key"}]}, 0x14, id="exclude-id-missing"),
        pytest.param({5: [{"type": "public-key", "id": "x"}]}, 0x11, id="exclude-id-text"),
        pytest.param({5: {}}, 0x11, id="exclude-map"),
        pytest.param({6: []}, 0x11, id="extensions-array"),
        pytest.param({7: {"rk": 1}}, 0x11, id="option-int"),
        pytest.param({7: []}, 0x11, id="options-array"),
        pytest.param({8: "x", 9: 2}, 0x11, id="pin-auth-text"),
        pytest.param({8: bytes(32), 9: -2}, 0x11, id="protocol-negative"),
        pytest.param({8: bytes(32), 9: True}, 0x11, id="protocol-bool"),
        pytest.param({8: bytes(32), 9: 3}, 0x02, id="protocol-unknown"),
        pytest.param({0x0A: 1}, 0x02, id="enterprise-attestation"),
        pytest.param({4: []}, 0x26, id="no-algorithms"),
    ],
)
def test_bad_make_credential_member_answers_ctap_error(
    auth: Authenticator, changes: dict[int, Any], code: int
) -> None:
    assert status(auth, b"\x01" + cbor.encode(MC_PARAMS | changes)) == code


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({2: CDH}, 0x14, id="rp-id-missing"),
        pytest.param({1: "example.com"}, 0x14, id="client-data-hash-missing"),
        pytest.param({1: b"example.com", 2: CDH}, 0x11, id="rp-id-bytes"),
        pytest.param({1: "example.com", 2: CDH, 3: {}}, 0x11, id="allow-list-map"),
        pytest.param({1: "example.com", 2: CDH, 3: [{"id": b"x"}]}, 0x14, id="type-missing"),
        pytest.param({1: "example.com", 2: CDH, 5: {"up": "no"}}, 0x11, id="up-text"),
        pytest.param({1: "example.com", 2: CDH, 6: bytes(32)}, 0x14, id="protocol-missing"),
        pytest.param({1: "example.com", 2: CDH}, 0x2E, id="no-credentials"),
        pytest.param(
            {1: "example.com", 2: CDH, 3: [{"type": "other", "id": b"x"}]}, 0x2E, id="other-type"
        ),
    ],
)
def test_bad_get_assertion_member_answers_ctap_error(
    auth: Authenticator, params: dict[int, Any], code: int
) -> None:
    assert status(auth, b"\x02" + cbor.encode(params)) == code


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({1: 2}, 0x14, id="subcommand-missing"),
        pytest.param({1: 2, 2: "retries"}, 0x11, id="subcommand-text"),
        pytest.param({2: 2}, 0x14, id="protocol-missing"),
        pytest.param({1: 2, 2: 2, 3: b"key"}, 0x11, id="key-agreement-bytes"),
        pytest.param({1: 2, 2: 3}, 0x14, id="set-pin-members-missing"),
        pytest.param({1: 2, 2: 9, 3: {}, 6: bytes(32)}, 0x14, id="permissions-missing"),
        pytest.param({1: 2, 2: 9, 3: {}, 6: bytes(32), 9: 1, 10: 5}, 0x11, id="rp-id-int"),
        pytest.param({1: 2, 2: 5, 3: {}, 6: bytes(32), 9: 3}, 0x02, id="legacy-permissions"),
        pytest.param({1: 2, 2: 5, 3: {}, 6: bytes(32)}, 0x35, id="get-token-no-pin"),
    ],
)
def test_bad_client_pin_member_answers_ctap_error(
    auth: Authenticator, params: dict[int, Any], code: int
) -> None:
    assert status(auth, b"\x06" + cbor.encode(params)) == code


def test_unknown_members_and_options_are_ignored(auth: Authenticator) -> None:
    params = MC_PARAMS | {
        2: RP | {"icon": "x", "extra": 1},
        5: [{"type": "public-key", "id": b"x", "transports": ["usb", "nfc"]}],  # 4 levels
        6: {"unknownExtension": [1, 2]},
        7: {"somethingNew": 5},
        "vendor": 1,
        99: b"",
    }
    assert status(auth, b"\x01" + cbor.encode(params)) == 0x00


# --- answers --------------------------------------------------------------------------------


def test_get_info_answer_is_byte_exact(auth: Authenticator) -> None:
    expected = {
        0x01: ["U2F_V2", "FIDO_2_0", "FIDO_2_1"],
        0x03: auth.aaguid,
        0x04: {
            "rk": True,
            "up": True,
            "plat": False,
            "clientPin": False,
            "pinUvAuthToken": True,
            "makeCredUvNotRqd": True,
        },
        0x05: 1200,
        0x06: [2, 1],
        0x07: 8,
        0x08: CREDENTIAL_ID_LENGTH,
        0x09: ["nfc", "usb"],
        0x0A: [{"alg": -7, "type": "public-key"}, {"alg": -8, "type": "public-key"}],
        0x0C: False,
        0x0D: 4,
        0x0E: 0x010000,
        0x14: 25,
    }
    assert auth.handle_cbor(b"\x04") == b"\x00" + cbor.encode(expected)


@pytest.mark.parametrize(
    "request_hex",
    [
        "04",
        "01" + cbor.encode(MC_PARAMS | {7: {"rk": True}}).hex(),
        "02" + cbor.encode({1: "example.com", 2: CDH}).hex(),
        "06" + cbor.encode({1: 2, 2: 1}).hex(),
        "06" + cbor.encode({1: 1, 2: 2}).hex(),
    ],
)
def test_answers_are_canonical_cbor_maps(auth: Authenticator, request_hex: str) -> None:
    auth.handle_cbor(b"\x01" + cbor.encode(MC_PARAMS | {7: {"rk": True}}))
    response = auth.handle_cbor(bytes.fromhex(request_hex))
    assert response[0] == 0
    body = decode_cbor(response[1:])  # our strict decoder accepts only canonical CBOR
    assert isinstance(body, dict)
    assert cbor.encode(body) == response[1:]


def test_pin_retries_answer_is_byte_exact_when_pin_set(auth: Authenticator) -> None:
    from fido2.ctap2 import ClientPin, Ctap2

    from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice

    ClientPin(Ctap2(InProcessCtapDevice(auth))).set_pin("1234")
    assert auth.handle_cbor(b"\x06" + cbor.encode({1: 2, 2: 1})) == b"\x00" + cbor.encode(
        {3: 8, 4: False}
    )
