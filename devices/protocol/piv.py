"""NIST SP 800-73-4 PIV constants and object codecs shared by the driver and the simulator."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum, unique

from cryptography import x509

from devices.protocol import tlv
from devices.protocol.errors import MalformedTlv, PinFormatError

AID = bytes.fromhex("A000000308000010000100")
AID_PREFIX = AID[:5]  # the RID, which middleware may use to select
PIX = AID[5:]


@unique
class Ins(IntEnum):
    SELECT = 0xA4
    GET_DATA = 0xCB
    VERIFY = 0x20
    CHANGE_REFERENCE_DATA = 0x24
    RESET_RETRY_COUNTER = 0x2C
    GENERAL_AUTHENTICATE = 0x87
    GENERATE_ASYMMETRIC_KEY_PAIR = 0x47
    PUT_DATA = 0xDB
    GET_RESPONSE = 0xC0
    GET_CHALLENGE = 0x84
    GET_VERSION = 0xFD  # the vendor version probe common middleware sends
    GET_SERIAL = 0xF8
    SET_MANAGEMENT_KEY = 0xFF  # vendor command of common PIV tokens (Yubico's)
    ATTEST = 0xF9  # Yubico's: a certificate for the key in slot P1, signed by slot F9's key


@unique
class KeyRef(IntEnum):
    """Key references of SP 800-73-4 part 1 table 4."""

    PIN = 0x80
    PUK = 0x81
    GLOBAL_PIN = 0x00
    MANAGEMENT = 0x9B


@unique
class Slot(IntEnum):
    AUTHENTICATION = 0x9A
    SIGNATURE = 0x9C
    KEY_MANAGEMENT = 0x9D
    CARD_AUTHENTICATION = 0x9E

    @classmethod
    def parse(cls, text: str) -> Slot:
        """Accept '9a', '9A', '0x9a' or a slot name such as 'authentication'."""
        cleaned = text.strip().lower().removeprefix("0x")
        for slot in cls:
            if cleaned in (f"{slot.value:02x}", slot.name.lower().replace("_", "-")):
                return slot
        raise ValueError(f"unknown PIV slot {text!r}; use 9a, 9c, 9d or 9e")

    @property
    def object_id(self) -> ObjectId:
        return _SLOT_OBJECTS[self]


@unique
class Algorithm(IntEnum):
    """Cryptographic mechanism identifiers (SP 800-78-4 table 5)."""

    TDES = 0x03
    AES128 = 0x08
    AES192 = 0x0A
    AES256 = 0x0C
    RSA2048 = 0x07
    ECC_P256 = 0x11
    ECC_P384 = 0x14

    @property
    def is_symmetric(self) -> bool:
        return self in (Algorithm.TDES, Algorithm.AES128, Algorithm.AES192, Algorithm.AES256)

    @property
    def is_ec(self) -> bool:
        return self in (Algorithm.ECC_P256, Algorithm.ECC_P384)

    @property
    def block_size(self) -> int:
        return 8 if self is Algorithm.TDES else 16

    @property
    def key_length(self) -> int:
        return {
            Algorithm.TDES: 24,
            Algorithm.AES128: 16,
            Algorithm.AES192: 24,
            Algorithm.AES256: 32,
        }[self]

    @property
    def field_bytes(self) -> int:
        return {Algorithm.ECC_P256: 32, Algorithm.ECC_P384: 48}[self]


class ObjectId(bytes, Enum):
    """Data object tags used in GET DATA / PUT DATA (the 5C tag list)."""

    CHUID = bytes.fromhex("5FC102")
    CCC = bytes.fromhex("5FC107")
    DISCOVERY = bytes.fromhex("7E")
    KEY_HISTORY = bytes.fromhex("5FC10C")
    CERT_9A = bytes.fromhex("5FC105")
    CERT_9C = bytes.fromhex("5FC10A")
    CERT_9D = bytes.fromhex("5FC10B")
    CERT_9E = bytes.fromhex("5FC101")
    PRINTED_INFORMATION = bytes.fromhex("5FC109")
    SECURITY_OBJECT = bytes.fromhex("5FC106")
    FACIAL_IMAGE = bytes.fromhex("5FC108")
    FINGERPRINTS = bytes.fromhex("5FC103")
    ATTESTATION = bytes.fromhex("5FFF01")  # Yubico's: the certificate of the F9 key


_SLOT_OBJECTS = {
    Slot.AUTHENTICATION: ObjectId.CERT_9A,
    Slot.SIGNATURE: ObjectId.CERT_9C,
    Slot.KEY_MANAGEMENT: ObjectId.CERT_9D,
    Slot.CARD_AUTHENTICATION: ObjectId.CERT_9E,
}


@unique
class PinPolicy(IntEnum):
    """When a slot's private key needs the PIN (values as in Yubico's PIV extensions)."""

    DEFAULT = 0x00
    NEVER = 0x01
    ONCE = 0x02
    ALWAYS = 0x03


DEFAULT_PIN_POLICY = {
    Slot.AUTHENTICATION: PinPolicy.ONCE,
    Slot.SIGNATURE: PinPolicy.ALWAYS,
    Slot.KEY_MANAGEMENT: PinPolicy.ONCE,
    Slot.CARD_AUTHENTICATION: PinPolicy.NEVER,
}

DEFAULT_MANAGEMENT_KEY = bytes.fromhex("010203040506070801020304050607080102030405060708")
DEFAULT_PIN = "123456"
DEFAULT_PUK = "12345678"
PIN_TRIES = 3
PUK_TRIES = 3

# Dynamic authentication template tags (SP 800-73-4 part 2, table 7).
TAG_DYN_AUTH = 0x7C
TAG_WITNESS = 0x80
TAG_CHALLENGE = 0x81
TAG_RESPONSE = 0x82
TAG_EXPONENTIATION = 0x85

TAG_DATA = 0x53
TAG_TAG_LIST = 0x5C
TAG_CERTIFICATE = 0x70
TAG_CERT_INFO = 0x71
TAG_ERROR_DETECTION = 0xFE
TAG_PUBLIC_KEY = 0x7F49
TAG_EC_POINT = 0x86


def pad_pin(pin: str) -> bytes:
    """A PIN or PUK as the 8 bytes VERIFY carries: ASCII digits padded with FF."""
    if not (pin.isascii() and pin.isdigit() and 6 <= len(pin) <= 8):
        raise PinFormatError(f"a PIV PIN or PUK is 6 to 8 digits, not {len(pin)} characters")
    raw = pin.encode("ascii")
    return raw + b"\xff" * (8 - len(raw))


def unpad_pin(padded: bytes) -> str | None:
    """The digits of a padded PIN, or None if the reference data is not 6-8 digits + FF."""
    if len(padded) != 8:
        return None
    digits = padded.rstrip(b"\xff")
    if not 6 <= len(digits) <= 8 or not all(0x30 <= b <= 0x39 for b in digits):
        return None
    return digits.decode("ascii")


@dataclass(frozen=True, slots=True)
class Chuid:
    """The Card Holder Unique Identifier; its GUID (or FASC-N) serves as the card's serial."""

    fascn: bytes
    guid: bytes
    expiry: str  # YYYYMMDD

    def encode(self) -> bytes:
        return tlv.encode_all(
            [
                (0x30, self.fascn),
                (0x34, self.guid),
                (0x35, self.expiry.encode("ascii")),
                (0x3E, b""),
                (TAG_ERROR_DETECTION, b""),
            ]
        )

    @classmethod
    def decode(cls, content: bytes) -> Chuid:
        fields = {item.tag: item.value for item in tlv.iter_tlv(content)}
        if 0x34 not in fields and 0x30 not in fields:
            raise MalformedTlv("CHUID has neither GUID nor FASC-N", field="guid")
        return cls(
            fascn=fields.get(0x30, b""),
            guid=fields.get(0x34, b""),
            expiry=fields.get(0x35, b"").decode("ascii", "replace"),
        )

    @property
    def serial(self) -> str:
        if self.guid and any(self.guid):
            return self.guid.hex()
        return self.fascn.hex()


def certificate_object(der: bytes) -> bytes:
    """The content of a certificate data object: 70 cert, 71 CertInfo (uncompressed), FE LRC."""
    return tlv.encode_all(
        [(TAG_CERTIFICATE, der), (TAG_CERT_INFO, b"\x00"), (TAG_ERROR_DETECTION, b"")]
    )


def certificate_from_object(content: bytes) -> bytes:
    fields = {item.tag: item.value for item in tlv.iter_tlv(content)}
    if TAG_CERTIFICATE not in fields:
        raise MalformedTlv("certificate object without tag 70", field="certificate")
    if fields.get(TAG_CERT_INFO, b"\x00")[:1] not in (b"", b"\x00"):
        raise MalformedTlv("compressed certificates are not supported", field="cert_info")
    return fields[TAG_CERTIFICATE]


# --- key attestation (Yubico's PIV extension) ------------------------------------------------

ATTESTATION_SLOT = 0xF9  # the attestation key, which only signs attestation certificates
OID_FIRMWARE = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.3")  # 3 bytes: major, minor, patch
OID_SERIAL = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.7")  # DER INTEGER
OID_POLICY = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.8")  # 2 bytes: PIN policy, touch policy


@dataclass(frozen=True, slots=True)
class AttestedKey:
    """What a slot's attestation certificate says about its key, beside the key itself."""

    firmware: tuple[int, int, int]
    serial: int | None
    pin_policy: PinPolicy
    touch_policy: int

    def extensions(self) -> list[x509.UnrecognizedExtension]:
        """The certificate extensions that carry these facts, as a YubiKey writes them."""
        found = [
            x509.UnrecognizedExtension(OID_FIRMWARE, bytes(self.firmware)),
            x509.UnrecognizedExtension(OID_POLICY, bytes((self.pin_policy, self.touch_policy))),
        ]
        if self.serial is not None:
            found.insert(1, x509.UnrecognizedExtension(OID_SERIAL, _der_integer(self.serial)))
        return found

    @classmethod
    def of(cls, certificate: x509.Certificate) -> AttestedKey:
        """The facts of an attestation certificate; ``MalformedTlv`` when the firmware or
        policy extension is missing or malformed (the serial is optional, as on older keys)."""
        values: dict[x509.ObjectIdentifier, bytes] = {}
        for extension in certificate.extensions:
            if isinstance(extension.value, x509.UnrecognizedExtension):
                values[extension.oid] = extension.value.value
        firmware, policy = values.get(OID_FIRMWARE), values.get(OID_POLICY)
        if firmware is None or len(firmware) != 3:
            raise MalformedTlv("attestation without a 3-byte firmware version", field="firmware")
        if policy is None or len(policy) != 2 or policy[0] not in {p.value for p in PinPolicy}:
            raise MalformedTlv("attestation without a valid PIN policy", field="policy")
        raw_serial = values.get(OID_SERIAL)
        return cls(
            firmware=(firmware[0], firmware[1], firmware[2]),
            serial=None if raw_serial is None else _parse_der_integer(raw_serial),
            pin_policy=PinPolicy(policy[0]),
            touch_policy=policy[1],
        )


def _der_integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("a card serial is not negative")
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0 keeps it positive
    return tlv.encode_tlv(0x02, body)


def _parse_der_integer(data: bytes) -> int:
    item = tlv.parse_one(data, 0x02)
    if not item.value or item.value[0] & 0x80:
        raise MalformedTlv("the attested serial is not a positive INTEGER", field="serial")
    return int.from_bytes(item.value, "big")
