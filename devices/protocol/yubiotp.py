"""Yubico OTP: modhex, the 16-byte token block with its CRC, and AES-128 encryption of it into the
44-character one-time password a YubiKey types, with no I/O.

The block, all integers little-endian (yubico-c ``yubikey_token_st``)::

    private id (6) | usage counter (2) | timestamp (3) | session counter (1) | random (2) | CRC (2)
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devices.protocol.errors import InvalidOtp, MalformedOtp

MODHEX_ALPHABET = "cbdefghijklnrtuv"
CRC_RESIDUAL = 0xF0B8  # ISO/IEC 13239 CRC-16 over a block that ends in its own complemented CRC

BLOCK_LENGTH = 16
PRIVATE_ID_LENGTH = 6
AES_KEY_LENGTH = 16
MAX_PUBLIC_ID_LENGTH = 8  # Yubico's validation servers take OTPs of 32..48 characters
USAGE_COUNTER_MAX = 0x7FFF
# The stored usage counter's top bit is the YubiKey's caps-lock trigger flag, not a count.
_USAGE_COUNTER_FLAG = 0x8000
TIMESTAMP_MAX = 0xFFFFFF

_HEX_DIGITS = "0123456789abcdef"
_TO_MODHEX = str.maketrans(_HEX_DIGITS, MODHEX_ALPHABET)
_FROM_MODHEX = str.maketrans(MODHEX_ALPHABET + MODHEX_ALPHABET.upper(), _HEX_DIGITS * 2)
# Checked before any case folding: str.lower() maps some non-ASCII letters (the Kelvin sign)
# onto ASCII ones, which must not turn into modhex.
_MODHEX_CHARACTERS = frozenset(MODHEX_ALPHABET + MODHEX_ALPHABET.upper())


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def modhex_encode(data: bytes) -> str:
    """Hex with the digits 0..f written as ``cbdefghijklnrtuv``, which type the same on most
    keyboard layouts."""
    return data.hex().translate(_TO_MODHEX)


def modhex_decode(text: str) -> bytes:
    """Bytes from modhex, in either case; raises ``MalformedOtp(field="modhex")`` for any other
    character or an odd length."""
    if len(text) % 2:
        raise MalformedOtp(f"modhex has an even length, got {len(text)} characters", field="modhex")
    if not _MODHEX_CHARACTERS.issuperset(text):
        bad = next(c for c in text if c not in _MODHEX_CHARACTERS)
        raise MalformedOtp(f"{bad!r} is not a modhex character", field="modhex")
    return bytes.fromhex(text.translate(_FROM_MODHEX))


def crc16(data: bytes) -> int:
    """ISO/IEC 13239 CRC-16 as Yubico computes it: initial value 0xFFFF, reflected polynomial
    0x8408, no final complement. Over a whole valid block the result is ``CRC_RESIDUAL``."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True, slots=True)
class OtpBlock:
    """The 16-byte plaintext a YubiKey encrypts for each OTP. ``usage_counter`` counts power-ups
    (15 bits), ``session_counter`` the OTPs since power-up, ``timestamp`` is an 8 Hz clock
    (24 bits) and ``random`` 16 bits of noise."""

    private_id: bytes
    usage_counter: int
    timestamp: int
    session_counter: int
    random: int

    def __post_init__(self) -> None:
        if len(self.private_id) != PRIVATE_ID_LENGTH:
            raise MalformedOtp(
                f"the private id has {PRIVATE_ID_LENGTH} bytes, got {len(self.private_id)}",
                field="private_id",
            )
        for name, limit in (
            ("usage_counter", USAGE_COUNTER_MAX),
            ("timestamp", TIMESTAMP_MAX),
            ("session_counter", 0xFF),
            ("random", 0xFFFF),
        ):
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise MalformedOtp(f"{name} {value} is out of range 0..{limit:#x}", field=name)

    def encode(self) -> bytes:
        """The 16 bytes with the complemented CRC-16 appended, little-endian."""
        body = (
            bytes(self.private_id)
            + self.usage_counter.to_bytes(2, "little")
            + self.timestamp.to_bytes(3, "little")
            + bytes((self.session_counter,))
            + self.random.to_bytes(2, "little")
        )
        return body + (~crc16(body) & 0xFFFF).to_bytes(2, "little")

    @classmethod
    def decode(cls, block: bytes) -> OtpBlock:
        """Parse a decrypted block; raises ``InvalidOtp(field="crc")`` when its CRC does not
        check (the usual sign of the wrong AES key) and ``MalformedOtp`` for a wrong length.
        The caps-lock flag in the usage counter's top bit is dropped."""
        if len(block) != BLOCK_LENGTH:
            raise MalformedOtp(
                f"an OTP block has {BLOCK_LENGTH} bytes, got {len(block)}", field="block"
            )
        if crc16(block) != CRC_RESIDUAL:
            raise InvalidOtp(
                "the OTP does not decrypt to a valid token (CRC mismatch)", field="crc"
            )
        return cls(
            private_id=bytes(block[0:6]),
            usage_counter=int.from_bytes(block[6:8], "little") & ~_USAGE_COUNTER_FLAG,
            timestamp=int.from_bytes(block[8:11], "little"),
            session_counter=block[11],
            random=int.from_bytes(block[12:14], "little"),
        )


@dataclass(frozen=True, slots=True)
class ParsedOtp:
    """A decrypted OTP: the public id it was typed with and the token block inside it."""

    public_id: bytes
    block: OtpBlock


def _aes(aes_key: bytes) -> Cipher[modes.ECB]:
    if len(aes_key) != AES_KEY_LENGTH:
        raise ValueError(
            f"a Yubico OTP key is {AES_KEY_LENGTH} bytes (AES-128), not {len(aes_key)}"
        )
    # ECB is the Yubico OTP format itself: one block, never the same plaintext twice.
    return Cipher(algorithms.AES(aes_key), modes.ECB())  # noqa: S305


def encrypt_block(aes_key: bytes, block: OtpBlock) -> bytes:
    """AES-128-ECB of ``block.encode()``; raises ``ValueError`` for a key that is not 16 bytes."""
    encryptor = _aes(aes_key).encryptor()
    return encryptor.update(block.encode()) + encryptor.finalize()


def generate_otp(public_id: bytes, aes_key: bytes, block: OtpBlock) -> str:
    """The OTP a YubiKey types: modhex of the public id, then of the encrypted block (12 + 32
    characters for a 6-byte public id). ``public_id`` may be 0..8 bytes."""
    if len(public_id) > MAX_PUBLIC_ID_LENGTH:
        raise ValueError(f"a public id has at most {MAX_PUBLIC_ID_LENGTH} bytes")
    return modhex_encode(public_id) + modhex_encode(encrypt_block(aes_key, block))


def parse_otp(otp: str, aes_key: bytes, *, public_id_length: int = 6) -> ParsedOtp:
    """Split, decrypt and check an OTP of ``2 * public_id_length + 32`` modhex characters.

    Raises ``MalformedOtp`` for text that is not such an OTP (``field`` is "length" or
    "modhex") and ``InvalidOtp(field="crc")`` when it does not decrypt under ``aes_key``. It
    does not compare the private id or the counters: that is the caller's state to keep.
    Surrounding whitespace (a typed Enter) is the caller's to strip.
    """
    if not 0 <= public_id_length <= MAX_PUBLIC_ID_LENGTH:
        raise ValueError(f"a public id has 0 to {MAX_PUBLIC_ID_LENGTH} bytes")
    expected = 2 * (public_id_length + BLOCK_LENGTH)
    if len(otp) != expected:
        raise MalformedOtp(
            f"an OTP with a {public_id_length}-byte public id has {expected} characters, "
            f"got {len(otp)}",
            field="length",
        )
    raw = modhex_decode(otp)
    decryptor = _aes(aes_key).decryptor()
    plain = decryptor.update(raw[public_id_length:]) + decryptor.finalize()
    return ParsedOtp(public_id=raw[:public_id_length], block=OtpBlock.decode(plain))
