"""The legacy eID's data formats, as its export delivers them: password hashes and key cards.

Password hashes: ``pbkdf2_sha256$<iterations>$<salt, base64>$<hash, base64>`` (PBKDF2-HMAC-
SHA256, RFC 8018), the scheme the legacy system used. They are imported as they are and
checked in constant time; the new eID never stores them (a migrated person sets a new
password, hashed with Argon2id).

Key cards: the legacy printing system made each card from a 32-byte card secret, so the
export (and our store) holds the secret, not 148 printed pairs. Position ``p`` (0..147) of a
card has the 4-digit key number ``index_at(secret, p)`` (unique on the card) and the 6-digit
code ``code_for(secret, index)``; both are HMAC-SHA256 derivations. The store keeps the secret
sealed and a 148-bit bitmap of used positions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

CARD_SIZE = 148
INDEX_DIGITS = 4
CODE_DIGITS = 6
SECRET_BYTES = 32
REPLACEMENT_AT = 20  # a new card is due when this many codes remain
BITMAP_BYTES = (CARD_SIZE + 7) // 8
PBKDF2_PREFIX = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 100_000
MIN_ITERATIONS = 1  # synthetic populations may use cheap hashes; real exports are checked as-is
MAX_ITERATIONS = 10_000_000


class LegacyFormatError(ValueError):
    """A value that is not in the legacy format (the message names the part, never a secret)."""


# --- passwords ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegacyPasswordHash:
    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> LegacyPasswordHash:
        parts = text.split("$")
        if len(parts) != 4 or parts[0] != PBKDF2_PREFIX:
            raise LegacyFormatError("password hash: expected pbkdf2_sha256$iterations$salt$hash")
        try:
            iterations = int(parts[1])
            salt = base64.b64decode(parts[2], validate=True)
            digest = base64.b64decode(parts[3], validate=True)
        except ValueError:
            raise LegacyFormatError("password hash: iterations, salt or hash unreadable") from None
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise LegacyFormatError("password hash: iteration count out of range")
        if len(salt) < 8 or len(digest) != 32:
            raise LegacyFormatError("password hash: salt under 8 bytes or hash not 32 bytes")
        return cls(iterations, salt, digest)

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        return f"{PBKDF2_PREFIX}${self.iterations}${salt}${digest}"

    def matches(self, password: str) -> bool:
        candidate = hashlib.pbkdf2_hmac(
            "sha256", password.encode("utf-8"), self.salt, self.iterations
        )
        return hmac.compare_digest(candidate, self.digest)


def hash_legacy_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """A hash in the legacy format (for tests and the synthetic population)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return LegacyPasswordHash(iterations, salt, digest).encode()


# --- key cards ---------------------------------------------------------------------------------


def _number(secret: bytes, label: bytes, value: int, digits: int) -> str:
    mac = hmac.digest(secret, label + value.to_bytes(4, "big"), "sha256")
    return f"{int.from_bytes(mac[:8], 'big') % 10**digits:0{digits}d}"


def _check_secret(secret: bytes) -> None:
    if len(secret) != SECRET_BYTES:
        raise LegacyFormatError(f"key card secret: expected {SECRET_BYTES} bytes")


def card_indexes(secret: bytes) -> list[str]:
    """The card's 148 key numbers by position: unique, derived from the secret."""
    _check_secret(secret)
    seen: set[str] = set()
    indexes: list[str] = []
    counter = 0
    while len(indexes) < CARD_SIZE:
        index = _number(secret, b"index", counter, INDEX_DIGITS)
        counter += 1
        if index not in seen:
            seen.add(index)
            indexes.append(index)
    return indexes


def code_for(secret: bytes, index: str) -> str:
    """The code printed next to key number ``index``."""
    _check_secret(secret)
    if len(index) != INDEX_DIGITS or not index.isdigit():
        raise LegacyFormatError("key number: expected 4 digits")
    return _number(secret, b"code", int(index), CODE_DIGITS)


def printed_card(secret: bytes) -> Iterator[tuple[str, str]]:
    """The index/code pairs as printed, by position."""
    for index in card_indexes(secret):
        yield index, code_for(secret, index)


def new_card_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def empty_bitmap() -> bytes:
    return bytes(BITMAP_BYTES)


def is_used(bitmap: bytes, position: int) -> bool:
    return bool(bitmap[position // 8] & (1 << (position % 8)))


def mark_used(bitmap: bytes, position: int) -> bytes:
    if len(bitmap) != BITMAP_BYTES or not 0 <= position < CARD_SIZE:
        raise LegacyFormatError("key card bitmap or position out of range")
    changed = bytearray(bitmap)
    changed[position // 8] |= 1 << (position % 8)
    return bytes(changed)


def bitmap_from_positions(positions: list[int]) -> bytes:
    bitmap = empty_bitmap()
    for position in positions:
        bitmap = mark_used(bitmap, position)
    return bitmap


def unused_positions(bitmap: bytes) -> list[int]:
    return [p for p in range(CARD_SIZE) if not is_used(bitmap, p)]
