"""The simulated PIV applet (NIST SP 800-73-4 part 2), byte-exact on the wire.

Private keys are created inside the applet and never leave it: no command returns one.
Retry counters are decremented and saved *before* a PIN is compared, so pulling the card
in the middle of a VERIFY cannot give an attacker a free guess.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from devices.protocol import tlv
from devices.protocol.apdu import CommandApdu
from devices.protocol.errors import MalformedTlv
from devices.protocol.piv import (
    AID,
    DEFAULT_MANAGEMENT_KEY,
    DEFAULT_PIN,
    DEFAULT_PIN_POLICY,
    DEFAULT_PUK,
    PIN_TRIES,
    PIX,
    PUK_TRIES,
    TAG_CHALLENGE,
    TAG_DATA,
    TAG_DYN_AUTH,
    TAG_EC_POINT,
    TAG_EXPONENTIATION,
    TAG_PUBLIC_KEY,
    TAG_RESPONSE,
    TAG_TAG_LIST,
    TAG_WITNESS,
    Algorithm,
    Chuid,
    Ins,
    KeyRef,
    ObjectId,
    PinPolicy,
    Slot,
    certificate_object,
    pad_pin,
    unpad_pin,
)
from devices.protocol.sw import SW, retries_remaining
from firmware_sim import state as state_store
from firmware_sim.tokens.card import CardError, SimulatedCard, build_atr

KIND = "piv"
VERSION = (1, 0, 0)
LABEL = b"akkreditiv PIV"
ATR = build_atr(b"\x80\x5a" + b"akkreditiv"[:10])
MAX_OBJECT_SIZE = 3052  # as much as common PIV tokens store per object
# FASC-N of a non-federal issuer (agency code 9999), the form PIV-compatible cards use.
DEFAULT_FASCN = bytes.fromhex("d4e739da739ced39ce739d836858210842108421c84210c3eb")

_CURVES: dict[Algorithm, ec.EllipticCurve] = {
    Algorithm.ECC_P256: ec.SECP256R1(),
    Algorithm.ECC_P384: ec.SECP384R1(),
}
_PREHASH: dict[Algorithm, hashes.SHA256 | hashes.SHA384] = {
    Algorithm.ECC_P256: hashes.SHA256(),
    Algorithm.ECC_P384: hashes.SHA384(),
}
_READ_NEEDS_PIN = {ObjectId.PRINTED_INFORMATION, ObjectId.FACIAL_IMAGE, ObjectId.FINGERPRINTS}
_WRITABLE_TAGS = {member.value for member in ObjectId} | {
    bytes((0x5F, 0xC1, n))
    for n in range(0x0D, 0x21)  # retired key certificates
}


def _hash_secret(salt: bytes, secret: bytes) -> str:
    return hmac.new(salt, secret, hashlib.sha256).hexdigest()


@dataclass
class PivState:
    """What the card keeps in non-volatile memory."""

    pin_hash: str
    puk_hash: str
    salt: bytes
    pin_tries: int = PIN_TRIES
    puk_tries: int = PUK_TRIES
    management_key: bytes = DEFAULT_MANAGEMENT_KEY
    management_alg: Algorithm = Algorithm.TDES
    keys: dict[int, dict[str, Any]] = field(default_factory=dict)
    objects: dict[bytes, bytes] = field(default_factory=dict)
    serial: int = 0

    @classmethod
    def new(cls, pin: str = DEFAULT_PIN, puk: str = DEFAULT_PUK) -> PivState:
        salt = secrets.token_bytes(16)
        state = cls(
            pin_hash=_hash_secret(salt, pad_pin(pin)),
            puk_hash=_hash_secret(salt, pad_pin(puk)),
            salt=salt,
            serial=secrets.randbelow(90_000_000) + 10_000_000,
        )
        expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(days=5 * 365)).strftime("%Y%m%d")
        chuid = Chuid(fascn=DEFAULT_FASCN, guid=secrets.token_bytes(16), expiry=expiry)
        state.objects[ObjectId.CHUID.value] = chuid.encode()
        state.objects[ObjectId.CCC.value] = tlv.encode_all(
            [
                (0xF0, bytes.fromhex("a000000116ff02") + secrets.token_bytes(14)),
                (0xF1, b"\x21"),
                (0xF2, b"\x21"),
                (0xF3, b""),
                (0xF4, b"\x00"),
                (0xF5, b"\x10"),
                (0xF6, b""),
                (0xF7, b""),
                (0xFA, b""),
                (0xFB, b""),
                (0xFC, b""),
                (0xFD, b""),
                (0xFE, b""),
            ]
        )
        # Discovery object: the PIV AID and a PIN usage policy saying the PIV PIN applies.
        state.objects[ObjectId.DISCOVERY.value] = tlv.encode_all(
            [(0x4F, AID), (0x5F2F, b"\x40\x00")]
        )
        return state

    def to_json(self) -> dict[str, Any]:
        return {
            "pin_hash": self.pin_hash,
            "puk_hash": self.puk_hash,
            "salt": self.salt.hex(),
            "pin_tries": self.pin_tries,
            "puk_tries": self.puk_tries,
            "management_key": self.management_key.hex(),
            "management_alg": int(self.management_alg),
            "keys": {f"{slot:02x}": key for slot, key in self.keys.items()},
            "objects": {tag.hex(): value.hex() for tag, value in self.objects.items()},
            "serial": self.serial,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PivState:
        try:
            return cls(
                pin_hash=str(data["pin_hash"]),
                puk_hash=str(data["puk_hash"]),
                salt=bytes.fromhex(data["salt"]),
                pin_tries=int(data["pin_tries"]),
                puk_tries=int(data["puk_tries"]),
                management_key=bytes.fromhex(data["management_key"]),
                management_alg=Algorithm(int(data["management_alg"])),
                keys={int(slot, 16): dict(key) for slot, key in data["keys"].items()},
                objects={
                    bytes.fromhex(tag): bytes.fromhex(value)
                    for tag, value in data["objects"].items()
                },
                serial=int(data["serial"]),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise state_store.StateError(f"PIV state is damaged: {exc!r}") from exc

    def __post_init__(self) -> None:
        """Refuse values no card could hold, so a damaged file fails at load, not mid-command."""
        problems = []
        if not 0 <= self.pin_tries <= PIN_TRIES:
            problems.append(f"pin_tries {self.pin_tries} outside 0..{PIN_TRIES}")
        if not 0 <= self.puk_tries <= PUK_TRIES:
            problems.append(f"puk_tries {self.puk_tries} outside 0..{PUK_TRIES}")
        if not self.management_alg.is_symmetric:
            problems.append(f"management key algorithm {self.management_alg.name}")
        elif len(self.management_key) != self.management_alg.key_length:
            problems.append(
                f"management key of {len(self.management_key)} bytes for {self.management_alg.name}"
            )
        if len(self.salt) < 16:
            problems.append("salt shorter than 16 bytes")
        for slot, entry in self.keys.items():
            try:
                Slot(slot)
                if not Algorithm(entry["alg"]).is_ec:
                    problems.append(f"key {slot:02x} is not an EC key")
                PinPolicy(entry["pin_policy"])
                bytes.fromhex(entry["pkcs8"])
            except (KeyError, ValueError, TypeError):
                problems.append(f"key entry {slot:02x} is damaged")
        if problems:
            raise state_store.StateError("PIV state is damaged: " + "; ".join(problems))


def _block_encrypt(alg: Algorithm, key: bytes, block: bytes) -> bytes:
    cipher_alg = TripleDES(key) if alg is Algorithm.TDES else algorithms.AES(key)
    encryptor = Cipher(cipher_alg, modes.ECB()).encryptor()  # noqa: S305 - one block, per SP 800-73
    return encryptor.update(block) + encryptor.finalize()


class PivApplet:
    """The PIV card application. ``persist`` is called with the new state after every change
    to non-volatile memory, before the card answers."""

    aid = AID

    def __init__(self, state: PivState, persist: Callable[[PivState], None]) -> None:
        self.state = state
        self._persist = persist
        self.power_reset()

    # --- volatile state ------------------------------------------------------------------

    def power_reset(self) -> None:
        self.pin_verified = False
        self.pin_fresh = False  # verified since the last PIN-always operation
        self.management_authenticated = False
        self._pending: tuple[str, bytes] | None = None

    def deselect(self) -> None:
        self.power_reset()

    def select(self, apdu: CommandApdu) -> bytes:
        algorithms_template = tlv.encode_all(
            [(0x80, bytes((alg,))) for alg in (0x03, 0x08, 0x0A, 0x0C, 0x11, 0x14)] + [(0x06, b"")]
        )
        return tlv.encode_tlv(
            0x61,
            tlv.encode_all(
                [
                    (0x4F, PIX),
                    (0x79, tlv.encode_tlv(0x4F, AID[:5])),
                    (0x50, LABEL),
                    (0xAC, algorithms_template),
                ]
            ),
        )

    def _save(self) -> None:
        self._persist(self.state)

    # --- dispatch ------------------------------------------------------------------------

    def process(self, apdu: CommandApdu) -> tuple[bytes, int]:
        handlers: dict[int, Callable[[CommandApdu], tuple[bytes, int]]] = {
            Ins.GET_DATA: self._get_data,
            Ins.VERIFY: self._verify,
            Ins.CHANGE_REFERENCE_DATA: self._change_reference_data,
            Ins.RESET_RETRY_COUNTER: self._reset_retry_counter,
            Ins.GENERAL_AUTHENTICATE: self._general_authenticate,
            Ins.GENERATE_ASYMMETRIC_KEY_PAIR: self._generate,
            Ins.PUT_DATA: self._put_data,
            Ins.GET_CHALLENGE: self._get_challenge,
            Ins.GET_VERSION: self._get_version,
            Ins.GET_SERIAL: self._get_serial,
            Ins.SET_MANAGEMENT_KEY: self._set_management_key,
        }
        if apdu.cla & 0xF0 not in (0x00, 0x10):
            return b"", SW.CLA_NOT_SUPPORTED
        handler = handlers.get(apdu.ins)
        if handler is None:
            return b"", SW.INS_NOT_SUPPORTED
        try:
            return handler(apdu)
        except MalformedTlv:
            return b"", SW.WRONG_DATA

    # --- data objects --------------------------------------------------------------------

    @staticmethod
    def _object_tag(data: bytes) -> bytes:
        item = tlv.parse_one(data, TAG_TAG_LIST) if data else None
        if item is None or not 1 <= len(item.value) <= 3:
            raise CardError(SW.WRONG_DATA)
        return item.value

    def _get_data(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if (apdu.p1, apdu.p2) != (0x3F, 0xFF):
            return b"", SW.INCORRECT_P1P2
        tag = self._object_tag(apdu.data)
        content = self.state.objects.get(tag)
        if content is None:
            return b"", SW.FILE_NOT_FOUND
        if tag in {o.value for o in _READ_NEEDS_PIN} and not self.pin_verified:
            return b"", SW.SECURITY_STATUS_NOT_SATISFIED
        outer = 0x7E if tag == ObjectId.DISCOVERY.value else TAG_DATA
        return tlv.encode_tlv(outer, content), SW.SUCCESS

    def _put_data(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if (apdu.p1, apdu.p2) != (0x3F, 0xFF):
            return b"", SW.INCORRECT_P1P2
        if not self.management_authenticated:
            return b"", SW.SECURITY_STATUS_NOT_SATISFIED
        items = tlv.parse_all(apdu.data)
        if len(items) != 2 or items[0].tag != TAG_TAG_LIST:
            return b"", SW.WRONG_DATA
        tag = items[0].value
        expected_outer = 0x7E if tag == ObjectId.DISCOVERY.value else TAG_DATA
        if tag not in _WRITABLE_TAGS or items[1].tag != expected_outer:
            return b"", SW.WRONG_DATA
        content = items[1].value
        if len(content) > MAX_OBJECT_SIZE:
            return b"", SW.NOT_ENOUGH_MEMORY
        if content:
            self.state.objects[tag] = content
        else:
            self.state.objects.pop(tag, None)
        self._save()
        return b"", SW.SUCCESS

    # --- PIN and PUK ---------------------------------------------------------------------

    def _check_secret(self, which: str, candidate: bytes) -> int:
        """Compare a padded PIN/PUK, counting the try first. Returns SW.SUCCESS or an error."""
        tries_attr = f"{which}_tries"
        max_tries = PIN_TRIES if which == "pin" else PUK_TRIES
        tries = getattr(self.state, tries_attr)
        if tries <= 0:
            return SW.AUTH_METHOD_BLOCKED
        setattr(self.state, tries_attr, tries - 1)
        self._save()
        expected = getattr(self.state, f"{which}_hash")
        given = _hash_secret(self.state.salt, candidate)
        if hmac.compare_digest(given, expected):
            setattr(self.state, tries_attr, max_tries)
            self._save()
            return SW.SUCCESS
        return retries_remaining(tries - 1)

    def _verify(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.p2 != KeyRef.PIN:
            return b"", SW.REFERENCED_DATA_NOT_FOUND
        if apdu.p1 == 0xFF:
            if apdu.data:
                return b"", SW.WRONG_DATA
            self.pin_verified = self.pin_fresh = False
            return b"", SW.SUCCESS
        if apdu.p1 != 0x00:
            return b"", SW.INCORRECT_P1P2
        if not apdu.data:
            if self.state.pin_tries == 0:
                return b"", SW.AUTH_METHOD_BLOCKED
            if self.pin_verified:
                return b"", SW.SUCCESS
            return b"", retries_remaining(self.state.pin_tries)
        if len(apdu.data) != 8:
            return b"", SW.WRONG_DATA
        sw = self._check_secret("pin", apdu.data)
        self.pin_verified = self.pin_fresh = sw == SW.SUCCESS
        return b"", sw

    def _change_reference_data(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.p1 != 0x00:
            return b"", SW.INCORRECT_P1P2
        if apdu.p2 not in (KeyRef.PIN, KeyRef.PUK):
            return b"", SW.REFERENCED_DATA_NOT_FOUND
        if len(apdu.data) != 16:
            return b"", SW.WRONG_DATA
        which = "pin" if apdu.p2 == KeyRef.PIN else "puk"
        # A new PIN is 6-8 digits padded with FF; a PUK is any 8 bytes (SP 800-73-4 2.4.3).
        new = apdu.data[8:]
        if which == "pin" and unpad_pin(new) is None:
            return b"", SW.WRONG_DATA
        sw = self._check_secret(which, apdu.data[:8])
        if sw != SW.SUCCESS:
            if which == "pin":
                self.pin_verified = self.pin_fresh = False
            return b"", sw
        setattr(self.state, f"{which}_hash", _hash_secret(self.state.salt, new))
        self._save()
        if which == "pin":
            self.pin_verified = self.pin_fresh = True
        return b"", SW.SUCCESS

    def _reset_retry_counter(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.p1 != 0x00 or apdu.p2 != KeyRef.PIN:
            return b"", SW.INCORRECT_P1P2 if apdu.p1 else SW.REFERENCED_DATA_NOT_FOUND
        if len(apdu.data) != 16:
            return b"", SW.WRONG_DATA
        new = apdu.data[8:]
        if unpad_pin(new) is None:
            return b"", SW.WRONG_DATA
        sw = self._check_secret("puk", apdu.data[:8])
        if sw != SW.SUCCESS:
            return b"", sw
        self.state.pin_hash = _hash_secret(self.state.salt, new)
        self.state.pin_tries = PIN_TRIES
        self._save()
        self.pin_verified = self.pin_fresh = False
        return b"", SW.SUCCESS

    # --- GENERAL AUTHENTICATE ------------------------------------------------------------

    def _general_authenticate(self, apdu: CommandApdu) -> tuple[bytes, int]:
        template = tlv.parse_one(apdu.data, TAG_DYN_AUTH)
        fields = tlv.parse_dict(template.value)
        if apdu.p2 == KeyRef.MANAGEMENT:
            return self._management_auth(apdu.p1, fields)
        if apdu.p2 in {slot.value for slot in Slot}:
            return self._private_key_operation(Slot(apdu.p2), apdu.p1, fields)
        return b"", SW.REFERENCED_DATA_NOT_FOUND

    def _management_auth(self, alg: int, fields: dict[int, bytes]) -> tuple[bytes, int]:
        if alg != self.state.management_alg:
            return b"", SW.INCORRECT_P1P2
        algorithm = self.state.management_alg
        key, size = self.state.management_key, algorithm.block_size
        pending, self._pending = self._pending, None
        self.management_authenticated = False

        def encrypt(block: bytes) -> bytes:
            return _block_encrypt(algorithm, key, block)

        if fields == {TAG_WITNESS: b""}:
            witness = secrets.token_bytes(size)
            self._pending = ("witness", witness)
            return tlv.encode_tlv(
                TAG_DYN_AUTH, tlv.encode_tlv(TAG_WITNESS, encrypt(witness))
            ), SW.SUCCESS
        if set(fields) == {TAG_WITNESS, TAG_CHALLENGE} and fields[TAG_CHALLENGE]:
            if pending is None or pending[0] != "witness":
                return b"", SW.CONDITIONS_NOT_SATISFIED
            if len(fields[TAG_CHALLENGE]) != size or len(fields[TAG_WITNESS]) != size:
                return b"", SW.WRONG_DATA
            if not hmac.compare_digest(fields[TAG_WITNESS], pending[1]):
                return b"", SW.SECURITY_STATUS_NOT_SATISFIED
            self.management_authenticated = True
            answer = tlv.encode_tlv(TAG_RESPONSE, encrypt(fields[TAG_CHALLENGE]))
            return tlv.encode_tlv(TAG_DYN_AUTH, answer), SW.SUCCESS
        if fields == {TAG_CHALLENGE: b""}:
            challenge = secrets.token_bytes(size)
            self._pending = ("challenge", challenge)
            return tlv.encode_tlv(
                TAG_DYN_AUTH, tlv.encode_tlv(TAG_CHALLENGE, challenge)
            ), SW.SUCCESS
        if set(fields) == {TAG_RESPONSE} and fields[TAG_RESPONSE]:
            if pending is None or pending[0] != "challenge":
                return b"", SW.CONDITIONS_NOT_SATISFIED
            if not hmac.compare_digest(fields[TAG_RESPONSE], encrypt(pending[1])):
                return b"", SW.SECURITY_STATUS_NOT_SATISFIED
            self.management_authenticated = True
            return b"", SW.SUCCESS
        return b"", SW.WRONG_DATA

    def _private_key(self, slot: Slot) -> tuple[Algorithm, ec.EllipticCurvePrivateKey, PinPolicy]:
        entry = self.state.keys.get(slot.value)
        if entry is None:
            raise CardError(SW.REFERENCED_DATA_NOT_FOUND)
        key = serialization.load_der_private_key(bytes.fromhex(entry["pkcs8"]), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CardError(SW.NO_PRECISE_DIAGNOSIS)
        return Algorithm(entry["alg"]), key, PinPolicy(entry["pin_policy"])

    def _private_key_operation(
        self, slot: Slot, alg: int, fields: dict[int, bytes]
    ) -> tuple[bytes, int]:
        algorithm, key, policy = self._private_key(slot)
        if alg != algorithm:
            return b"", SW.INCORRECT_P1P2
        if policy is PinPolicy.ONCE and not self.pin_verified:
            return b"", SW.SECURITY_STATUS_NOT_SATISFIED
        if policy is PinPolicy.ALWAYS:
            if not self.pin_fresh:
                return b"", SW.SECURITY_STATUS_NOT_SATISFIED
            self.pin_fresh = False
        size = algorithm.field_bytes
        if fields.keys() == {TAG_RESPONSE, TAG_CHALLENGE} and fields[TAG_RESPONSE] == b"":
            digest = fields[TAG_CHALLENGE]
            if not 1 <= len(digest) <= size:
                return b"", SW.WRONG_DATA
            digest = digest.rjust(size, b"\x00")
            signature = key.sign(digest, ec.ECDSA(Prehashed(_PREHASH[algorithm])))
            return tlv.encode_tlv(TAG_DYN_AUTH, tlv.encode_tlv(TAG_RESPONSE, signature)), SW.SUCCESS
        if fields.keys() == {TAG_RESPONSE, TAG_EXPONENTIATION} and fields[TAG_RESPONSE] == b"":
            try:
                peer = ec.EllipticCurvePublicKey.from_encoded_point(
                    _CURVES[algorithm], fields[TAG_EXPONENTIATION]
                )
            except ValueError:
                return b"", SW.WRONG_DATA
            shared = key.exchange(ec.ECDH(), peer)
            return tlv.encode_tlv(TAG_DYN_AUTH, tlv.encode_tlv(TAG_RESPONSE, shared)), SW.SUCCESS
        return b"", SW.WRONG_DATA

    # --- key generation ------------------------------------------------------------------

    def _generate(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.p1 != 0x00 or apdu.p2 not in {slot.value for slot in Slot}:
            return b"", SW.INCORRECT_P1P2
        if not self.management_authenticated:
            return b"", SW.SECURITY_STATUS_NOT_SATISFIED
        control = tlv.parse_dict(tlv.parse_one(apdu.data, 0xAC).value)
        raw_alg = control.get(0x80, b"")
        if len(raw_alg) != 1 or raw_alg[0] not in (Algorithm.ECC_P256, Algorithm.ECC_P384):
            return b"", SW.WRONG_DATA
        slot = Slot(apdu.p2)
        policy = DEFAULT_PIN_POLICY[slot]
        raw_policy = control.get(0xAA)
        if raw_policy is not None:
            if len(raw_policy) != 1 or raw_policy[0] not in {p.value for p in PinPolicy}:
                return b"", SW.WRONG_DATA
            if raw_policy[0] != PinPolicy.DEFAULT:
                policy = PinPolicy(raw_policy[0])
        point = self.create_key(slot, Algorithm(raw_alg[0]), policy)
        return tlv.encode_tlv(TAG_PUBLIC_KEY, tlv.encode_tlv(TAG_EC_POINT, point)), SW.SUCCESS

    def create_key(self, slot: Slot, algorithm: Algorithm, policy: PinPolicy) -> bytes:
        """Make a key pair inside the card; returns the uncompressed public point."""
        key = ec.generate_private_key(_CURVES[algorithm])
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.state.keys[slot.value] = {
            "alg": int(algorithm),
            "pkcs8": pkcs8.hex(),
            "pin_policy": int(policy),
        }
        self._save()
        return key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    # --- vendor and misc ------------------------------------------------------------------

    def _get_challenge(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.p1 or apdu.p2:
            return b"", SW.INCORRECT_P1P2
        return secrets.token_bytes(min(apdu.le or 8, 256)), SW.SUCCESS

    def _set_management_key(self, apdu: CommandApdu) -> tuple[bytes, int]:
        """Data: algorithm, key reference 9B, key length, key (P1 P2 = FF FF)."""
        if (apdu.p1, apdu.p2) != (0xFF, 0xFF):
            return b"", SW.INCORRECT_P1P2
        if not self.management_authenticated:
            return b"", SW.SECURITY_STATUS_NOT_SATISFIED
        data = apdu.data
        if len(data) < 3 or data[1] != KeyRef.MANAGEMENT or len(data) != 3 + data[2]:
            return b"", SW.WRONG_DATA
        try:
            algorithm = Algorithm(data[0])
        except ValueError:
            return b"", SW.WRONG_DATA
        if not algorithm.is_symmetric or data[2] != algorithm.key_length:
            return b"", SW.WRONG_DATA
        self.state.management_key, self.state.management_alg = bytes(data[3:]), algorithm
        self._save()
        return b"", SW.SUCCESS

    def _get_version(self, apdu: CommandApdu) -> tuple[bytes, int]:
        return bytes(VERSION), SW.SUCCESS

    def _get_serial(self, apdu: CommandApdu) -> tuple[bytes, int]:
        return self.state.serial.to_bytes(4, "big"), SW.SUCCESS

    def serial_text(self) -> str:
        """The serial middleware shows for this card: its CHUID GUID."""
        return Chuid.decode(self.state.objects[ObjectId.CHUID.value]).serial

    # --- factory provisioning ---------------------------------------------------------------

    def provision(
        self, slot: Slot, subject: str, algorithm: Algorithm = Algorithm.ECC_P256
    ) -> x509.Certificate:
        """Factory step: a key in ``slot`` and a self-signed certificate for it, so the card
        is usable at once. Runs inside the card, as personalisation does."""
        self.create_key(slot, algorithm, DEFAULT_PIN_POLICY[slot])
        _, key, _ = self._private_key(slot)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, subject),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, str(self.state.serial)),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3 * 365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=slot is Slot.SIGNATURE,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=slot is Slot.KEY_MANAGEMENT,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, _PREHASH[algorithm])
        )
        self.state.objects[slot.object_id.value] = certificate_object(
            certificate.public_bytes(serialization.Encoding.DER)
        )
        self._save()
        return certificate


def file_persister(path: Path) -> Callable[[PivState], None]:
    def persist(state: PivState) -> None:
        state_store.save(path, KIND, state.to_json())

    return persist


def load_applet(path: Path) -> PivApplet:
    return PivApplet(PivState.from_json(state_store.load(path, KIND)), file_persister(path))


def new_card_state(
    path: Path,
    *,
    pin: str = DEFAULT_PIN,
    puk: str = DEFAULT_PUK,
    provision: bool = False,
    subject: str = "akkreditiv simulated PIV card",
    management_key: bytes = DEFAULT_MANAGEMENT_KEY,
    management_alg: Algorithm = Algorithm.TDES,
) -> PivApplet:
    if path.exists():
        raise state_store.StateError(f"{path} exists already; remove it to make a new card")
    if not management_alg.is_symmetric or len(management_key) != management_alg.key_length:
        raise ValueError(
            f"a {management_alg.name} management key is {management_alg.key_length} bytes"
            if management_alg.is_symmetric
            else "the management key algorithm is 3DES or AES"
        )
    state = PivState.new(pin, puk)
    state.management_key, state.management_alg = management_key, management_alg
    applet = PivApplet(state, file_persister(path))
    applet._save()
    if provision:
        applet.provision(Slot.AUTHENTICATION, subject)
    return applet


def make_card(applet: PivApplet, *, strict: bool = False) -> SimulatedCard:
    return SimulatedCard(atr=ATR, applets=[applet], strict=strict)
