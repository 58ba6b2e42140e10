"""Host-side PIV session (NIST SP 800-73-4): select, read certificates, PIN and PUK handling,
management-key authentication, on-card key generation, certificate writing and signing.

A session works over any ``ApduTransport``: a PC/SC connection in production, the same
connection to a simulated card in tests.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devices.errors import (
    ApduError,
    FileNotFound,
    InvalidPin,
    MalformedTlv,
    PinBlocked,
    ProtocolError,
)
from devices.events import EventSink, event_for_error, ignore
from devices.protocol import tlv
from devices.protocol.apdu import CommandApdu, ResponseApdu
from devices.protocol.piv import (
    AID,
    DEFAULT_MANAGEMENT_KEY,
    TAG_CHALLENGE,
    TAG_DATA,
    TAG_DYN_AUTH,
    TAG_EC_POINT,
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
    certificate_from_object,
    certificate_object,
    pad_pin,
)
from devices.protocol.sw import SW

log = logging.getLogger(__name__)

_CURVES: dict[Algorithm, ec.EllipticCurve] = {
    Algorithm.ECC_P256: ec.SECP256R1(),
    Algorithm.ECC_P384: ec.SECP384R1(),
}


class ApduTransport(Protocol):
    """The seam a session talks through: one command in, one (chained) response out."""

    def transmit(self, apdu: CommandApdu) -> ResponseApdu: ...


class ManagementKeyRejected(ApduError):
    """The card did not accept the management key, or answered with the wrong cryptogram."""

    hint = "check the management key; the default one must be changed on issued cards"


@dataclass(frozen=True)
class ApplicationInfo:
    label: str
    algorithms: tuple[int, ...]


def _block_cipher(alg: Algorithm, key: bytes) -> Cipher[modes.ECB]:
    if alg is Algorithm.TDES:
        return Cipher(TripleDES(key), modes.ECB())  # noqa: S305 - single blocks, SP 800-73
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 - single blocks, SP 800-73


class PivSession:
    """One conversation with a PIV card application."""

    def __init__(self, transport: ApduTransport, *, events: EventSink = ignore) -> None:
        self._transport = transport
        self._events = events

    def _send(self, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
        return self._transport.transmit(CommandApdu(0x00, ins, p1, p2, data, le=le)).check()

    # --- application --------------------------------------------------------------------

    def select(self) -> ApplicationInfo:
        """Select the PIV application; raises ``FileNotFound`` if the card has none."""
        answer = self._send(0xA4, 0x04, 0x00, AID[:5], le=256)
        try:
            template = tlv.parse_one(answer, 0x61)
            fields = {item.tag: item.value for item in template.children()}
            if fields.get(0x4F, AID[5:]) != AID[5:] and fields.get(0x4F) != AID:
                raise ProtocolError("the card answered SELECT with another application", field="4F")
            algs = tuple(
                item.value[0]
                for item in tlv.parse_all(fields.get(0xAC, b""))
                if item.tag == 0x80 and item.value
            )
        except MalformedTlv as exc:
            raise ProtocolError(f"unreadable application template: {exc}", field="61") from exc
        return ApplicationInfo(fields.get(0x50, b"").decode("utf-8", "replace"), algs)

    def version(self) -> tuple[int, ...] | None:
        try:
            return tuple(self._send(Ins.GET_VERSION, 0, 0, le=256))
        except ApduError:
            return None

    # --- data objects -------------------------------------------------------------------

    def get_object(self, object_id: ObjectId) -> bytes:
        """The content of a data object; ``FileNotFound`` when the card does not hold it."""
        tag = object_id.value
        answer = self._send(Ins.GET_DATA, 0x3F, 0xFF, tlv.encode_tlv(TAG_TAG_LIST, tag), le=256)
        outer = 0x7E if object_id is ObjectId.DISCOVERY else TAG_DATA
        return tlv.parse_one(answer, outer).value

    def put_object(self, object_id: ObjectId, content: bytes) -> None:
        """Write a data object (needs management-key authentication)."""
        outer = 0x7E if object_id is ObjectId.DISCOVERY else TAG_DATA
        data = tlv.encode_tlv(TAG_TAG_LIST, object_id.value) + tlv.encode_tlv(outer, content)
        self._send(Ins.PUT_DATA, 0x3F, 0xFF, data)

    def chuid(self) -> Chuid:
        return Chuid.decode(self.get_object(ObjectId.CHUID))

    def certificate(self, slot: Slot) -> x509.Certificate | None:
        try:
            content = self.get_object(slot.object_id)
        except FileNotFound:
            return None
        return x509.load_der_x509_certificate(certificate_from_object(content))

    def put_certificate(self, slot: Slot, certificate: x509.Certificate) -> None:
        der = certificate.public_bytes(serialization.Encoding.DER)
        self.put_object(slot.object_id, certificate_object(der))

    # --- PIN and PUK --------------------------------------------------------------------

    def pin_status(self) -> tuple[bool, int | None]:
        """(verified in this session, tries left), without spending a try. The card does not
        tell the tries left while the PIN is verified, so that is None then."""
        response = self._transport.transmit(CommandApdu(0x00, Ins.VERIFY, 0x00, KeyRef.PIN))
        if response.sw == SW.SUCCESS:
            return True, None
        if response.sw & 0xFFF0 == 0x63C0:
            return False, response.sw & 0x0F
        if response.sw == SW.AUTH_METHOD_BLOCKED:
            return False, 0
        response.check()
        raise ProtocolError(f"unexpected answer {response.sw:04X} to a PIN status query")

    def verify_pin(self, pin: str) -> None:
        """Raises ``InvalidPin(retries_left)`` or ``PinBlocked`` (and says so to the events)."""
        try:
            self._send(Ins.VERIFY, 0x00, KeyRef.PIN, pad_pin(pin))
        except (InvalidPin, PinBlocked) as exc:
            self._events(event_for_error(exc))
            exc.announced = True
            raise

    def change_pin(self, old: str, new: str) -> None:
        self._send(Ins.CHANGE_REFERENCE_DATA, 0x00, KeyRef.PIN, pad_pin(old) + pad_pin(new))

    def change_puk(self, old: str, new: str) -> None:
        self._send(Ins.CHANGE_REFERENCE_DATA, 0x00, KeyRef.PUK, pad_pin(old) + pad_pin(new))

    def unblock_pin(self, puk: str, new_pin: str) -> None:
        """Set a new PIN with the PUK. A wrong PUK raises ``InvalidPin`` (its tries) or
        ``PinBlocked`` when the PUK is blocked too."""
        try:
            self._send(Ins.RESET_RETRY_COUNTER, 0x00, KeyRef.PIN, pad_pin(puk) + pad_pin(new_pin))
        except PinBlocked as exc:
            raise PinBlocked(exc.sw, "the PUK is blocked; the card must be replaced") from exc
        except InvalidPin as exc:
            raise InvalidPin(exc.retries_left, exc.sw) from exc

    # --- management key -----------------------------------------------------------------

    def authenticate(
        self, key: bytes = DEFAULT_MANAGEMENT_KEY, algorithm: Algorithm = Algorithm.TDES
    ) -> None:
        """Mutual authentication with the card management key (witness, then challenge)."""
        if len(key) != algorithm.key_length:
            raise ValueError(f"a {algorithm.name} management key is {algorithm.key_length} bytes")
        cipher = _block_cipher(algorithm, key)
        try:
            answer = self._send(
                Ins.GENERAL_AUTHENTICATE,
                algorithm,
                KeyRef.MANAGEMENT,
                tlv.encode_tlv(TAG_DYN_AUTH, tlv.encode_tlv(TAG_WITNESS, b"")),
                le=256,
            )
        except ApduError as exc:
            if exc.sw == SW.INCORRECT_P1P2:
                raise ManagementKeyRejected(
                    exc.sw, f"the card's management key is not a {algorithm.name} key"
                ) from exc
            raise
        encrypted_witness = tlv.parse_dict(tlv.parse_one(answer, TAG_DYN_AUTH).value).get(
            TAG_WITNESS, b""
        )
        if len(encrypted_witness) != algorithm.block_size:
            raise ProtocolError("the card sent a witness of the wrong size", field="80")
        decryptor = cipher.decryptor()
        witness = decryptor.update(encrypted_witness) + decryptor.finalize()
        challenge = secrets.token_bytes(algorithm.block_size)
        body = tlv.encode_all([(TAG_WITNESS, witness), (TAG_CHALLENGE, challenge)])
        try:
            answer = self._send(
                Ins.GENERAL_AUTHENTICATE,
                algorithm,
                KeyRef.MANAGEMENT,
                tlv.encode_tlv(TAG_DYN_AUTH, body),
                le=256,
            )
        except ApduError as exc:
            raise ManagementKeyRejected(exc.sw, "the card rejected the management key") from exc
        response = tlv.parse_dict(tlv.parse_one(answer, TAG_DYN_AUTH).value).get(TAG_RESPONSE, b"")
        encryptor = cipher.encryptor()
        expected = encryptor.update(challenge) + encryptor.finalize()
        if not hmac.compare_digest(response, expected):
            # The card does not hold our key: it may be an impostor.
            raise ManagementKeyRejected(
                SW.SECURITY_STATUS_NOT_SATISFIED, "the card failed its proof"
            )

    def set_management_key(self, key: bytes, algorithm: Algorithm = Algorithm.AES192) -> None:
        """Replace the management key (after ``authenticate`` with the current one)."""
        if not algorithm.is_symmetric or len(key) != algorithm.key_length:
            raise ValueError(f"a {algorithm.name} management key is {algorithm.key_length} bytes")
        data = bytes((algorithm, KeyRef.MANAGEMENT, len(key))) + key
        self._send(Ins.SET_MANAGEMENT_KEY, 0xFF, 0xFF, data)

    # --- keys ---------------------------------------------------------------------------

    def generate_key(
        self,
        slot: Slot,
        algorithm: Algorithm = Algorithm.ECC_P256,
        pin_policy: PinPolicy = PinPolicy.DEFAULT,
    ) -> ec.EllipticCurvePublicKey:
        """Make a key pair on the card (needs management-key authentication first)."""
        if not algorithm.is_ec:
            raise ValueError("this card makes EC keys (P-256, P-384)")
        control = [(0x80, bytes((algorithm,)))]
        if pin_policy is not PinPolicy.DEFAULT:
            control.append((0xAA, bytes((pin_policy,))))
        answer = self._send(
            Ins.GENERATE_ASYMMETRIC_KEY_PAIR,
            0x00,
            slot,
            tlv.encode_tlv(0xAC, tlv.encode_all(control)),
            le=256,
        )
        fields = tlv.parse_dict(tlv.parse_one(answer, TAG_PUBLIC_KEY).value)
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(
                _CURVES[algorithm], fields[TAG_EC_POINT]
            )
        except (KeyError, ValueError) as exc:
            raise ProtocolError("the card returned no valid public key", field="86") from exc

    def attest(self, slot: Slot) -> Attestation:
        """The card's attestation of the key it generated in ``slot`` (Yubico's INS F9).
        A key that was imported is refused by the card (``ApduError``, 6A80)."""
        der = self._send(Ins.ATTEST, slot, 0x00, le=256)
        try:
            certificate = x509.load_der_x509_certificate(der)
            intermediate = x509.load_der_x509_certificate(
                certificate_from_object(self.get_object(ObjectId.ATTESTATION))
            )
        except ValueError as exc:
            raise ProtocolError("the card's attestation is not a certificate", field="F9") from exc
        return Attestation(certificate, intermediate)

    def serial(self) -> int | None:
        """The card's vendor serial number (Yubico's GET SERIAL), or None if it has none."""
        try:
            raw = self._send(Ins.GET_SERIAL, 0x00, 0x00, le=256)
        except ApduError:
            return None
        return int.from_bytes(raw, "big") if raw else None

    def sign_digest(self, slot: Slot, algorithm: Algorithm, digest: bytes) -> bytes:
        """ECDSA over a digest with the key in ``slot``; returns a DER signature."""
        body = tlv.encode_all([(TAG_RESPONSE, b""), (TAG_CHALLENGE, digest)])
        answer = self._send(
            Ins.GENERAL_AUTHENTICATE, algorithm, slot, tlv.encode_tlv(TAG_DYN_AUTH, body), le=256
        )
        signature = tlv.parse_dict(tlv.parse_one(answer, TAG_DYN_AUTH).value).get(TAG_RESPONSE)
        if not signature:
            raise ProtocolError("the card returned no signature", field="82")
        return signature

    def sign(self, slot: Slot, message: bytes, algorithm: Algorithm = Algorithm.ECC_P256) -> bytes:
        """Hash ``message`` (SHA-256 for P-256, SHA-384 for P-384) and sign it on the card."""
        hash_alg: hashes.HashAlgorithm = (
            hashes.SHA384() if algorithm is Algorithm.ECC_P384 else hashes.SHA256()
        )
        digest = hashes.Hash(hash_alg)
        digest.update(message)
        return self.sign_digest(slot, algorithm, digest.finalize())


@dataclass(frozen=True)
class Attestation:
    """A slot key's attestation as the card gives it: the certificate for the key, signed by
    the card's attestation key (slot F9), and that key's certificate (object 5FFF01), which
    chains to the card vendor's root."""

    certificate: x509.Certificate
    intermediate: x509.Certificate


def key_algorithm(public_key: object) -> Algorithm:
    """The PIV algorithm identifier for a certificate's public key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return Algorithm.ECC_P256
        if isinstance(public_key.curve, ec.SECP384R1):
            return Algorithm.ECC_P384
    raise ValueError("only P-256 and P-384 keys are supported")
