"""Property tests: a strict simulated OATH card answers any input with a status word other than
6F00, and leaves a state file that loads and matches what the card holds."""

from __future__ import annotations

import hmac
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.protocol import tlv
from devices.protocol.apdu import CommandApdu
from devices.protocol.ykoath import Credential, OathAlgorithm, OathType
from firmware_sim.tokens.card import SimulatedCard
from firmware_sim.tokens.oath import OathApplet, load_applet, make_card, new_oath_state

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

AID = bytes.fromhex("A000000527210101")
SELECT = b"\x00\xa4\x04\x00\x08" + AID + b"\x00"
ACCESS_KEY = bytes(range(16))
NAMES = [b"totp", b"60/slow", b"hotp", b"touch", b"", b"x" * 64, b"x" * 65]

# Status words the card may legitimately answer with (SW1 values of ISO 7816-4 5.1.3).
VALID_SW1 = {0x61, 0x62, 0x63, 0x64, 0x65, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x90}


def check_response(command: bytes, answer: bytes) -> int:
    assert len(answer) >= 2, f"no status word for {command.hex()}"
    sw = int.from_bytes(answer[-2:], "big")
    assert sw != 0x6F00, f"6F00 for {command.hex()}"
    assert sw >> 8 in VALID_SW1, f"status word {sw:04X} for {command.hex()}"
    if sw >> 8 == 0x90:
        assert sw == 0x9000, f"status word {sw:04X} for {command.hex()}"
    if 0x64 <= sw >> 8 <= 0x6F:
        assert len(answer) == 2, f"data with error {sw:04X} for {command.hex()}"
    return sw


def check_state_file(path: Path, applet: OathApplet) -> None:
    assert load_applet(path).state.to_json() == applet.state.to_json()


def fresh_card(folder: str, *, touch: bool, locked: bool) -> tuple[Path, OathApplet, SimulatedCard]:
    path = Path(folder) / "oath.json"
    applet = new_oath_state(
        path,
        credentials=[
            (Credential("totp", OathType.TOTP), b"1" * 20),
            (Credential("slow", OathType.TOTP, OathAlgorithm.SHA512, 8, period=60), b"2" * 64),
            (Credential("hotp", OathType.HOTP, counter=3), b"3" * 20),
            (Credential("touch", OathType.TOTP, OathAlgorithm.SHA256, touch=True), b"4" * 32),
        ],
    )
    if locked:
        applet.state.code_key = ACCESS_KEY
        applet._save()
    loaded = load_applet(path, touch=lambda: touch)
    card = make_card(loaded, strict=True)
    card.power_on()
    return path, loaded, card


# --- (a) arbitrary bytes -----------------------------------------------------------------------

OATH_INS = [0x01, 0x02, 0x03, 0x04, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xC0, 0xA4]


@st.composite
def framed_commands(draw: st.DrawFn) -> bytes:
    """Random data behind a plausible header and a correct (short or extended) length."""
    cla = draw(st.sampled_from([0x00, 0x10, 0x80, 0x0C, 0x01, 0xFF]) | st.integers(0, 255))
    ins = draw(st.sampled_from(OATH_INS) | st.integers(0, 255))
    header = bytes((cla, ins, *draw(st.binary(min_size=2, max_size=2))))
    data = draw(st.binary(max_size=300))
    le = draw(st.none() | st.binary(min_size=1, max_size=2))
    if not data:
        return header + (le or b"")
    if len(data) <= 255 and draw(st.booleans()):
        return header + bytes((len(data),)) + data + (le[:1] if le else b"")
    return (
        header
        + b"\x00"
        + len(data).to_bytes(2, "big")
        + data
        + (le.rjust(2, b"\x00") if le else b"")
    )


any_bytes = st.binary(max_size=300) | framed_commands()


@FUZZ
@given(
    select_first=st.booleans(),
    touch=st.booleans(),
    locked=st.booleans(),
    commands=st.lists(any_bytes, min_size=1, max_size=6),
)
def test_any_bytes_get_status_word_and_state_stays_loadable(
    select_first: bool, touch: bool, locked: bool, commands: list[bytes]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path, applet, card = fresh_card(folder, touch=touch, locked=locked)
        if select_first:
            assert card.transmit(SELECT)[-2:] == b"\x90\x00"

        for command in commands:
            check_response(command, card.transmit(command))

        check_state_file(path, applet)


# --- (b) structured OATH commands --------------------------------------------------------------

names = st.sampled_from(NAMES) | st.binary(max_size=70)
challenges = st.sampled_from([b"", bytes(8), b"\x00\x00\x00\x00\x02\x34\x56\x78"]) | st.binary(
    max_size=70
)
digits = st.sampled_from([6, 7, 8]) | st.integers(0, 255)
type_algorithm = st.sampled_from([0x21, 0x22, 0x23, 0x11, 0x12, 0x13]) | st.integers(0, 255)
keys = st.sampled_from([13, 14, 20, 32, 64, 65, 128, 129]).flatmap(
    lambda n: st.binary(min_size=n, max_size=n)
)


@st.composite
def put_bodies(draw: st.DrawFn) -> bytes:
    body = tlv.encode_tlv(0x71, draw(names))
    body += tlv.encode_tlv(0x73, bytes((draw(type_algorithm), draw(digits))) + draw(keys))
    if draw(st.booleans()):
        body += bytes((0x78, draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04]))))
    if draw(st.booleans()):
        body += tlv.encode_tlv(0x7A, draw(st.binary(min_size=3, max_size=5)))
    return body


@st.composite
def set_code_bodies(draw: st.DrawFn) -> bytes:
    key = draw(st.sampled_from([ACCESS_KEY, b"", b"\x01" * 200]) | st.binary(max_size=20))
    challenge = draw(challenges)
    response = hmac.new(key, challenge, "sha1").digest()
    if draw(st.booleans()):
        response = draw(st.binary(max_size=24))
    return tlv.encode_all(
        [(0x73, bytes((draw(type_algorithm),)) + key), (0x74, challenge), (0x75, response)]
    )


calculate_bodies = st.builds(
    lambda name, challenge: tlv.encode_tlv(0x71, name) + tlv.encode_tlv(0x74, challenge),
    names,
    challenges,
)
validate_bodies = st.builds(
    lambda response, challenge: tlv.encode_tlv(0x75, response) + tlv.encode_tlv(0x74, challenge),
    st.binary(max_size=24),
    challenges,
)

FITTING: dict[int, tuple[st.SearchStrategy[int], st.SearchStrategy[int], st.SearchStrategy[bytes]]]
FITTING = {
    0x01: (st.just(0x00), st.just(0x00), put_bodies()),
    0x02: (st.just(0x00), st.just(0x00), names.map(lambda n: tlv.encode_tlv(0x71, n))),
    0x03: (st.just(0x00), st.just(0x00), set_code_bodies() | st.just(b"\x73\x00")),
    0x04: (st.just(0xDE), st.sampled_from([0xAD, 0xAE]), st.just(b"")),
    0xA1: (st.just(0x00), st.just(0x00), st.just(b"")),
    0xA2: (st.just(0x00), st.sampled_from([0x00, 0x01]), calculate_bodies),
    0xA3: (st.just(0x00), st.just(0x00), validate_bodies),
    0xA4: (
        st.sampled_from([0x00, 0x04]),
        st.sampled_from([0x00, 0x01]),
        challenges.map(lambda c: tlv.encode_tlv(0x74, c)) | st.just(AID),
    ),
    0xA5: (st.just(0x00), st.just(0x00), st.just(b"")),
    0xC0: (st.just(0x00), st.just(0x00), st.just(b"")),
}

command_data = st.one_of(
    st.binary(max_size=64), put_bodies(), set_code_bodies(), calculate_bodies, validate_bodies
)


@st.composite
def oath_commands(draw: st.DrawFn) -> bytes:
    ins = draw(st.sampled_from(sorted(FITTING)))
    if draw(st.booleans()):
        p1_strategy, p2_strategy, data_strategy = FITTING[ins]
    else:
        p1_strategy, p2_strategy, data_strategy = (
            st.integers(0, 255),
            st.integers(0, 255),
            command_data,
        )
    return CommandApdu(
        draw(st.sampled_from([0x00, 0x00, 0x00, 0x10])),
        ins,
        draw(p1_strategy),
        draw(p2_strategy),
        draw(data_strategy),
        le=draw(st.none() | st.sampled_from([256, 1]) | st.integers(1, 256)),
    ).encode()


@FUZZ
@given(
    touch=st.booleans(),
    locked=st.booleans(),
    commands=st.lists(oath_commands(), min_size=1, max_size=12),
)
def test_oath_command_sequences_keep_card_consistent(
    touch: bool, locked: bool, commands: list[bytes]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path, applet, card = fresh_card(folder, touch=touch, locked=locked)
        assert card.transmit(SELECT)[-2:] == b"\x90\x00"

        for command in commands:
            check_response(command, card.transmit(command))
            assert len(applet.state.credentials) <= 32

        check_state_file(path, applet)


def test_fuzz_invariants_hold_for_known_good_session() -> None:
    """The invariants above hold for a hand-written session (guards the helpers themselves)."""
    with tempfile.TemporaryDirectory() as folder:
        path, applet, card = fresh_card(folder, touch=True, locked=False)
        assert check_response(SELECT, card.transmit(SELECT)) == 0x9000
        calculate = CommandApdu(
            0x00, 0xA2, 0x00, 0x01, tlv.encode_tlv(0x71, b"hotp") + tlv.encode_tlv(0x74, b"")
        ).encode()
        assert check_response(calculate, card.transmit(calculate)) == 0x9000
        unknown = CommandApdu(0x00, 0xA2, 0x00, 0x01, tlv.encode_tlv(0x71, b"nobody")).encode()
        assert check_response(unknown, card.transmit(unknown)) == 0x6984
        check_state_file(path, applet)
        assert load_applet(path).state.credentials[b"hotp"].counter == 4
