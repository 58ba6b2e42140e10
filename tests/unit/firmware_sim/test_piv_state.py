"""The simulated PIV card's non-volatile memory: a JSON file that survives reloads, holds no
PIN or PUK in clear, is replaced atomically, and is refused with StateError when damaged."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from devices.protocol import tlv
from devices.protocol.apdu import CommandApdu
from devices.protocol.piv import (
    DEFAULT_MANAGEMENT_KEY,
    Algorithm,
    ObjectId,
    PinPolicy,
    Slot,
    pad_pin,
)
from firmware_sim.state import StateError
from firmware_sim.tokens.card import SimulatedCard
from firmware_sim.tokens.piv import PivApplet, load_applet, make_card, new_card_state

RID = bytes.fromhex("A000000308")


def exchange(card: SimulatedCard, ins: int, p1: int, p2: int, data: bytes = b"") -> bytes:
    return card.transmit(CommandApdu(0x00, ins, p1, p2, data, le=256).encode())


def send(card: SimulatedCard, ins: int, p1: int, p2: int, data: bytes = b"") -> int:
    return int.from_bytes(exchange(card, ins, p1, p2, data)[-2:], "big")


def authenticate(card: SimulatedCard) -> None:
    """Single challenge/response with the default 3DES management key."""
    answer = exchange(card, 0x87, 0x03, 0x9B, bytes.fromhex("7C028100"))
    assert answer[-2:] == b"\x90\x00"
    challenge = tlv.parse_dict(tlv.parse_one(answer[:-2], 0x7C).value)[0x81]
    encryptor = Cipher(TripleDES(DEFAULT_MANAGEMENT_KEY), modes.ECB()).encryptor()  # noqa: S305
    response = encryptor.update(challenge) + encryptor.finalize()
    body = tlv.encode_tlv(0x7C, tlv.encode_tlv(0x82, response))
    assert send(card, 0x87, 0x03, 0x9B, body) == 0x9000


def open_card(applet: PivApplet) -> SimulatedCard:
    card = make_card(applet, strict=True)
    card.power_on()
    assert send(card, 0xA4, 0x04, 0x00, RID) == 0x9000
    return card


def put_data(applet: PivApplet, tag: bytes, content: bytes) -> None:
    card = open_card(applet)
    authenticate(card)
    data = tlv.encode_tlv(0x5C, tag) + tlv.encode_tlv(0x53, content)
    assert send(card, 0xDB, 0x3F, 0xFF, data) == 0x9000


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "card" / "piv.json"


# --- persistence -------------------------------------------------------------------------------


def test_new_card_state_writes_loadable_file(state_path: Path) -> None:
    applet = new_card_state(state_path)

    reloaded = load_applet(state_path)

    assert reloaded.state.to_json() == applet.state.to_json()
    assert reloaded.state.pin_tries == 3
    assert reloaded.state.puk_tries == 3
    assert reloaded.state.management_key == DEFAULT_MANAGEMENT_KEY


def test_new_card_state_refuses_to_overwrite_existing_card(state_path: Path) -> None:
    new_card_state(state_path)
    before = state_path.read_bytes()

    with pytest.raises(StateError, match="exists already"):
        new_card_state(state_path)

    assert state_path.read_bytes() == before


def test_pin_tries_survive_reload(state_path: Path) -> None:
    card = open_card(new_card_state(state_path))
    assert send(card, 0x20, 0x00, 0x80, pad_pin("999999")) == 0x63C2
    assert send(card, 0x20, 0x00, 0x80, pad_pin("999999")) == 0x63C1

    reloaded = open_card(load_applet(state_path))

    assert send(reloaded, 0x20, 0x00, 0x80) == 0x63C1
    assert send(reloaded, 0x20, 0x00, 0x80, pad_pin("999999")) == 0x63C0


def test_blocked_pin_and_puk_survive_reload(state_path: Path) -> None:
    card = open_card(new_card_state(state_path))
    for _ in range(3):
        send(card, 0x20, 0x00, 0x80, pad_pin("999999"))
        send(card, 0x2C, 0x00, 0x80, pad_pin("99999999") + pad_pin("111111"))

    reloaded = open_card(load_applet(state_path))

    assert send(reloaded, 0x20, 0x00, 0x80) == 0x6983
    assert send(reloaded, 0x20, 0x00, 0x80, pad_pin("123456")) == 0x6983
    assert send(reloaded, 0x2C, 0x00, 0x80, pad_pin("12345678") + pad_pin("111111")) == 0x6983


def test_wrong_pin_is_counted_even_if_card_is_never_used_again(state_path: Path) -> None:
    """The try is saved before the answer: reloading right after a wrong PIN shows it spent."""
    card = open_card(new_card_state(state_path))

    send(card, 0x20, 0x00, 0x80, pad_pin("999999"))

    assert json.loads(state_path.read_text("utf-8"))["pin_tries"] == 2


def test_changed_pin_survives_reload(state_path: Path) -> None:
    card = open_card(new_card_state(state_path))
    assert send(card, 0x24, 0x00, 0x80, pad_pin("123456") + pad_pin("24681357")) == 0x9000

    reloaded = open_card(load_applet(state_path))

    assert send(reloaded, 0x20, 0x00, 0x80, pad_pin("24681357")) == 0x9000


def test_generated_key_survives_reload(state_path: Path) -> None:
    applet = new_card_state(state_path)
    point = applet.create_key(Slot.CARD_AUTHENTICATION, Algorithm.ECC_P384, PinPolicy.NEVER)
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), point)

    reloaded = open_card(load_applet(state_path))
    digest = bytes(range(48))
    body = tlv.encode_tlv(0x7C, tlv.encode_all([(0x82, b""), (0x81, digest)]))
    answer = reloaded.transmit(CommandApdu(0x00, 0x87, 0x14, 0x9E, body, le=256).encode())

    assert answer[-2:] == b"\x90\x00"
    signature = tlv.parse_dict(tlv.parse_one(answer[:-2], 0x7C).value)[0x82]
    public_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA384())))


def test_written_object_survives_reload(state_path: Path) -> None:
    applet = new_card_state(state_path)
    put_data(applet, ObjectId.KEY_HISTORY.value, b"\xc1\x01\x00\xc2\x01\x00")

    reloaded = load_applet(state_path)

    assert reloaded.state.objects[ObjectId.KEY_HISTORY.value] == b"\xc1\x01\x00\xc2\x01\x00"
    assert reloaded.state.to_json() == applet.state.to_json()


def test_provisioned_certificate_and_key_survive_reload(state_path: Path) -> None:
    applet = new_card_state(state_path, provision=True)

    reloaded = load_applet(state_path)

    assert reloaded.state.keys == applet.state.keys
    key = serialization.load_der_private_key(
        bytes.fromhex(reloaded.state.keys[Slot.AUTHENTICATION]["pkcs8"]), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert ObjectId.CERT_9A.value in reloaded.state.objects


def test_changed_management_key_survives_reload(state_path: Path) -> None:
    applet = new_card_state(state_path)
    card = open_card(applet)
    authenticate(card)
    new_key = bytes(range(32))
    assert send(card, 0xFF, 0xFF, 0xFF, bytes((0x0C, 0x9B, 32)) + new_key) == 0x9000

    reloaded = load_applet(state_path)

    assert reloaded.state.management_key == new_key
    assert reloaded.state.management_alg is Algorithm.AES256
    assert send(open_card(reloaded), 0x87, 0x03, 0x9B, bytes.fromhex("7C028100")) == 0x6A86


def test_volatile_security_state_does_not_survive_reload(state_path: Path) -> None:
    card = open_card(new_card_state(state_path))
    assert send(card, 0x20, 0x00, 0x80, pad_pin("123456")) == 0x9000

    reloaded = open_card(load_applet(state_path))

    assert send(reloaded, 0x20, 0x00, 0x80) == 0x63C3


# --- secrecy and atomic writes -----------------------------------------------------------------


def test_state_file_never_holds_pin_or_puk_in_clear(state_path: Path) -> None:
    pin, puk, new_pin, new_puk = "86420975", "97531864", "75319246", "64208531"
    card = open_card(new_card_state(state_path, pin=pin, puk=puk))
    snapshots = [state_path.read_bytes()]
    assert send(card, 0x20, 0x00, 0x80, pad_pin(pin)) == 0x9000
    snapshots.append(state_path.read_bytes())
    assert send(card, 0x24, 0x00, 0x80, pad_pin(pin) + pad_pin(new_pin)) == 0x9000
    snapshots.append(state_path.read_bytes())
    assert send(card, 0x24, 0x00, 0x81, pad_pin(puk) + pad_pin(new_puk)) == 0x9000
    snapshots.append(state_path.read_bytes())

    for snapshot in snapshots:
        text = snapshot.decode("utf-8").lower()
        for secret in (pin, puk, new_pin, new_puk):
            assert secret not in text
            assert secret.encode("ascii").hex() not in text
            assert pad_pin(secret).hex() not in text


def test_state_file_has_mode_0600_and_no_leftover_temp_files(state_path: Path) -> None:
    applet = new_card_state(state_path, provision=True)
    card = open_card(applet)
    for _ in range(3):
        send(card, 0x20, 0x00, 0x80, pad_pin("999999"))
    put_data(applet, ObjectId.KEY_HISTORY.value, b"\xc1\x01\x00")

    assert [entry.name for entry in state_path.parent.iterdir()] == [state_path.name]
    assert stat.S_IMODE(state_path.stat().st_mode) == 0o600


def test_state_file_is_replaced_not_rewritten_in_place(state_path: Path) -> None:
    """An atomic replace gives the file a new inode; a reader holding the old one sees the
    complete old state, never a half-written one."""
    applet = new_card_state(state_path)
    before = state_path.stat().st_ino
    with state_path.open("rb") as old:
        card = open_card(applet)
        send(card, 0x20, 0x00, 0x80, pad_pin("999999"))
        old_document = json.loads(old.read())

    assert state_path.stat().st_ino != before
    assert old_document["pin_tries"] == 3
    assert json.loads(state_path.read_bytes())["pin_tries"] == 2


# --- damaged files -----------------------------------------------------------------------------


def damage(path: Path, change: dict[str, Any]) -> None:
    document = json.loads(path.read_text("utf-8"))
    for key, value in change.items():
        if value is None:
            del document[key]
        else:
            document[key] = value
    path.write_text(json.dumps(document), "utf-8")


def test_missing_state_file_raises_state_error(state_path: Path) -> None:
    with pytest.raises(StateError, match="no token state"):
        load_applet(state_path)


@pytest.mark.parametrize(
    "payload",
    [b"", b'{"format": 1, "kind": "piv"', b"\x00\xff\xfe garbage", b"[1, 2, 3]"],
    ids=["empty", "truncated", "binary", "not-an-object"],
)
def test_unparseable_state_file_raises_state_error(state_path: Path, payload: bytes) -> None:
    new_card_state(state_path)
    state_path.write_bytes(payload)

    with pytest.raises(StateError, match=r"unreadable|not a token state"):
        load_applet(state_path)


def test_truncated_state_file_raises_state_error(state_path: Path) -> None:
    new_card_state(state_path, provision=True)
    whole = state_path.read_bytes()
    state_path.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(StateError, match="unreadable") as caught:
        load_applet(state_path)
    assert str(state_path) in str(caught.value)


def test_state_file_of_other_kind_raises_state_error(state_path: Path) -> None:
    new_card_state(state_path)
    damage(state_path, {"kind": "fido"})

    with pytest.raises(StateError, match="'fido' token, not 'piv'"):
        load_applet(state_path)


def test_state_file_of_unknown_format_raises_state_error(state_path: Path) -> None:
    new_card_state(state_path)
    damage(state_path, {"format": 99})

    with pytest.raises(StateError, match="not a token state file of format 1"):
        load_applet(state_path)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"pin_hash": None}, "pin_hash"),
        ({"salt": "not hex"}, "salt|hex"),
        ({"pin_tries": "three"}, "three"),
        ({"management_alg": 0x42}, "66|Algorithm"),
        ({"objects": ["5fc102"]}, "objects|items"),
        ({"keys": {"9a": 5}}, "int"),
        ({"objects": {"5fc10g": "00"}}, "hex"),
    ],
    ids=["missing-field", "bad-hex", "bad-int", "bad-alg", "list", "bad-key", "bad-tag"],
)
def test_damaged_field_raises_state_error_naming_it(
    state_path: Path, change: dict[str, Any], named: str
) -> None:
    new_card_state(state_path)
    damage(state_path, change)

    with pytest.raises(StateError, match="PIV state is damaged") as caught:
        load_applet(state_path)
    assert caught.match(named)


@pytest.mark.parametrize(
    "change",
    [
        {"pin_tries": 99},
        {"puk_tries": 16},
        {"pin_tries": -1},
        {"management_key": "0102030405"},
    ],
    ids=["pin-99", "puk-16", "pin-negative", "short-management-key"],
)
def test_semantically_damaged_state_raises_state_error(
    state_path: Path, change: dict[str, Any]
) -> None:
    """Values that parse but cannot be card memory are damage too. Loaded as they are, a
    retry counter outside 0..3 makes VERIFY raise in ``retries_remaining`` (6F00 on a
    non-strict card), and a 5-byte 3DES key makes GENERAL AUTHENTICATE raise."""
    new_card_state(state_path)
    damage(state_path, change)

    with pytest.raises(StateError):
        load_applet(state_path)
