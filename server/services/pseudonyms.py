"""Per-service-provider pseudonyms: a stable UUID for each (identity, provider) pair that two
providers cannot match up without the pseudonym key."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid

from server.services.errors import KeyMaterialRejected
from server.services.secretbox import read_private_file

MIN_KEY_SIZE = 32


class Pseudonyms:
    """Derives the persistent pseudonymous UUID a service provider knows a person by.

    ``UUID = HMAC-SHA256(key, identity_id.bytes || provider_id as UTF-8)`` cut to 128 bits, with
    the version and variant bits set for a version 8 (custom, RFC 9562 section 5.8) UUID. The
    identity id is always 16 bytes, so the concatenation is unambiguous. Losing or changing the key
    changes every pseudonym, so it is kept like the other keys, in an owner-only file.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_SIZE:
            raise KeyMaterialRejected(f"a pseudonym key needs at least {MIN_KEY_SIZE} bytes")
        self._key = key

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False) -> Pseudonyms:
        """Read the key from ``path`` (mode 0600); with ``create`` make a random one if missing."""
        return cls(read_private_file(path, create=(lambda: os.urandom(32)) if create else None))

    def pseudonym(self, identity_id: uuid.UUID, provider_id: str) -> uuid.UUID:
        """The pseudonym of ``identity_id`` at the service provider ``provider_id``."""
        if not provider_id:
            raise ValueError("a pseudonym needs a service provider id")
        mac = hmac.new(self._key, identity_id.bytes + provider_id.encode("utf-8"), hashlib.sha256)
        raw = bytearray(mac.digest()[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
        raw[8] = (raw[8] & 0x3F) | 0x80  # variant 10 (RFC 9562)
        return uuid.UUID(bytes=bytes(raw))

    def subject_digest(self, typed: str) -> str:
        """A keyed digest of what someone typed to say who they are (a person number that
        may match no identity): stable for the same input, meaningless without the key, so a
        login can keep it to answer the same decoys every time without storing the number."""
        return hmac.new(self._key, b"subject|" + typed.encode("utf-8"), hashlib.sha256).hexdigest()

    def fingerprint(self) -> str:
        """A fingerprint of the key (a keyed digest of a fixed text): the same for the same
        key, telling nothing of it."""
        return hmac.new(self._key, b"fingerprint|", hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "Pseudonyms(key=<hidden>)"
