"""Property tests: the simulated PIV card answers every input with a status word, never
crashes (a strict card raises on applet bugs instead of hiding them as 6F00), keeps its retry
counters in range, and leaves a state file that loads and matches what the card holds."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.protocol import tlv
from devices.protocol.apdu import CommandApdu
from devices.protocol.piv import (
    DEFAULT_MANAGEMENT_KEY,
    DEFAULT_PIN_POLICY,
    Algorithm,
    ObjectId,
    Slot,
    pad_pin,
)
from firmware_sim.tokens.card import SimulatedCard
from firmware_sim.tokens.piv import PivApplet, load_applet, make_card, new_card_state

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RID = bytes.fromhex("A000000308")
PIX_TAIL = bytes.fromhex("000010000100")
SELECT = b"\x00\xa4\x04\x00\x05" + RID + b"\x00"

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


def check_counters(applet: PivApplet) -> None:
    assert 0 <= applet.state.pin_tries <= 3
    assert 0 <= applet.state.puk_tries <= 3


def check_state_file(path: Path, applet: PivApplet) -> None:
    reloaded = load_applet(path)
    check_counters(reloaded)
    assert reloaded.state.to_json() == applet.state.to_json()


def tdes_encrypt(block: bytes) -> bytes:
    encryptor = Cipher(TripleDES(DEFAULT_MANAGEMENT_KEY), modes.ECB()).encryptor()  # noqa: S305
    return encryptor.update(block) + encryptor.finalize()


def management_auth(card: SimulatedCard) -> None:
    """Single challenge/response with the default key, over raw APDUs."""
    answer = card.transmit(bytes.fromhex("0087039B047C02810000"))
    assert answer[-2:] == b"\x90\x00"
    challenge = tlv.parse_dict(tlv.parse_one(answer[:-2], 0x7C).value)[0x81]
    body = tlv.encode_tlv(0x7C, tlv.encode_tlv(0x82, tdes_encrypt(challenge)))
    assert card.transmit(CommandApdu(0x00, 0x87, 0x03, 0x9B, body).encode()) == b"\x90\x00"


# --- (a) arbitrary bytes -----------------------------------------------------------------------

header_ins = st.sampled_from([0xA4, 0xCB, 0x20, 0x24, 0x2C, 0x87, 0x47, 0xDB, 0xC0, 0x84, 0xFD])


@st.composite
def framed_commands(draw: st.DrawFn) -> bytes:
    """Random data behind a plausible header and a correct (short or extended) length."""
    cla = draw(st.sampled_from([0x00, 0x10, 0x80, 0x0C, 0x01, 0xFF]) | st.integers(0, 255))
    header = bytes(
        (cla, draw(header_ins | st.integers(0, 255)), *draw(st.binary(min_size=2, max_size=2)))
    )
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
    commands=st.lists(any_bytes, min_size=1, max_size=6),
)
def test_any_bytes_get_status_word_and_state_stays_loadable(
    select_first: bool, commands: list[bytes]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "piv.json"
        applet = new_card_state(path)
        card = make_card(applet, strict=True)
        card.power_on()
        if select_first:
            assert card.transmit(SELECT)[-2:] == b"\x90\x00"

        for command in commands:
            check_response(command, card.transmit(command))
            check_counters(applet)

        check_state_file(path, applet)


# --- (b) structured PIV command sequences ------------------------------------------------------

# The PIV set, plus the vendor SET MANAGEMENT KEY (FF) which changes non-volatile state.
PIV_INS = [0xA4, 0xCB, 0x20, 0x24, 0x2C, 0x87, 0x47, 0xDB, 0xC0, 0x84, 0xFD, 0xF8, 0xFF]
OBJECT_TAGS = [member.value for member in ObjectId] + [bytes.fromhex("5FC10D"), b"", b"\x5f"]

p1_values = st.sampled_from([0x00, 0x3F, 0xFF, 0x03, 0x08, 0x11, 0x14, 0x04]) | st.integers(0, 255)
p2_values = st.sampled_from([0x00, 0x80, 0x81, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0xFF, 0x0C]) | (
    st.integers(0, 255)
)
# Field values: empty (a request), the sizes the card checks for (3DES/AES blocks, P-256 and
# P-384 digests and points), and anything else.
field_values = st.one_of(
    st.just(b""),
    st.sampled_from([8, 16, 32, 48, 65, 97]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.binary(max_size=100),
)


@st.composite
def points(draw: st.DrawFn) -> bytes:
    """EC points: valid ones for both curves, and near-misses."""
    curve = draw(st.sampled_from([ec.SECP256R1(), ec.SECP384R1()]))
    point = (
        ec.generate_private_key(curve)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    mutation = draw(st.sampled_from(["none", "flip", "truncate", "compress-prefix"]))
    if mutation == "flip":
        index = draw(st.integers(1, len(point) - 1))
        point = point[:index] + bytes((point[index] ^ 0x01,)) + point[index + 1 :]
    elif mutation == "truncate":
        point = point[: draw(st.integers(0, len(point) - 1))]
    elif mutation == "compress-prefix":
        point = b"\x02" + point[1 : 1 + (len(point) - 1) // 2]
    return point


dyn_auth = st.lists(
    st.tuples(st.sampled_from([0x80, 0x81, 0x82, 0x85, 0x83]), field_values | points()),
    max_size=3,
).map(lambda items: tlv.encode_tlv(0x7C, tlv.encode_all(items)))

tag_list = st.sampled_from(OBJECT_TAGS).map(lambda tag: tlv.encode_tlv(0x5C, tag))

put_data_body = st.tuples(
    st.sampled_from(OBJECT_TAGS),
    st.sampled_from([0x53, 0x7E, 0x70]),
    st.binary(max_size=400),
).map(lambda t: tlv.encode_tlv(0x5C, t[0]) + tlv.encode_tlv(t[1], t[2]))

generate_body = st.lists(
    st.tuples(
        st.sampled_from([0x80, 0xAA, 0xAB]),
        st.sampled_from([b"\x11", b"\x14", b"\x07", b"\x03", b"\x00", b"\x01", b"\x02", b"\x04"])
        | st.binary(max_size=3),
    ),
    max_size=3,
).map(lambda items: tlv.encode_tlv(0xAC, tlv.encode_all(items)))

secrets_body = st.sampled_from(
    ["123456", "12345678", "654321", "999999", "11111111", "24681357"]
).map(pad_pin)
reference_data = st.one_of(
    secrets_body,
    st.tuples(secrets_body, secrets_body).map(lambda pair: pair[0] + pair[1]),
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=16, max_size=16),
)

set_management_key_body = st.tuples(
    st.sampled_from([0x03, 0x08, 0x0A, 0x0C, 0x11, 0x00]),
    st.sampled_from([0x9B, 0x9A]),
    st.sampled_from([16, 24, 32, 8]),
    st.binary(min_size=0, max_size=34),
).map(lambda t: bytes((t[0], t[1], t[2])) + t[3][: t[2]].ljust(t[2], b"\x01"))

command_data = st.one_of(
    st.binary(max_size=64),
    dyn_auth,
    tag_list,
    put_data_body,
    generate_body,
    reference_data,
    set_management_key_body,
    st.just(RID),
)


# For each instruction, the P1/P2 and data a well-behaved host would send. Half the commands
# use these (so they get past parameter checks into the applet's logic), half random ones.
FITTING: dict[int, tuple[st.SearchStrategy[int], st.SearchStrategy[int], st.SearchStrategy[bytes]]]
FITTING = {
    0xA4: (st.just(0x04), st.sampled_from([0x00, 0x0C]), st.sampled_from([RID, RID + PIX_TAIL])),
    0xCB: (st.just(0x3F), st.just(0xFF), tag_list),
    0x20: (st.sampled_from([0x00, 0xFF]), st.just(0x80), st.just(b"") | reference_data),
    0x24: (st.just(0x00), st.sampled_from([0x80, 0x81]), reference_data),
    0x2C: (st.just(0x00), st.just(0x80), reference_data),
    0x87: (
        st.sampled_from([0x03, 0x11, 0x14]),
        st.sampled_from([0x9A, 0x9B, 0x9C, 0x9D, 0x9E]),
        dyn_auth,
    ),
    0x47: (st.just(0x00), st.sampled_from([0x9A, 0x9C, 0x9D, 0x9E]), generate_body),
    0xDB: (st.just(0x3F), st.just(0xFF), put_data_body),
    0xC0: (st.just(0x00), st.just(0x00), st.just(b"")),
    0x84: (st.just(0x00), st.just(0x00), st.just(b"")),
    0xFD: (st.just(0x00), st.just(0x00), st.just(b"")),
    0xF8: (st.just(0x00), st.just(0x00), st.just(b"")),
    0xFF: (st.just(0xFF), st.just(0xFF), set_management_key_body),
}
assert sorted(FITTING) == sorted(PIV_INS)


@st.composite
def piv_commands(draw: st.DrawFn) -> bytes:
    ins = draw(st.sampled_from(PIV_INS))
    if draw(st.booleans()):
        p1_strategy, p2_strategy, data_strategy = FITTING[ins]
    else:
        p1_strategy, p2_strategy, data_strategy = p1_values, p2_values, command_data
    return CommandApdu(
        draw(st.sampled_from([0x00, 0x00, 0x00, 0x10])),
        ins,
        draw(p1_strategy),
        draw(p2_strategy),
        draw(data_strategy),
        le=draw(st.none() | st.sampled_from([256, 1, 8]) | st.integers(1, 256)),
    ).encode()


def provision_keys(applet: PivApplet, algorithms: list[Algorithm]) -> None:
    """A key in every slot (factory personalisation), so signing and ECDH paths are reached."""
    for slot, algorithm in zip(Slot, algorithms, strict=True):
        applet.create_key(slot, algorithm, DEFAULT_PIN_POLICY[slot])


@FUZZ
@given(
    algorithms=st.lists(
        st.sampled_from([Algorithm.ECC_P256, Algorithm.ECC_P384]), min_size=4, max_size=4
    ),
    verify_first=st.booleans(),
    commands=st.lists(piv_commands(), min_size=1, max_size=12),
)
def test_piv_command_sequences_keep_card_consistent(
    algorithms: list[Algorithm], verify_first: bool, commands: list[bytes]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "piv.json"
        applet = new_card_state(path)
        provision_keys(applet, algorithms)
        card = make_card(applet, strict=True)
        card.power_on()
        assert card.transmit(SELECT)[-2:] == b"\x90\x00"
        management_auth(card)
        if verify_first:
            assert card.transmit(b"\x00\x20\x00\x80\x08" + pad_pin("123456")) == b"\x90\x00"

        for command in commands:
            check_response(command, card.transmit(command))
            check_counters(applet)

        check_state_file(path, applet)


def test_fuzz_invariants_hold_for_known_good_session() -> None:
    """The invariants above hold for a hand-written session (guards the helpers themselves)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "piv.json"
        applet = new_card_state(path)
        card = make_card(applet, strict=True)
        card.power_on()
        assert check_response(SELECT, card.transmit(SELECT)) == 0x9000
        management_auth(card)
        generate = CommandApdu(0x00, 0x47, 0x00, 0x9A, bytes.fromhex("AC03800111"), le=256).encode()
        assert check_response(generate, card.transmit(generate)) == 0x9000
        wrong = b"\x00\x20\x00\x80\x08" + pad_pin("654321")
        assert check_response(wrong, card.transmit(wrong)) == 0x63C2
        check_state_file(path, applet)
        assert 0x9A in load_applet(path).state.keys
