"""The simulated PIV applet (NIST SP 800-73-4 part 2), byte-exact on the wire.

Private keys are created inside the applet and never leave it: no command returns one.
Retry counters are decremented and saved *before* a PIN is compared, so pulling the card
in the middle of a VERIFY cannot give an attacker a free guess.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

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
    TAG_DATA,
    TAG_DYN_AUTH,
    TAG_EC_POINT,
    TAG_PUBLIC_KEY,
    TAG_TAG_LIST,
    Algorithm,
    AttestedKey,
    Chuid,
    Ins,
    KeyRef,
    ObjectId,
    PinPolicy,
    Slot,
    certificate_from_object,
    certificate_object,
    unpad_pin,
)
from devices.protocol.sw import SW, retries_remaining
from firmware_sim import state as state_store
from firmware_sim.tokens import piv_keys
from firmware_sim.tokens.card import CardError, SimulatedCard, build_atr
from firmware_sim.tokens.piv_attestation import (
    TOUCH_NEVER,
    VERSION,
    PivManufacturer,
    attestation_certificate,
)
from firmware_sim.tokens.piv_management import ManagementKeyAuth
from firmware_sim.tokens.piv_state import KIND, PivState, file_persister, hash_secret

LABEL = b"akkreditiv PIV"
ATR = build_atr(b"\x80\x5a" + b"akkreditiv"[:10])
MAX_OBJECT_SIZE = 3052  # as much as common PIV tokens store per object

_READ_NEEDS_PIN = {ObjectId.PRINTED_INFORMATION, ObjectId.FACIAL_IMAGE, ObjectId.FINGERPRINTS}
_WRITABLE_TAGS = {member.value for member in ObjectId} | {
    bytes((0x5F, 0xC1, n))
    for n in range(0x0D, 0x21)  # retired key certificates
}


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
        self.management = ManagementKeyAuth()

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
            Ins.ATTEST: self._attest,
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
        if not self.management.authenticated:
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
        given = hash_secret(self.state.salt, candidate)
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
        setattr(self.state, f"{which}_hash", hash_secret(self.state.salt, new))
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
        self.state.pin_hash = hash_secret(self.state.salt, new)
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
        return self.management.step(self.state.management_alg, self.state.management_key, fields)

    def _private_key_operation(
        self, slot: Slot, alg: int, fields: dict[int, bytes]
    ) -> tuple[bytes, int]:
        algorithm, key, policy = piv_keys.private_key(self.state.keys, slot)
        if alg != algorithm:
            return b"", SW.INCORRECT_P1P2
        if policy is PinPolicy.ONCE and not self.pin_verified:
            return b"", SW.SECURITY_STATUS_NOT_SATISFIED
        if policy is PinPolicy.ALWAYS:
            if not self.pin_fresh:
                return b"", SW.SECURITY_STATUS_NOT_SATISFIED
            self.pin_fresh = False
        return piv_keys.sign_or_exchange(algorithm, key, fields)

    # --- key generation ------------------------------------------------------------------

    def _generate(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.p1 != 0x00 or apdu.p2 not in {slot.value for slot in Slot}:
            return b"", SW.INCORRECT_P1P2
        if not self.management.authenticated:
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
        point = piv_keys.create_key(self.state.keys, slot, algorithm, policy)
        self._save()
        return point

    # --- key attestation (Yubico's INS F9) ---------------------------------------------------

    def _attest(self, apdu: CommandApdu) -> tuple[bytes, int]:
        """A certificate for the key in slot P1, signed by the F9 key. A key that was not
        generated here (imported) cannot be attested: 6A80, as a YubiKey answers."""
        if apdu.p2 != 0x00 or apdu.p1 not in {slot.value for slot in Slot}:
            return b"", SW.INCORRECT_P1P2
        slot = Slot(apdu.p1)
        _, key, policy = piv_keys.private_key(self.state.keys, slot)
        if not piv_keys.generated_on_card(self.state.keys, slot):
            return b"", SW.WRONG_DATA
        content = self.state.objects.get(ObjectId.ATTESTATION.value)
        if not self.state.attestation_key or content is None:
            return b"", SW.REFERENCED_DATA_NOT_FOUND
        facts = AttestedKey(
            firmware=VERSION, serial=self.state.serial, pin_policy=policy, touch_policy=TOUCH_NEVER
        )
        certificate = attestation_certificate(
            piv_keys.load_pkcs8(self.state.attestation_key),
            x509.load_der_x509_certificate(certificate_from_object(content)),
            key.public_key(),
            slot,
            facts,
        )
        return certificate.public_bytes(serialization.Encoding.DER), SW.SUCCESS

    # --- vendor and misc ------------------------------------------------------------------

    def _get_challenge(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.p1 or apdu.p2:
            return b"", SW.INCORRECT_P1P2
        return secrets.token_bytes(min(apdu.le or 8, 256)), SW.SUCCESS

    def _set_management_key(self, apdu: CommandApdu) -> tuple[bytes, int]:
        """Data: algorithm, key reference 9B, key length, key (P1 P2 = FF FF)."""
        if (apdu.p1, apdu.p2) != (0xFF, 0xFF):
            return b"", SW.INCORRECT_P1P2
        if not self.management.authenticated:
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
        _, key, _ = piv_keys.private_key(self.state.keys, slot)
        certificate = piv_keys.self_signed_certificate(
            key, algorithm, slot, subject, self.state.serial
        )
        self.state.objects[slot.object_id.value] = certificate_object(
            certificate.public_bytes(serialization.Encoding.DER)
        )
        self._save()
        return certificate


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
    manufacturer_home: Path | None = None,
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
    # Made with its attestation key, certified by the vendor's PIV root (see piv_attestation).
    attestation_key, attestation = PivManufacturer.load_or_create(
        manufacturer_home
    ).issue_attestation_key(state.serial)
    state.attestation_key = piv_keys.pkcs8_hex(attestation_key)
    state.objects[ObjectId.ATTESTATION.value] = certificate_object(
        attestation.public_bytes(serialization.Encoding.DER)
    )
    applet = PivApplet(state, file_persister(path))
    applet._save()
    if provision:
        applet.provision(Slot.AUTHENTICATION, subject)
    return applet


def make_card(applet: PivApplet, *, strict: bool = False) -> SimulatedCard:
    return SimulatedCard(atr=ATR, applets=[applet], strict=strict)
