"""The simulated PIV applet on the wire (NIST SP 800-73-4 part 2), byte by byte.

Every test talks to a strict ``SimulatedCard`` (applet bugs raise instead of answering 6F00)
with raw command APDUs and checks the raw response bytes and status words.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from devices.protocol import tlv
from devices.protocol.apdu import CommandApdu
from devices.protocol.piv import (
    DEFAULT_MANAGEMENT_KEY,
    Chuid,
    ObjectId,
    certificate_object,
)
from firmware_sim.tokens.card import SimulatedCard
from firmware_sim.tokens.piv import PivApplet, make_card, new_card_state

RID = bytes.fromhex("A000000308")
FULL_AID = bytes.fromhex("A000000308000010000100")
PIX = bytes.fromhex("000010000100")
PIN = b"123456\xff\xff"
PUK = b"12345678"
WRONG_PIN = b"654321\xff\xff"
WRONG_PUK = b"87654321"


# --- helpers -----------------------------------------------------------------------------------


class Terminal:
    """Sends raw APDUs to a card and splits the answer into data and status word."""

    def __init__(self, card: SimulatedCard) -> None:
        self.card = card

    def raw(self, command: bytes) -> bytes:
        return self.card.transmit(command)

    def send(
        self,
        ins: int,
        p1: int,
        p2: int,
        data: bytes = b"",
        le: int | None = None,
        cla: int = 0x00,
    ) -> tuple[bytes, int]:
        answer = self.raw(CommandApdu(cla, ins, p1, p2, data, le=le).encode())
        assert len(answer) >= 2
        return answer[:-2], int.from_bytes(answer[-2:], "big")

    def send_all(self, ins: int, p1: int, p2: int, data: bytes = b"") -> tuple[bytes, int]:
        """Like ``send`` with Le=256, then GET RESPONSE while the card says 61xx."""
        out, sw = self.send(ins, p1, p2, data, le=256)
        collected = bytearray(out)
        while sw >> 8 == 0x61:
            out, sw = self.send(0xC0, 0x00, 0x00, le=(sw & 0xFF) or 256)
            collected += out
        return bytes(collected), sw

    def select(self) -> None:
        _, sw = self.send(0xA4, 0x04, 0x00, RID, le=256)
        assert sw == 0x9000

    def verify(self, pin: bytes = PIN) -> int:
        return self.send(0x20, 0x00, 0x80, pin)[1]

    def pin_status(self) -> int:
        return self.send(0x20, 0x00, 0x80)[1]

    def get_data(self, tag: bytes) -> tuple[bytes, int]:
        return self.send_all(0xCB, 0x3F, 0xFF, tlv.encode_tlv(0x5C, tag))

    def put_data(self, tag: bytes, content: bytes, outer: int = 0x53) -> int:
        data = tlv.encode_tlv(0x5C, tag) + tlv.encode_tlv(outer, content)
        return self._chained(0xDB, 0x3F, 0xFF, data)

    def _chained(self, ins: int, p1: int, p2: int, data: bytes) -> int:
        pieces = [data[i : i + 255] for i in range(0, len(data), 255)]
        for piece in pieces[:-1]:
            _, sw = self.send(ins, p1, p2, piece, cla=0x10)
            assert sw == 0x9000
        return self.send(ins, p1, p2, pieces[-1])[1]

    def generate(self, slot: int, alg: int = 0x11, policy: int | None = None) -> tuple[bytes, int]:
        control = [(0x80, bytes((alg,)))]
        if policy is not None:
            control.append((0xAA, bytes((policy,))))
        return self.send_all(0x47, 0x00, slot, tlv.encode_tlv(0xAC, tlv.encode_all(control)))

    def general_authenticate(self, alg: int, ref: int, fields: bytes) -> tuple[bytes, int]:
        return self.send_all(0x87, alg, ref, tlv.encode_tlv(0x7C, fields))

    def sign(self, slot: int, digest: bytes, alg: int = 0x11) -> tuple[bytes, int]:
        fields = tlv.encode_all([(0x82, b""), (0x81, digest)])
        return self.general_authenticate(alg, slot, fields)

    def authenticate(self, key: bytes = DEFAULT_MANAGEMENT_KEY) -> None:
        answer, sw = self.general_authenticate(0x03, 0x9B, tlv.encode_tlv(0x80, b""))
        assert sw == 0x9000
        witness = tdes_decrypt(key, tlv.parse_dict(tlv.parse_one(answer, 0x7C).value)[0x80])
        challenge = secrets.token_bytes(8)
        body = tlv.encode_all([(0x80, witness), (0x81, challenge)])
        answer, sw = self.general_authenticate(0x03, 0x9B, body)
        assert sw == 0x9000
        response = tlv.parse_dict(tlv.parse_one(answer, 0x7C).value)[0x82]
        assert response == tdes_encrypt(key, challenge)


def aes_encrypt(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block
    return encryptor.update(block) + encryptor.finalize()


def aes_decrypt(key: bytes, block: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()  # noqa: S305 - one block
    return decryptor.update(block) + decryptor.finalize()


def tdes_encrypt(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(TripleDES(key), modes.ECB()).encryptor()  # noqa: S305 - one block
    return encryptor.update(block) + encryptor.finalize()


def tdes_decrypt(key: bytes, block: bytes) -> bytes:
    decryptor = Cipher(TripleDES(key), modes.ECB()).decryptor()  # noqa: S305 - one block
    return decryptor.update(block) + decryptor.finalize()


def public_key_from_generate(answer: bytes, curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey:
    template = tlv.parse_one(answer, 0x7F49)
    point = tlv.parse_dict(template.value)[0x86]
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


def signature_from(answer: bytes) -> bytes:
    return tlv.parse_dict(tlv.parse_one(answer, 0x7C).value)[0x82]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "piv.json"


@pytest.fixture
def applet(state_path: Path) -> PivApplet:
    return new_card_state(state_path)


@pytest.fixture
def card(applet: PivApplet) -> SimulatedCard:
    simulated = make_card(applet, strict=True)
    simulated.power_on()
    return simulated


@pytest.fixture
def term(card: SimulatedCard) -> Terminal:
    terminal = Terminal(card)
    terminal.select()
    return terminal


@pytest.fixture
def admin(term: Terminal) -> Terminal:
    """A selected card, authenticated with the default management key."""
    term.authenticate()
    return term


# --- SELECT ------------------------------------------------------------------------------------


@pytest.mark.parametrize("aid", [RID, FULL_AID], ids=["rid", "full-aid"])
def test_select_answers_application_property_template_for_rid_and_full_aid(
    card: SimulatedCard, aid: bytes
) -> None:
    raw = card.transmit(b"\x00\xa4\x04\x00" + bytes((len(aid),)) + aid + b"\x00")

    assert raw[-2:] == b"\x90\x00"
    template = tlv.parse_one(raw[:-2], 0x61)
    children = template.children()
    assert [item.tag for item in children] == [0x4F, 0x79, 0x50, 0xAC]
    fields = {item.tag: item.value for item in children}
    assert fields[0x4F] == PIX
    assert fields[0x79] == b"\x4f\x05" + RID
    assert fields[0x50].decode("utf-8")
    algorithms = tlv.parse_all(fields[0xAC])
    assert algorithms[-1] == tlv.Tlv(0x06, b"")
    assert fields[0xAC].endswith(b"\x06\x00")
    advertised = {item.value for item in algorithms[:-1]}
    assert all(item.tag == 0x80 for item in algorithms[:-1])
    assert {b"\x03", b"\x11", b"\x14"} <= advertised


def test_select_answers_same_template_for_rid_and_full_aid(card: SimulatedCard) -> None:
    by_rid = card.transmit(b"\x00\xa4\x04\x00\x05" + RID + b"\x00")
    by_aid = card.transmit(b"\x00\xa4\x04\x00\x0b" + FULL_AID + b"\x00")

    assert by_rid == by_aid


@pytest.mark.parametrize(
    "aid",
    [
        bytes.fromhex("A000000309"),
        bytes.fromhex("A000000308000010000200"),
        bytes.fromhex("A0000000031010"),
    ],
    ids=["other-rid", "other-pix", "payment"],
)
def test_select_answers_6a82_for_unknown_aid(card: SimulatedCard, aid: bytes) -> None:
    raw = card.transmit(b"\x00\xa4\x04\x00" + bytes((len(aid),)) + aid + b"\x00")

    assert raw == b"\x6a\x82"


def test_commands_answer_6d00_before_select(card: SimulatedCard) -> None:
    assert card.transmit(bytes.fromhex("00CB3FFF055C035FC10200")) == b"\x6d\x00"


# --- GET DATA ----------------------------------------------------------------------------------


def test_get_data_returns_chuid_in_tag_53(term: Terminal, applet: PivApplet) -> None:
    answer, sw = term.get_data(ObjectId.CHUID.value)

    assert sw == 0x9000
    outer = tlv.parse_one(answer, 0x53)
    fields = tlv.parse_dict(outer.value)
    assert len(fields[0x30]) == 25  # FASC-N
    assert len(fields[0x34]) == 16  # GUID
    assert len(fields[0x35]) == 8  # expiry YYYYMMDD
    assert fields[0x35].isdigit()
    assert 0xFE in fields
    assert outer.value == applet.state.objects[ObjectId.CHUID.value]


def test_get_data_returns_ccc_in_tag_53(term: Terminal) -> None:
    answer, sw = term.get_data(ObjectId.CCC.value)

    assert sw == 0x9000
    fields = tlv.parse_dict(tlv.parse_one(answer, 0x53).value)
    assert len(fields[0xF0]) == 21  # card identifier
    assert fields[0xF1] == b"\x21"


def test_get_data_returns_discovery_in_tag_7e(term: Terminal) -> None:
    answer, sw = term.get_data(ObjectId.DISCOVERY.value)

    assert sw == 0x9000
    assert answer[0] == 0x7E
    fields = tlv.parse_dict(tlv.parse_one(answer, 0x7E).value)
    assert fields[0x4F] == FULL_AID
    assert len(fields[0x5F2F]) == 2


@pytest.mark.parametrize(
    "tag",
    [ObjectId.KEY_HISTORY.value, ObjectId.CERT_9C.value, ObjectId.CERT_9A.value],
    ids=["key-history", "cert-9c", "cert-9a"],
)
def test_get_data_answers_6a82_for_absent_object(term: Terminal, tag: bytes) -> None:
    assert term.get_data(tag) == (b"", 0x6A82)


def test_get_data_answers_6a86_for_wrong_p1p2(term: Terminal) -> None:
    _, sw = term.send(0xCB, 0x00, 0x00, tlv.encode_tlv(0x5C, ObjectId.CHUID.value), le=256)

    assert sw == 0x6A86


def test_get_data_returns_long_certificate_via_get_response(state_path: Path) -> None:
    applet = new_card_state(state_path, provision=True)
    card = make_card(applet, strict=True)
    card.power_on()
    term = Terminal(card)
    term.select()
    expected = applet.state.objects[ObjectId.CERT_9A.value]
    whole = tlv.encode_tlv(0x53, expected)
    assert len(whole) > 256

    first, sw = term.send(0xCB, 0x3F, 0xFF, tlv.encode_tlv(0x5C, ObjectId.CERT_9A.value), le=256)

    assert len(first) == 256
    assert sw >> 8 == 0x61
    remaining = len(whole) - 256
    assert sw & 0xFF == (remaining if remaining < 256 else 0)
    rest = bytearray()
    while sw >> 8 == 0x61:
        chunk, sw = term.send(0xC0, 0x00, 0x00, le=(sw & 0xFF) or 256)
        rest += chunk
    assert sw == 0x9000
    assert first + bytes(rest) == whole
    fields = tlv.parse_dict(tlv.parse_one(first + bytes(rest), 0x53).value)
    certificate = x509.load_der_x509_certificate(fields[0x70])
    assert fields[0x71] == b"\x00"
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)


def test_get_response_answers_6985_when_nothing_is_pending(term: Terminal) -> None:
    assert term.send(0xC0, 0x00, 0x00, le=256) == (b"", 0x6985)


# --- VERIFY ------------------------------------------------------------------------------------


def test_verify_without_data_answers_63c3_on_fresh_card(term: Terminal) -> None:
    assert term.send(0x20, 0x00, 0x80) == (b"", 0x63C3)


def test_verify_wrong_pin_counts_down_then_blocks(term: Terminal, applet: PivApplet) -> None:
    answers = [term.verify(WRONG_PIN) for _ in range(4)]

    assert answers == [0x63C2, 0x63C1, 0x63C0, 0x6983]
    assert term.verify(PIN) == 0x6983  # blocked: even the right PIN is refused
    assert term.pin_status() == 0x6983
    assert applet.state.pin_tries == 0


def test_verify_right_pin_resets_counter_to_three(term: Terminal, applet: PivApplet) -> None:
    assert term.verify(WRONG_PIN) == 0x63C2
    assert term.verify(WRONG_PIN) == 0x63C1

    assert term.verify(PIN) == 0x9000
    assert term.pin_status() == 0x9000
    assert applet.state.pin_tries == 3
    assert term.send(0x20, 0xFF, 0x80) == (b"", 0x9000)
    assert term.pin_status() == 0x63C3


def test_verify_failure_clears_earlier_verification(term: Terminal) -> None:
    assert term.verify(PIN) == 0x9000

    assert term.verify(WRONG_PIN) == 0x63C2
    assert term.pin_status() == 0x63C2


def test_verify_p1_ff_clears_verification(term: Terminal) -> None:
    assert term.verify(PIN) == 0x9000
    assert term.pin_status() == 0x9000

    assert term.send(0x20, 0xFF, 0x80) == (b"", 0x9000)

    assert term.pin_status() == 0x63C3


@pytest.mark.parametrize(
    "data",
    [b"123456", b"1234567", b"123456\xff\xff\xff", b"1234567890123456"],
    ids=["6", "7", "9", "16"],
)
def test_verify_wrong_length_pin_answers_6a80_without_spending_try(
    term: Terminal, applet: PivApplet, data: bytes
) -> None:
    assert term.verify(data) == 0x6A80

    assert term.pin_status() == 0x63C3
    assert applet.state.pin_tries == 3


def test_verify_unknown_key_reference_answers_6a88(term: Terminal) -> None:
    assert term.send(0x20, 0x00, 0x85, PIN)[1] == 0x6A88


def test_power_cycle_clears_pin_verification(term: Terminal, card: SimulatedCard) -> None:
    assert term.verify(PIN) == 0x9000

    card.power_off()
    card.power_on()
    term.select()

    assert term.pin_status() == 0x63C3


# --- CHANGE REFERENCE DATA and RESET RETRY COUNTER ---------------------------------------------


def test_change_reference_data_changes_pin(term: Terminal) -> None:
    new_pin = b"24681357"

    assert term.send(0x24, 0x00, 0x80, PIN + new_pin) == (b"", 0x9000)

    assert term.verify(PIN) == 0x63C2
    assert term.verify(new_pin) == 0x9000


def test_change_reference_data_wrong_old_pin_spends_try_and_keeps_pin(term: Terminal) -> None:
    assert term.send(0x24, 0x00, 0x80, WRONG_PIN + b"24681357")[1] == 0x63C2

    assert term.verify(b"24681357") == 0x63C1
    assert term.verify(PIN) == 0x9000


def test_change_reference_data_rejects_malformed_new_pin_without_spending_try(
    term: Terminal,
) -> None:
    assert term.send(0x24, 0x00, 0x80, PIN + b"12ab56\xff\xff")[1] == 0x6A80

    assert term.pin_status() == 0x63C3
    assert term.verify(PIN) == 0x9000


def test_change_reference_data_changes_puk(term: Terminal) -> None:
    new_puk = b"11223344"

    assert term.send(0x24, 0x00, 0x81, PUK + new_puk) == (b"", 0x9000)

    assert term.send(0x2C, 0x00, 0x80, PUK + b"999999\xff\xff")[1] == 0x63C2
    assert term.send(0x2C, 0x00, 0x80, new_puk + b"999999\xff\xff")[1] == 0x9000
    assert term.verify(b"999999\xff\xff") == 0x9000


def test_change_reference_data_accepts_any_8_byte_puk(term: Terminal) -> None:
    """SP 800-73-4 part 2, 2.4.3: the PUK is 8 bytes and each byte may take any of the 256
    values (only the PIN is restricted to digits padded with FF)."""
    new_puk = b"Pk-7!\x00\x80z"

    assert term.send(0x24, 0x00, 0x81, PUK + new_puk) == (b"", 0x9000)

    assert term.send(0x2C, 0x00, 0x80, new_puk + b"999999\xff\xff") == (b"", 0x9000)
    assert term.verify(b"999999\xff\xff") == 0x9000


def test_reset_retry_counter_with_puk_unblocks_pin(term: Terminal, applet: PivApplet) -> None:
    for _ in range(3):
        term.verify(WRONG_PIN)
    assert term.pin_status() == 0x6983

    assert term.send(0x2C, 0x00, 0x80, PUK + b"13572468") == (b"", 0x9000)

    assert term.pin_status() == 0x63C3
    assert applet.state.pin_tries == 3
    assert term.verify(PIN) == 0x63C2  # the old PIN is gone
    assert term.verify(b"13572468") == 0x9000


def test_reset_retry_counter_wrong_puk_three_times_blocks_for_good(
    term: Terminal, applet: PivApplet
) -> None:
    answers = [term.send(0x2C, 0x00, 0x80, WRONG_PUK + b"13572468")[1] for _ in range(3)]

    assert answers == [0x63C2, 0x63C1, 0x63C0]
    assert term.send(0x2C, 0x00, 0x80, PUK + b"13572468")[1] == 0x6983
    assert term.send(0x2C, 0x00, 0x80, PUK + b"13572468")[1] == 0x6983
    assert term.send(0x24, 0x00, 0x81, PUK + b"11223344")[1] == 0x6983
    assert applet.state.puk_tries == 0
    assert term.verify(PIN) == 0x9000  # the PIN itself still works


# --- GENERAL AUTHENTICATE with the management key ----------------------------------------------


def test_general_authenticate_mutual_auth_with_default_key(term: Terminal) -> None:
    key = DEFAULT_MANAGEMENT_KEY

    answer, sw = term.general_authenticate(0x03, 0x9B, b"\x80\x00")

    assert sw == 0x9000
    assert answer[:4] == b"\x7c\x0a\x80\x08"
    witness = tdes_decrypt(key, answer[4:])
    challenge = secrets.token_bytes(8)
    answer, sw = term.general_authenticate(
        0x03, 0x9B, b"\x80\x08" + witness + b"\x81\x08" + challenge
    )
    assert sw == 0x9000
    assert answer == b"\x7c\x0a\x82\x08" + tdes_encrypt(key, challenge)
    # Authenticated: PUT DATA is now allowed.
    assert term.put_data(ObjectId.PRINTED_INFORMATION.value, b"\x01\x01A") == 0x9000


def test_general_authenticate_single_challenge_response(term: Terminal) -> None:
    answer, sw = term.general_authenticate(0x03, 0x9B, b"\x81\x00")

    assert sw == 0x9000
    assert answer[:4] == b"\x7c\x0a\x81\x08"
    challenge = answer[4:]
    response = tdes_encrypt(DEFAULT_MANAGEMENT_KEY, challenge)
    assert term.general_authenticate(0x03, 0x9B, b"\x82\x08" + response) == (b"", 0x9000)
    assert term.generate(0x9A)[1] == 0x9000


def test_general_authenticate_wrong_response_answers_6982(term: Terminal) -> None:
    answer, _ = term.general_authenticate(0x03, 0x9B, b"\x81\x00")
    wrong = tdes_encrypt(bytes(24), answer[4:])

    assert term.general_authenticate(0x03, 0x9B, b"\x82\x08" + wrong) == (b"", 0x6982)
    assert term.generate(0x9A)[1] == 0x6982


def test_general_authenticate_wrong_witness_answers_6982(term: Terminal) -> None:
    answer, _ = term.general_authenticate(0x03, 0x9B, b"\x80\x00")
    witness = bytearray(tdes_decrypt(DEFAULT_MANAGEMENT_KEY, answer[4:]))
    witness[0] ^= 0x01

    result = term.general_authenticate(
        0x03, 0x9B, b"\x80\x08" + bytes(witness) + b"\x81\x08" + secrets.token_bytes(8)
    )

    assert result == (b"", 0x6982)
    assert term.put_data(ObjectId.PRINTED_INFORMATION.value, b"\x01\x01A") == 0x6982


def test_general_authenticate_witness_cannot_be_replayed(term: Terminal) -> None:
    answer, _ = term.general_authenticate(0x03, 0x9B, b"\x80\x00")
    witness = tdes_decrypt(DEFAULT_MANAGEMENT_KEY, answer[4:])
    body = b"\x80\x08" + witness + b"\x81\x08" + secrets.token_bytes(8)
    assert term.general_authenticate(0x03, 0x9B, body)[1] == 0x9000

    _, sw = term.general_authenticate(0x03, 0x9B, body)

    assert sw != 0x9000
    assert term.generate(0x9A)[1] == 0x6982


def test_general_authenticate_wrong_algorithm_answers_6a86(term: Terminal) -> None:
    assert term.general_authenticate(0x08, 0x9B, b"\x80\x00") == (b"", 0x6A86)


def test_general_authenticate_malformed_template_answers_6a80(term: Terminal) -> None:
    assert term.send(0x87, 0x03, 0x9B, b"\x7c\x05\x80\x00", le=256) == (b"", 0x6A80)


# --- SET MANAGEMENT KEY (vendor INS FF) --------------------------------------------------------

AES192_KEY = bytes(range(0x40, 0x58))


def test_set_management_key_answers_6982_without_management_auth(
    term: Terminal, applet: PivApplet
) -> None:
    data = bytes((0x0A, 0x9B, 24)) + AES192_KEY

    assert term.send(0xFF, 0xFF, 0xFF, data) == (b"", 0x6982)
    assert applet.state.management_key == DEFAULT_MANAGEMENT_KEY


def test_set_management_key_to_aes192_then_mutual_auth_needs_new_key(
    admin: Terminal, applet: PivApplet
) -> None:
    assert admin.send(0xFF, 0xFF, 0xFF, bytes((0x0A, 0x9B, 24)) + AES192_KEY) == (b"", 0x9000)

    # The old 3DES key no longer works: the card now expects algorithm 0A.
    assert admin.general_authenticate(0x03, 0x9B, b"\x80\x00") == (b"", 0x6A86)
    answer, sw = admin.general_authenticate(0x0A, 0x9B, b"\x80\x00")
    assert sw == 0x9000
    assert answer[:4] == b"\x7c\x12\x80\x10"  # AES: 16-byte witness
    witness = aes_decrypt(AES192_KEY, answer[4:])
    challenge = secrets.token_bytes(16)
    answer, sw = admin.general_authenticate(
        0x0A, 0x9B, b"\x80\x10" + witness + b"\x81\x10" + challenge
    )
    assert sw == 0x9000
    assert answer == b"\x7c\x12\x82\x10" + aes_encrypt(AES192_KEY, challenge)
    assert admin.generate(0x9A)[1] == 0x9000
    assert applet.state.management_key == AES192_KEY


@pytest.mark.parametrize(
    "data",
    [
        bytes((0x0A, 0x9B, 16)) + AES192_KEY[:16],  # length does not fit AES-192
        bytes((0x0A, 0x9B, 24)) + AES192_KEY[:20],  # length byte disagrees with the data
        bytes((0x0A, 0x9A, 24)) + AES192_KEY,  # not the management key reference
        bytes((0x11, 0x9B, 24)) + AES192_KEY,  # not a symmetric algorithm
        b"\x0a\x9b",
    ],
    ids=["short-key", "truncated", "wrong-ref", "ec-alg", "too-short"],
)
def test_set_management_key_rejects_malformed_data(
    admin: Terminal, applet: PivApplet, data: bytes
) -> None:
    assert admin.send(0xFF, 0xFF, 0xFF, data) == (b"", 0x6A80)
    assert applet.state.management_key == DEFAULT_MANAGEMENT_KEY


# --- GENERATE and PUT DATA need the management key ---------------------------------------------


def test_generate_answers_6982_without_management_auth(term: Terminal, applet: PivApplet) -> None:
    assert term.generate(0x9A) == (b"", 0x6982)
    assert applet.state.keys == {}


def test_put_data_answers_6982_without_management_auth(term: Terminal) -> None:
    assert term.put_data(ObjectId.PRINTED_INFORMATION.value, b"\x01\x01A") == 0x6982
    assert term.get_data(ObjectId.PRINTED_INFORMATION.value)[1] == 0x6A82


@pytest.mark.parametrize(("alg", "curve"), [(0x11, ec.SECP256R1()), (0x14, ec.SECP384R1())])
def test_generate_returns_public_point_after_management_auth(
    admin: Terminal, applet: PivApplet, alg: int, curve: ec.EllipticCurve
) -> None:
    answer, sw = admin.generate(0x9A, alg)

    assert sw == 0x9000
    point = tlv.parse_dict(tlv.parse_one(answer, 0x7F49).value)[0x86]
    assert len(point) == 1 + 2 * curve.key_size // 8
    assert point[0] == 0x04
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    assert applet.state.keys[0x9A]["alg"] == alg
    assert isinstance(public_key.curve, type(curve))


def test_generate_rejects_unsupported_algorithm(admin: Terminal) -> None:
    assert admin.generate(0x9A, alg=0x07) == (b"", 0x6A80)


def test_put_data_then_get_data_returns_object(admin: Terminal) -> None:
    content = b"\x01\x08Jane Doe"

    assert admin.put_data(ObjectId.PRINTED_INFORMATION.value, content) == 0x9000

    # Printed information needs the PIN to read.
    assert admin.get_data(ObjectId.PRINTED_INFORMATION.value) == (b"", 0x6982)
    assert admin.verify(PIN) == 0x9000
    assert admin.get_data(ObjectId.PRINTED_INFORMATION.value) == (
        tlv.encode_tlv(0x53, content),
        0x9000,
    )


def test_put_data_with_empty_content_deletes_object(admin: Terminal) -> None:
    tag = ObjectId.KEY_HISTORY.value
    assert admin.put_data(tag, b"\xc1\x01\x00\xc2\x01\x00") == 0x9000
    assert admin.get_data(tag)[1] == 0x9000

    assert admin.put_data(tag, b"") == 0x9000

    assert admin.get_data(tag) == (b"", 0x6A82)


def test_put_data_rejects_unknown_tag(admin: Terminal) -> None:
    assert admin.put_data(bytes.fromhex("5FC1FF"), b"\x01\x01A") == 0x6A80


# --- PIN policies of private keys --------------------------------------------------------------


def test_slot_9a_pin_once_signs_repeatedly_after_one_verify(admin: Terminal) -> None:
    answer, _ = admin.generate(0x9A)
    public_key = public_key_from_generate(answer, ec.SECP256R1())
    digest = sha256(b"to be signed")
    assert admin.sign(0x9A, digest) == (b"", 0x6982)

    assert admin.verify(PIN) == 0x9000
    for _ in range(3):
        answer, sw = admin.sign(0x9A, digest)
        assert sw == 0x9000
        public_key.verify(signature_from(answer), digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_slot_9c_pin_always_needs_verify_before_every_signature(admin: Terminal) -> None:
    answer, _ = admin.generate(0x9C)
    public_key = public_key_from_generate(answer, ec.SECP256R1())
    digest = sha256(b"contract")
    assert admin.sign(0x9C, digest) == (b"", 0x6982)

    assert admin.verify(PIN) == 0x9000
    answer, sw = admin.sign(0x9C, digest)
    assert sw == 0x9000
    public_key.verify(signature_from(answer), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert admin.sign(0x9C, digest) == (b"", 0x6982)
    assert admin.pin_status() == 0x9000  # still verified, just not fresh

    assert admin.verify(PIN) == 0x9000
    assert admin.sign(0x9C, digest)[1] == 0x9000


def test_slot_9e_pin_never_signs_without_pin(admin: Terminal) -> None:
    answer, _ = admin.generate(0x9E)
    public_key = public_key_from_generate(answer, ec.SECP256R1())
    digest = sha256(b"door")

    answer, sw = admin.sign(0x9E, digest)

    assert sw == 0x9000
    assert admin.pin_status() == 0x63C3
    public_key.verify(signature_from(answer), digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_generate_pin_policy_tag_overrides_slot_default(admin: Terminal) -> None:
    assert admin.generate(0x9E, policy=0x03)[1] == 0x9000
    digest = sha256(b"x")

    assert admin.sign(0x9E, digest) == (b"", 0x6982)
    assert admin.verify(PIN) == 0x9000
    assert admin.sign(0x9E, digest)[1] == 0x9000
    assert admin.sign(0x9E, digest) == (b"", 0x6982)


def test_sign_p384_signature_verifies(admin: Terminal) -> None:
    answer, _ = admin.generate(0x9A, alg=0x14)
    public_key = public_key_from_generate(answer, ec.SECP384R1())
    message = b"a message for P-384"
    digest = hashlib.sha384(message).digest()
    assert admin.verify(PIN) == 0x9000

    answer, sw = admin.sign(0x9A, digest, alg=0x14)

    assert sw == 0x9000
    signature = signature_from(answer)
    public_key.verify(signature, message, ec.ECDSA(hashes.SHA384()))
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, message + b"!", ec.ECDSA(hashes.SHA384()))


def test_sign_with_wrong_algorithm_answers_6a86(admin: Terminal) -> None:
    admin.generate(0x9A, alg=0x14)
    assert admin.verify(PIN) == 0x9000

    assert admin.sign(0x9A, sha256(b"x"), alg=0x11) == (b"", 0x6A86)


def test_sign_in_empty_slot_answers_6a88(term: Terminal) -> None:
    assert term.verify(PIN) == 0x9000

    assert term.sign(0x9A, sha256(b"x")) == (b"", 0x6A88)


def test_ecdh_in_9d_matches_host_side_shared_secret(admin: Terminal) -> None:
    answer, _ = admin.generate(0x9D)
    card_public = public_key_from_generate(answer, ec.SECP256R1())
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_point = peer.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert admin.verify(PIN) == 0x9000

    answer, sw = admin.general_authenticate(
        0x11, 0x9D, tlv.encode_all([(0x82, b""), (0x85, peer_point)])
    )

    assert sw == 0x9000
    assert signature_from(answer) == peer.exchange(ec.ECDH(), card_public)


def test_ecdh_with_point_off_curve_answers_6a80(admin: Terminal) -> None:
    admin.generate(0x9D)
    assert admin.verify(PIN) == 0x9000
    bogus = b"\x04" + bytes(31) + b"\x01" + bytes(31) + b"\x01"

    answer = admin.general_authenticate(0x11, 0x9D, tlv.encode_all([(0x82, b""), (0x85, bogus)]))

    assert answer == (b"", 0x6A80)


# --- vendor and unknown instructions -----------------------------------------------------------


def test_get_version_answers_three_bytes(term: Terminal) -> None:
    version, sw = term.send(0xFD, 0x00, 0x00, le=256)

    assert sw == 0x9000
    assert len(version) == 3


@pytest.mark.parametrize("ins", [0x0E, 0xB0, 0xD6, 0xE2, 0x01, 0xFE])
def test_unsupported_ins_answers_6d00(term: Terminal, ins: int) -> None:
    assert term.send(ins, 0x00, 0x00) == (b"", 0x6D00)


def test_unsupported_cla_answers_6e00(term: Terminal) -> None:
    assert term.raw(bytes.fromhex("80CB3FFF055C035FC10200")) == b"\x6e\x00"


# --- command chaining --------------------------------------------------------------------------


def large_certificate_object(target: int = 1200) -> bytes:
    """A real certificate object of about ``target`` bytes (SAN names make it grow)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chaining test")])
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = []
    der = b""
    while len(der) < target - 40:
        names.append(x509.DNSName(f"host{len(names):04d}.example.org"))
        der = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
    return certificate_object(der)


def test_put_data_with_command_chaining_stores_large_certificate(
    admin: Terminal, applet: PivApplet
) -> None:
    content = large_certificate_object()
    assert 1150 <= len(content) <= 1300
    data = tlv.encode_tlv(0x5C, ObjectId.CERT_9C.value) + tlv.encode_tlv(0x53, content)
    pieces = [data[i : i + 255] for i in range(0, len(data), 255)]
    assert len(pieces) >= 5

    for piece in pieces[:-1]:
        raw = admin.raw(b"\x10\xdb\x3f\xff" + bytes((len(piece),)) + piece)
        assert raw == b"\x90\x00"
        assert ObjectId.CERT_9C.value not in applet.state.objects
    raw = admin.raw(b"\x00\xdb\x3f\xff" + bytes((len(pieces[-1]),)) + pieces[-1])

    assert raw == b"\x90\x00"
    assert applet.state.objects[ObjectId.CERT_9C.value] == content
    assert admin.get_data(ObjectId.CERT_9C.value) == (tlv.encode_tlv(0x53, content), 0x9000)


def test_chain_interrupted_by_other_command_is_abandoned(
    admin: Terminal, applet: PivApplet
) -> None:
    content = large_certificate_object(600)
    data = tlv.encode_tlv(0x5C, ObjectId.CERT_9C.value) + tlv.encode_tlv(0x53, content)
    assert admin.send(0xDB, 0x3F, 0xFF, data[:255], cla=0x10)[1] == 0x9000

    assert admin.get_data(ObjectId.CHUID.value)[1] == 0x9000
    # The tail alone is not a valid PUT DATA.
    assert admin.send(0xDB, 0x3F, 0xFF, data[255:510])[1] != 0x9000

    assert ObjectId.CERT_9C.value not in applet.state.objects


def test_chuid_guid_is_the_card_serial(term: Terminal, applet: PivApplet) -> None:
    answer, _ = term.get_data(ObjectId.CHUID.value)
    guid = tlv.parse_dict(tlv.parse_one(answer, 0x53).value)[0x34]

    assert applet.serial_text() == guid.hex()
    assert Chuid.decode(applet.state.objects[ObjectId.CHUID.value]).guid == guid
