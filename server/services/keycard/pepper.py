"""The server's key-card pepper: read from an owner-only file outside the database, and the
keys derived from it for decoy answers (key-card and FIDO2 logins)."""

from __future__ import annotations

import hmac
import os

from server.services.errors import KeyMaterialRejected
from server.services.secretbox import read_private_file

PEPPER_BYTES = 32


class KeyCardSecrets:
    """The server's key-card pepper, read from an owner-only file outside the database, and the
    keys derived from it for decoy answers (one per purpose, so a decoy never reveals a digest).

    Derivation is HMAC-SHA-256 of ``"akkreditiv-derived-key|" + purpose`` under the pepper; a
    code digest's message starts with the card's 16 random salt bytes and then ``|``, and the
    label has no ``|`` at that position, so the two uses never share an input.
    """

    __slots__ = ("_pepper",)

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < PEPPER_BYTES:
            raise KeyMaterialRejected(f"a key-card pepper has at least {PEPPER_BYTES} bytes")
        self._pepper = pepper

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False) -> KeyCardSecrets:
        """The pepper in ``path`` (mode 0600); with ``create`` a random one is made if missing,
        as ``SecretBox.from_file`` makes the key-encryption key."""
        maker = (lambda: os.urandom(PEPPER_BYTES)) if create else None
        return cls(read_private_file(path, create=maker))

    @property
    def pepper(self) -> bytes:
        return self._pepper

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (such as ``"fido2-decoy"``)."""
        return hmac.digest(self._pepper, b"akkreditiv-derived-key|" + purpose.encode(), "sha256")

    def fingerprint(self) -> str:
        """A fingerprint of the pepper: a key derived for nothing else, in hex."""
        return self.derive("key-fingerprint").hex()

    def __repr__(self) -> str:
        return "KeyCardSecrets(pepper=<hidden>)"
