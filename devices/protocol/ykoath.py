"""Yubico's YKOATH protocol (TOTP and HOTP computed on a smartcard): constants, the credential
type and the codec of every command and response, shared by the host session and the simulator."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag, unique

from devices.protocol import tlv
from devices.protocol.errors import DeviceError, MalformedTlv, ProtocolError

AID = bytes.fromhex("A000000527210101")

DEFAULT_PERIOD = 30
DEFAULT_DIGITS = 6
MIN_DIGITS, MAX_DIGITS = 6, 8
MAX_NAME_LENGTH = 64  # bytes of the card name
# The card refuses shorter keys; HMAC pads keys with zeros, so padding changes no code.
MIN_KEY_LENGTH = 14
CHALLENGE_LENGTH = 8
MAX_CHALLENGE_LENGTH = 64
MAX_COUNTER = 0xFFFFFFFF  # the initial moving factor (IMF) is four bytes on the wire
RESET_P1P2 = (0xDE, 0xAD)
P2_FULL = 0x00
P2_TRUNCATED = 0x01
_MASK_ALGORITHM = 0x0F
_MASK_TYPE = 0xF0
# A canonical period prefix: no leading zero, so every card name parses back to itself.
_PERIOD_PREFIX = re.compile(r"([1-9][0-9]*)/(.+)", re.DOTALL)


@unique
class Ins(IntEnum):
    PUT = 0x01
    DELETE = 0x02
    SET_CODE = 0x03
    RESET = 0x04
    LIST = 0xA1
    CALCULATE = 0xA2
    VALIDATE = 0xA3
    CALCULATE_ALL = 0xA4
    SEND_REMAINING = 0xA5


@unique
class Tag(IntEnum):
    NAME = 0x71
    NAME_LIST = 0x72
    KEY = 0x73
    CHALLENGE = 0x74
    RESPONSE = 0x75
    TRUNCATED = 0x76
    HOTP = 0x77
    PROPERTY = 0x78
    VERSION = 0x79
    IMF = 0x7A
    ALGORITHM = 0x7B
    TOUCH = 0x7C


@unique
class OathType(IntEnum):
    HOTP = 0x10
    TOTP = 0x20


@unique
class OathAlgorithm(IntEnum):
    SHA1 = 0x01
    SHA256 = 0x02
    SHA512 = 0x03

    @property
    def hash_name(self) -> str:
        return self.name.lower()

    @property
    def block_size(self) -> int:
        """HMAC's block size: longer keys are hashed first (RFC 2104), so the card needs no
        more than this."""
        return 128 if self is OathAlgorithm.SHA512 else 64


@unique
class Property(IntFlag):
    """The PUT property byte. The card keeps ``REQUIRE_TOUCH``; ``ONLY_INCREASING`` is accepted
    and ignored."""

    ONLY_INCREASING = 0x01
    REQUIRE_TOUCH = 0x02


class CredentialFormatError(DeviceError, ValueError):
    """A credential or secret the card cannot store; ``field`` names what was wrong."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def split_card_name(card_name: str, oath_type: OathType) -> tuple[str, int]:
    """(name, period) of a name as the card stores it: ``"60/a:b"`` is ``("a:b", 60)`` for
    TOTP. A prefix that is not canonical (``"030/"``, ``"30/"``) is part of the name."""
    if oath_type is OathType.TOTP:
        match = _PERIOD_PREFIX.fullmatch(card_name)
        if match is not None and int(match.group(1)) != DEFAULT_PERIOD:
            return match.group(2), int(match.group(1))
    return card_name, DEFAULT_PERIOD


@dataclass(frozen=True)
class Credential:
    """An OATH credential without its secret.

    The card keeps no TOTP period (it hashes whatever challenge it is given), so, as Yubico
    does, a TOTP credential with a period other than 30 s is stored under the name
    ``"<period>/<name>"``, e.g. ``"60/issuer:account"``. ``name`` is the name without that
    prefix, ``card_name`` the name the card stores; a name that would read back with another
    period (``"15/x"`` for a 30 s TOTP) is refused.

    LIST reports only name, type and algorithm, so a listed credential has None for
    ``digits``, ``counter`` and ``touch``; in ``put_data`` a None ``counter`` or ``touch``
    sends nothing (counter 0, no touch).
    """

    name: str
    oath_type: OathType
    algorithm: OathAlgorithm = OathAlgorithm.SHA1
    digits: int | None = DEFAULT_DIGITS
    period: int = DEFAULT_PERIOD
    counter: int | None = 0
    touch: bool | None = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "oath_type", OathType(self.oath_type))
        except ValueError as exc:
            raise CredentialFormatError(
                f"unknown type {self.oath_type!r}", field="oath_type"
            ) from exc
        try:
            object.__setattr__(self, "algorithm", OathAlgorithm(self.algorithm))
        except ValueError as exc:
            raise CredentialFormatError(
                f"unknown algorithm {self.algorithm!r}", field="algorithm"
            ) from exc
        if self.digits is not None and not MIN_DIGITS <= self.digits <= MAX_DIGITS:
            raise CredentialFormatError(
                f"digits must be {MIN_DIGITS} to {MAX_DIGITS}, got {self.digits}", field="digits"
            )
        if self.period < 1 or (self.oath_type is OathType.HOTP and self.period != DEFAULT_PERIOD):
            raise CredentialFormatError(
                f"period {self.period} (TOTP: at least 1 s; HOTP has none)", field="period"
            )
        if self.counter is not None and (
            not 0 <= self.counter <= MAX_COUNTER
            or (self.oath_type is OathType.TOTP and self.counter)
        ):
            raise CredentialFormatError(
                f"counter {self.counter} (HOTP only, 0 to {MAX_COUNTER})", field="counter"
            )
        encoded = self.card_name.encode("utf-8")
        if not self.name or len(encoded) > MAX_NAME_LENGTH:
            raise CredentialFormatError(
                f"the card name is 1 to {MAX_NAME_LENGTH} bytes, got {len(encoded)}", field="name"
            )
        if split_card_name(self.card_name, self.oath_type) != (self.name, self.period):
            raise CredentialFormatError(
                f"the name {self.name!r} would be read back with another period", field="name"
            )

    @property
    def card_name(self) -> str:
        """The name as the card stores it, with the period prefix for a non-30 s TOTP."""
        if self.oath_type is OathType.TOTP and self.period != DEFAULT_PERIOD:
            return f"{self.period}/{self.name}"
        return self.name


# --- SELECT ----------------------------------------------------------------------------------


def device_id(salt: bytes) -> str:
    """The identifier Yubico's tools show for an OATH application: from its salt."""
    return base64.b64encode(hashlib.sha256(salt).digest()[:16]).decode("ascii").rstrip("=")


def derive_key(salt: bytes, password: str) -> bytes:
    """The access key for a password, as Yubico's tools derive it (PBKDF2-HMAC-SHA1)."""
    return hashlib.pbkdf2_hmac("sha1", password.encode("utf-8"), salt, 1000, 16)


@dataclass(frozen=True)
class SelectResponse:
    """The SELECT answer: version, salt, and a challenge with its algorithm when the
    application is protected by an access code."""

    version: tuple[int, int, int]
    salt: bytes
    challenge: bytes | None = None
    algorithm: OathAlgorithm | None = None

    @property
    def device_id(self) -> str:
        return device_id(self.salt)

    @property
    def locked(self) -> bool:
        return self.challenge is not None

    def encode(self) -> bytes:
        items = [(Tag.VERSION, bytes(self.version)), (Tag.NAME, self.salt)]
        if self.challenge is not None:
            items.append((Tag.CHALLENGE, self.challenge))
            items.append((Tag.ALGORITHM, bytes((self.algorithm or OathAlgorithm.SHA1,))))
        return tlv.encode_all(items)

    @classmethod
    def decode(cls, data: bytes) -> SelectResponse:
        fields = tlv.parse_dict(data)
        version = fields.get(Tag.VERSION, b"")
        if len(version) != 3:
            raise ProtocolError("the version is three bytes", field="version")
        if Tag.NAME not in fields:
            raise ProtocolError("the SELECT answer has no salt", field="name")
        algorithm = None
        if Tag.CHALLENGE in fields:
            algorithm = _algorithm(fields.get(Tag.ALGORITHM, b"\x01")[:1], "algorithm")
        return cls(
            (version[0], version[1], version[2]),
            fields[Tag.NAME],
            fields.get(Tag.CHALLENGE),
            algorithm,
        )


def _algorithm(raw: bytes, name: str) -> OathAlgorithm:
    try:
        return OathAlgorithm(raw[0] & _MASK_ALGORITHM)
    except (ValueError, IndexError) as exc:
        raise ProtocolError(f"unknown algorithm in {raw.hex()!r}", field=name) from exc


def _oath_type(raw: bytes, name: str) -> OathType:
    try:
        return OathType(raw[0] & _MASK_TYPE)
    except (ValueError, IndexError) as exc:
        raise ProtocolError(f"unknown credential type in {raw.hex()!r}", field=name) from exc


# --- PUT -------------------------------------------------------------------------------------


def normalise_secret(secret: bytes, algorithm: OathAlgorithm) -> bytes:
    """The key HMAC actually uses: hashed when longer than a block, zero-padded to the card's
    minimum. Codes stay the same (RFC 2104 does both)."""
    if not secret:
        raise CredentialFormatError("the secret is empty", field="secret")
    if len(secret) > algorithm.block_size:
        secret = hashlib.new(algorithm.hash_name, secret).digest()
    return secret.ljust(MIN_KEY_LENGTH, b"\x00")


def put_data(credential: Credential, secret: bytes) -> bytes:
    """PUT's data: 71 name, 73 type|algorithm digits key, [78 property], [7A counter].
    The property is a bare tag and byte, with no length, as Yubico's cards expect."""
    if credential.digits is None:
        raise CredentialFormatError("PUT needs the number of digits", field="digits")
    key = normalise_secret(secret, credential.algorithm)
    header = bytes((credential.oath_type | credential.algorithm, credential.digits))
    data = tlv.encode_tlv(Tag.NAME, credential.card_name.encode("utf-8"))
    data += tlv.encode_tlv(Tag.KEY, header + key)
    if credential.touch:
        data += bytes((Tag.PROPERTY, Property.REQUIRE_TOUCH))
    if credential.counter:
        data += tlv.encode_tlv(Tag.IMF, credential.counter.to_bytes(4, "big"))
    return data


@dataclass(frozen=True)
class PutRequest:
    """A decoded PUT, as the card sees it: the name stays bytes."""

    name: bytes
    oath_type: OathType
    algorithm: OathAlgorithm
    digits: int
    secret: bytes = field(repr=False)
    touch: bool = False
    counter: int = 0


def _put_fields(data: bytes) -> dict[int, bytes]:
    """PUT's fields: one-byte tags with BER lengths, except the property, a bare tag and byte."""
    fields: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        tag = data[offset]
        if tag == Tag.PROPERTY:
            start, end = offset + 1, offset + 2
        else:
            start, length = _read_length(data, offset + 1)
            end = start + length
        if end > len(data):
            raise MalformedTlv(f"tag {tag:02X} runs past the end of the data", field="value")
        if tag in fields:
            raise MalformedTlv(f"tag {tag:02X} appears twice", field="tag")
        fields[tag] = data[start:end]
        offset = end
    return fields


def _read_length(data: bytes, offset: int) -> tuple[int, int]:
    """(where the value starts, its length) for a BER length at ``offset``."""
    if offset >= len(data):
        raise MalformedTlv("data ends where a length should start", field="length")
    first = data[offset]
    if first < 0x80:
        return offset + 1, first
    count = first & 0x7F
    if count not in (1, 2) or offset + 1 + count > len(data):
        raise MalformedTlv("a bad or truncated length", field="length")
    return offset + 1 + count, int.from_bytes(data[offset + 1 : offset + 1 + count], "big")


def parse_put(data: bytes) -> PutRequest:
    """Decode PUT's data; raises ``ProtocolError`` naming the bad field."""
    fields = _put_fields(data)
    unknown = set(fields) - {Tag.NAME, Tag.KEY, Tag.PROPERTY, Tag.IMF}
    if unknown:
        raise ProtocolError(f"unexpected tag {min(unknown):02X}", field="tag")
    name = fields.get(Tag.NAME, b"")
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ProtocolError(f"a name is 1 to {MAX_NAME_LENGTH} bytes", field="name")
    key = fields.get(Tag.KEY, b"")
    if len(key) < 2:
        raise ProtocolError("the key field is type|algorithm, digits, key", field="key")
    oath_type, algorithm = _oath_type(key, "type"), _algorithm(key, "algorithm")
    digits, secret = key[1], key[2:]
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise ProtocolError(f"{digits} digits", field="digits")
    if not MIN_KEY_LENGTH <= len(secret) <= algorithm.block_size:
        raise ProtocolError(f"a key of {len(secret)} bytes", field="key")
    prop = fields.get(Tag.PROPERTY, b"\x00")[0]
    if prop & ~int(Property.ONLY_INCREASING | Property.REQUIRE_TOUCH):
        raise ProtocolError(f"unknown property bits {prop:02X}", field="property")
    counter = 0
    if Tag.IMF in fields:
        if oath_type is not OathType.HOTP or len(fields[Tag.IMF]) != 4:
            raise ProtocolError("the IMF is four bytes, for HOTP only", field="imf")
        counter = int.from_bytes(fields[Tag.IMF], "big")
    return PutRequest(
        name, oath_type, algorithm, digits, secret, bool(prop & Property.REQUIRE_TOUCH), counter
    )


# --- DELETE, LIST ----------------------------------------------------------------------------


def name_data(card_name: str) -> bytes:
    """DELETE's data (and the start of CALCULATE's): 71 name."""
    return tlv.encode_tlv(Tag.NAME, card_name.encode("utf-8"))


def encode_list_entry(name: bytes, oath_type: OathType, algorithm: OathAlgorithm) -> bytes:
    return tlv.encode_tlv(Tag.NAME_LIST, bytes((oath_type | algorithm,)) + name)


def parse_list(data: bytes) -> list[Credential]:
    """LIST's answer: one 72 (type|algorithm, name) per credential, in the card's order."""
    out = []
    for item in tlv.iter_tlv(data):
        if item.tag != Tag.NAME_LIST or len(item.value) < 2:
            raise ProtocolError(f"unexpected list entry with tag {item.tag:X}", field="72")
        oath_type, algorithm = _oath_type(item.value, "type"), _algorithm(item.value, "algorithm")
        name, period = split_card_name(_decode_name(item.value[1:]), oath_type)
        try:
            credential = Credential(name, oath_type, algorithm, None, period, None, None)
        except CredentialFormatError as exc:
            raise ProtocolError(f"the card listed {exc}", field=exc.field) from exc
        out.append(credential)
    return out


def _decode_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("a credential name is not UTF-8", field="name") from exc


# --- CALCULATE, CALCULATE ALL ----------------------------------------------------------------


def time_challenge(at: float, period: int = DEFAULT_PERIOD) -> bytes:
    """The TOTP challenge (RFC 6238): the number of whole periods since the epoch, as eight
    big-endian bytes."""
    if period < 1:
        raise ValueError(f"a period is at least 1 s, got {period}")
    if at < 0:
        raise ValueError("a time before 1970 has no TOTP counter")
    return int(at // period).to_bytes(8, "big")


def oath_hmac(algorithm: OathAlgorithm, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, algorithm.hash_name).digest()


def dynamic_truncate(digest: bytes) -> bytes:
    """RFC 4226 5.3: four bytes of an HMAC at the offset its last nibble names, top bit off."""
    offset = digest[-1] & 0x0F
    return (int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF).to_bytes(4, "big")


def format_code(truncated: bytes, digits: int) -> str:
    """The code a person types: the truncated value modulo 10^digits, zero-padded."""
    if len(truncated) != 4:
        raise ProtocolError(f"a truncated response is 4 bytes, got {len(truncated)}", field="76")
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise ProtocolError(f"{digits} digits", field="digits")
    value = int.from_bytes(truncated, "big") & 0x7FFFFFFF
    return str(value % 10**digits).rjust(digits, "0")


def calculate_data(card_name: str, challenge: bytes) -> bytes:
    """CALCULATE's data: 71 name, 74 challenge (empty for HOTP)."""
    return name_data(card_name) + tlv.encode_tlv(Tag.CHALLENGE, challenge)


def calculate_all_data(challenge: bytes) -> bytes:
    return tlv.encode_tlv(Tag.CHALLENGE, challenge)


@dataclass(frozen=True)
class OathResponse:
    """A computed response: the digits byte and either the truncated four bytes (tag 76) or
    the whole HMAC (tag 75). Kept out of ``repr``: it is as good as the code."""

    digits: int
    value: bytes = field(repr=False)
    truncated: bool = True

    @property
    def code(self) -> str:
        return format_code(
            self.value if self.truncated else dynamic_truncate(self.value), self.digits
        )

    def encode(self) -> bytes:
        tag = Tag.TRUNCATED if self.truncated else Tag.RESPONSE
        return tlv.encode_tlv(tag, bytes((self.digits,)) + self.value)

    @classmethod
    def from_tlv(cls, item: tlv.Tlv) -> OathResponse:
        if item.tag not in (Tag.TRUNCATED, Tag.RESPONSE):
            raise ProtocolError(f"expected a response, found tag {item.tag:X}", field="75")
        truncated = item.tag == Tag.TRUNCATED
        size = len(item.value) - 1
        if (truncated and size != 4) or (not truncated and size not in (20, 32, 64)):
            raise ProtocolError(f"a response of {size} bytes", field=f"{item.tag:X}")
        return cls(item.value[0], item.value[1:], truncated)


def parse_calculate(data: bytes) -> OathResponse:
    """CALCULATE's answer: 76 (truncated) or 75 (full), each digits then value."""
    items = tlv.parse_all(data)
    if len(items) != 1:
        raise ProtocolError(f"expected one response, found {len(items)}", field="75")
    return OathResponse.from_tlv(items[0])


@dataclass(frozen=True)
class CalculateAllEntry:
    """One credential in CALCULATE ALL's answer. ``response`` is None for HOTP (77) and for
    credentials that need a touch (7C): calculate those one by one."""

    card_name: str
    oath_type: OathType
    digits: int
    touch: bool
    response: OathResponse | None


def encode_calculate_all_entry(
    name: bytes, oath_type: OathType, digits: int, touch: bool, response: OathResponse | None
) -> bytes:
    """71 name, then 77 digits (HOTP), 7C digits (touch), or the response."""
    head = tlv.encode_tlv(Tag.NAME, name)
    if oath_type is OathType.HOTP:
        return head + tlv.encode_tlv(Tag.HOTP, bytes((digits,)))
    if touch or response is None:
        return head + tlv.encode_tlv(Tag.TOUCH, bytes((digits,)))
    return head + response.encode()


def parse_calculate_all(data: bytes) -> list[CalculateAllEntry]:
    items = tlv.parse_all(data)
    if len(items) % 2:
        raise ProtocolError("a name without a response", field="71")
    out = []
    for name_item, answer in zip(items[::2], items[1::2], strict=True):
        if name_item.tag != Tag.NAME:
            raise ProtocolError(f"expected a name, found tag {name_item.tag:X}", field="71")
        name = _decode_name(name_item.value)
        if answer.tag in (Tag.HOTP, Tag.TOUCH):
            if len(answer.value) != 1:
                raise ProtocolError("the digits are one byte", field=f"{answer.tag:X}")
            oath_type = OathType.HOTP if answer.tag == Tag.HOTP else OathType.TOTP
            touch = answer.tag == Tag.TOUCH
            out.append(CalculateAllEntry(name, oath_type, answer.value[0], touch, None))
            continue
        response = OathResponse.from_tlv(answer)
        out.append(CalculateAllEntry(name, OathType.TOTP, response.digits, False, response))
    return out


# --- access code -----------------------------------------------------------------------------


def set_code_data(
    key: bytes, challenge: bytes, algorithm: OathAlgorithm = OathAlgorithm.SHA1
) -> bytes:
    """SET CODE's data: 73 algorithm key, 74 challenge, 75 HMAC(key, challenge), the last to
    prove the host holds the key it sets."""
    return tlv.encode_all(
        [
            (Tag.KEY, bytes((OathType.TOTP | algorithm,)) + key),
            (Tag.CHALLENGE, challenge),
            (Tag.RESPONSE, oath_hmac(algorithm, key, challenge)),
        ]
    )


def clear_code_data() -> bytes:
    """SET CODE with an empty key: remove the access code."""
    return tlv.encode_tlv(Tag.KEY, b"")


def validate_data(response: bytes, challenge: bytes) -> bytes:
    """VALIDATE's data: 75 HMAC of the card's challenge, 74 the host's challenge."""
    return tlv.encode_all([(Tag.RESPONSE, response), (Tag.CHALLENGE, challenge)])


def parse_validate(data: bytes) -> bytes:
    """VALIDATE's answer: 75 the card's HMAC of the host's challenge."""
    try:
        return tlv.parse_one(data, Tag.RESPONSE).value
    except MalformedTlv as exc:
        raise ProtocolError(f"unreadable VALIDATE answer: {exc}", field="75") from exc
