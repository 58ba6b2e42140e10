"""Encryption of token secrets at rest (AES-256-GCM under a key-encryption key from a file), and
the owner-only key files the other services also keep their keys in."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.services.errors import KeyMaterialRejected, SecretUnreadable

VERSION = 1
KEY_SIZE = 32
KEY_ID_SIZE = 8
NONCE_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = 1 + KEY_ID_SIZE + NONCE_SIZE
# Key files are tiny; refusing to read more keeps a misconfigured path (a log, a device) harmless.
MAX_KEY_FILE_SIZE = 64 * 1024


def key_id(key: bytes) -> bytes:
    """The 8-byte id a sealed blob names its key by: the start of SHA-256 of the key."""
    return hashlib.sha256(key).digest()[:KEY_ID_SIZE]


def read_private_file(
    path: str | os.PathLike[str], *, create: Callable[[], bytes] | None = None
) -> bytes:
    """Read a key file that only its owner may read; with ``create``, make it first if missing.

    A new file is written completely under a temporary name with mode 0600 and then linked into
    place, so a concurrent reader never sees a half-written key and a concurrent creator never
    overwrites one. A file with any group or other permission bit is refused (like ssh does):
    group- or world-writable is as bad as readable, since the key could be swapped.
    """
    target = Path(path)
    if create is not None and not target.exists():
        _create_private_file(target, create())
    try:
        handle = target.open("rb")
    except FileNotFoundError:
        raise KeyMaterialRejected(
            f"no key file at {target}; create it, or start with create enabled"
        ) from None
    except OSError as exc:
        raise KeyMaterialRejected(f"cannot open key file {target}: {exc.strerror}") from None
    with handle:
        # Checked on the open descriptor, so the file read is the file whose mode was checked.
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KeyMaterialRejected(f"key file {target} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyMaterialRejected(
                f"key file {target} has mode {stat.S_IMODE(info.st_mode):04o}; it must be "
                f"accessible by its owner only (chmod 600 {target})"
            )
        data = handle.read(MAX_KEY_FILE_SIZE + 1)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise KeyMaterialRejected(f"key file {target} is larger than {MAX_KEY_FILE_SIZE} bytes")
    return data


def _create_private_file(target: Path, data: bytes) -> None:
    create_file_once(target, data, mode=0o600)


def create_file_once(target: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` under a temporary name, then link it into place unless another process
    was first (then theirs is kept): processes starting at once end with one file."""
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask may only remove bits; make it exact
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, target)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        temporary.unlink(missing_ok=True)


class SecretBox:
    """Seals token secrets (OTP seeds, AES keys) for storage, bound to the credential they are for.

    A sealed blob is ``version (1) || key id (8) || nonce (12) || ciphertext || tag (16)``.
    The authenticated data is the header followed by the UTF-8 ``context`` (for example
    ``"credential:<uuid>"``), so a blob copied to another credential's row does not open there.

    Rotation: ``SecretBox(keys=[new, old])`` seals with ``new`` and opens blobs under either;
    ``needs_reseal`` finds the blobs still under an old key.
    """

    __slots__ = ("_ciphers", "_primary")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise KeyMaterialRejected("a SecretBox needs at least one key")
        ciphers: dict[bytes, AESGCM] = {}
        for key in keys:
            if len(key) != KEY_SIZE:
                raise KeyMaterialRejected(
                    f"a key-encryption key must be {KEY_SIZE} bytes, not {len(key)}"
                )
            ident = key_id(key)
            if ident in ciphers:
                raise KeyMaterialRejected(f"key {ident.hex()} is given twice")
            ciphers[ident] = AESGCM(key)
        self._ciphers = ciphers
        self._primary = key_id(keys[0])

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False) -> SecretBox:
        """A box with the single key in ``path`` (32 raw bytes, mode 0600).

        With ``create`` a missing file is made with a fresh random key. For rotation, read the
        files with ``read_private_file`` and pass ``keys=[new, old]``.
        """
        key = read_private_file(path, create=(lambda: os.urandom(KEY_SIZE)) if create else None)
        if len(key) != KEY_SIZE:
            raise KeyMaterialRejected(
                f"key file {path} holds {len(key)} bytes; a key-encryption key is exactly "
                f"{KEY_SIZE} random bytes"
            )
        return cls([key])

    @property
    def key_id(self) -> bytes:
        """The id of the key new blobs are sealed with."""
        return self._primary

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        """Encrypt ``plaintext`` for storage in ``context``; every call uses a fresh random nonce.

        Random 96-bit nonces are safe for far more than the 2**32 seals per key that NIST SP
        800-38D allows with them; rotate the key long before that.
        """
        header = bytes([VERSION]) + self._primary + os.urandom(NONCE_SIZE)
        nonce = header[1 + KEY_ID_SIZE :]
        ciphertext = self._ciphers[self._primary].encrypt(nonce, plaintext, _aad(header, context))
        return header + ciphertext

    def open(self, blob: bytes, *, context: str) -> bytes:
        """Decrypt a blob sealed for ``context``; raise ``SecretUnreadable`` if it was altered,
        sealed for another context, or sealed under a key this box does not hold."""
        if len(blob) < HEADER_SIZE + TAG_SIZE:
            raise SecretUnreadable("sealed secret is too short")
        if blob[0] != VERSION:
            raise SecretUnreadable(f"sealed secret has unknown version {blob[0]}")
        ident = blob[1 : 1 + KEY_ID_SIZE]
        cipher = self._ciphers.get(ident)
        if cipher is None:
            raise SecretUnreadable(f"sealed secret is under unknown key {ident.hex()}")
        header, ciphertext = blob[:HEADER_SIZE], blob[HEADER_SIZE:]
        try:
            return cipher.decrypt(header[1 + KEY_ID_SIZE :], ciphertext, _aad(header, context))
        except InvalidTag:
            raise SecretUnreadable(
                "sealed secret failed authentication (altered, or another context)"
            ) from None

    def needs_reseal(self, blob: bytes) -> bool:
        """Whether ``blob`` is sealed under a key other than the current one (after rotation)."""
        return blob[1 : 1 + KEY_ID_SIZE] != self._primary

    def __repr__(self) -> str:
        ids = ", ".join(ident.hex() for ident in self._ciphers)
        return f"SecretBox(key_ids=[{ids}])"


def _aad(header: bytes, context: str) -> bytes:
    if not context:
        # An empty context would let a blob open anywhere; every secret belongs to something.
        raise ValueError("a sealed secret needs a context, such as 'credential:<uuid>'")
    return header + context.encode("utf-8")


def ec_key_file(
    path: str | os.PathLike[str], *, create: bool, what: str = "key file"
) -> ec.EllipticCurvePrivateKey:
    """The elliptic-curve key in ``path``, an unencrypted PKCS#8 PEM file (mode 0600); with
    ``create``, a new P-256 key is written there first if the file is missing."""
    data = read_private_file(path, create=_new_ec_key_pem if create else None)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyMaterialRejected(f"{what} {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyMaterialRejected(f"{what} {path} does not hold an elliptic-curve key")
    return key


def rsa_key_file(
    path: str | os.PathLike[str], *, create: bool, what: str = "key file"
) -> rsa.RSAPrivateKey:
    """The RSA key in ``path``, an unencrypted PKCS#8 PEM file (mode 0600), of 2048 bits or
    more; with ``create``, a new 2048-bit key is written there first if the file is missing."""
    data = read_private_file(path, create=_new_rsa_key_pem if create else None)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyMaterialRejected(f"{what} {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise KeyMaterialRejected(f"{what} {path} does not hold an RSA key of 2048 bits or more")
    return key


def _new_rsa_key_pem() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
