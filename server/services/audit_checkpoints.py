"""Signed checkpoints of the audit chains' heads: one compact JWS (ES256) per line of a file kept
outside the database, each binding the end of every chain at one moment, written by the service
and checked by ``akkreditiv audit verify``."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.domain.errors import ServiceFault
from server.domain.model import AUDIT_CHAINS
from server.services.audit_chain import Anchor
from server.services.errors import KeyMaterialRejected
from server.services.tokens_jwt import ALGORITHM, Jwk, SigningKey, jwk_thumbprint, public_jwk

CHECKPOINT_FILE = "checkpoints.jws"
# The JWS ``typ``: a checkpoint is no JWT and must not be taken for one (or one for it).
CHECKPOINT_TYPE = "akkreditiv-audit-checkpoint"
_HASH = re.compile(r"[0-9a-f]{64}")
_BLOCK = 4096


class CheckpointRejected(ServiceFault):
    """A line of the checkpoint file that is not a checkpoint signed by the service's key."""

    code = "audit-checkpoint-rejected"
    default_detail = "an audit checkpoint failed verification"

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"checkpoint on line {line}: {reason}")


@dataclass(frozen=True)
class Checkpoint:
    """The signed statement "at ``at`` the audit log's chains ended at ``heads``": every chain
    that held an entry then, each once, in the order of their numbers.

    A checkpoint signed before the log was partitioned (payload ``seq``, ``hash``, ``at``)
    reads as the head of chain 0, which is the chain that was."""

    heads: tuple[Anchor, ...]
    at: str
    key_id: str
    token: str  # the compact JWS, as it stands in the file

    @property
    def entries(self) -> int:
        """How many entries the log held then: chains number their entries from 1, gapless."""
        return sum(head.seq for head in self.heads)

    def as_json(self) -> dict[str, Any]:
        return {
            "heads": [head._asdict() for head in self.heads],
            "entries": self.entries,
            "at": self.at,
            "kid": self.key_id,
            "jws": self.token,
        }


class CheckpointKey:
    """The service's own ES256 key for checkpoints (not the assertion key: a checkpoint must not
    be usable as an assertion, nor the other way round); its id is its RFC 7638 thumbprint."""

    __slots__ = ("_key",)

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False) -> CheckpointKey:
        return cls(SigningKey.from_file(path, create=create))

    @property
    def key_id(self) -> str:
        return self._key.key_id

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.private_key.public_key()

    def jwk(self) -> Jwk:
        """The public key as published: what ``audit verify --public-key`` is given."""
        return {**public_jwk(self.public_key()), "kid": self.key_id, "use": "sig", "alg": ALGORITHM}

    def sign(self, heads: Sequence[Anchor], at: dt.datetime) -> Checkpoint:
        """A checkpoint of ``heads`` (each chain once, with at least one entry) at ``at``."""
        ordered = tuple(sorted(heads))
        if not ordered or _malformed(ordered):
            raise ValueError("a checkpoint names each chain once, each with its last entry")
        when = at.astimezone(dt.UTC).isoformat()
        payload = {"heads": [list(head) for head in ordered], "at": when}
        token = jwt.api_jws.PyJWS().encode(
            json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("ascii"),
            self._key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self.key_id, "typ": CHECKPOINT_TYPE},
        )
        return Checkpoint(ordered, when, self.key_id, token)

    def __repr__(self) -> str:
        return f"CheckpointKey(kid={self.key_id!r})"


def public_keys(source: str | os.PathLike[str]) -> dict[str, ec.EllipticCurvePublicKey]:
    """The verifying keys in a file, by key id: a JWK or JWK set (as ``GET /audit/checkpoints``
    answers it) or a PEM public key."""
    data = Path(source).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise KeyMaterialRejected(f"{source} holds no elliptic-curve public key")
        return {jwk_thumbprint(key): key}
    try:
        document = json.loads(data)
        jwks = document.get("keys", [document]) if isinstance(document, dict) else []
        keys = [_from_jwk(jwk) for jwk in jwks]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise KeyMaterialRejected(f"{source} holds no P-256 JWK or PEM public key") from None
    if not keys:
        raise KeyMaterialRejected(f"{source} holds no key")
    return {jwk_thumbprint(key): key for key in keys}


def _from_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    if jwk["kty"] != "EC" or jwk["crv"] != "P-256":
        raise ValueError("not a P-256 key")
    x, y = (int.from_bytes(_unb64(jwk[name]), "big") for name in ("x", "y"))
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_checkpoint(
    token: str, keys: Mapping[str, ec.EllipticCurvePublicKey], *, line: int
) -> Checkpoint:
    """The checkpoint in ``token`` if one of ``keys`` signed it; ``CheckpointRejected`` if not."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise CheckpointRejected(line, "not a JWS") from None
    key = keys.get(str(header.get("kid")))
    if key is None:
        raise CheckpointRejected(line, f"signed by an unknown key {header.get('kid')!r}")
    if header.get("typ") != CHECKPOINT_TYPE:
        raise CheckpointRejected(line, "not an audit checkpoint")
    try:
        payload = jwt.api_jws.PyJWS().decode(token, key, algorithms=[ALGORITHM])
    except jwt.InvalidSignatureError:
        raise CheckpointRejected(line, "the signature does not verify") from None
    except jwt.InvalidTokenError:
        raise CheckpointRejected(line, "not a JWS") from None
    try:
        claims = json.loads(payload)
        heads, at = _heads_of(claims), claims["at"]
        dt.datetime.fromisoformat(at)
    except (ValueError, KeyError, TypeError):
        raise CheckpointRejected(line, "a signed payload that is no checkpoint") from None
    return Checkpoint(heads, at, str(header["kid"]), token)


def _heads_of(claims: Any) -> tuple[Anchor, ...]:
    """The heads a checkpoint's payload names; ``ValueError`` (or a ``KeyError``,
    ``TypeError``) when it names none well."""
    if "heads" in claims:
        heads = tuple(Anchor(*head) for head in claims["heads"] if isinstance(head, list))
        if len(heads) != len(claims["heads"]):
            raise ValueError("a head is a list")
    else:  # signed before the log was partitioned: its one chain is chain 0
        heads = (Anchor(0, claims["seq"], claims["hash"]),)
    if not heads or _malformed(heads) or not isinstance(claims["at"], str):
        raise ValueError("not a checkpoint")
    return heads


def _malformed(heads: tuple[Anchor, ...]) -> bool:
    """Whether ``heads`` is not a list of distinct chains in order, each with entries."""
    chains = [head.chain for head in heads]
    return chains != sorted(set(chains)) or not all(
        type(head.chain) is int
        and 0 <= head.chain < AUDIT_CHAINS
        and type(head.seq) is int
        and head.seq >= 1
        and isinstance(head.hash, str)
        and _HASH.fullmatch(head.hash)
        for head in heads
    )


def verify_all(
    tokens: Sequence[str], keys: Mapping[str, ec.EllipticCurvePublicKey]
) -> list[Checkpoint]:
    """Every line verified (a blank line is skipped, any other line that fails is reported)."""
    return [
        verify_checkpoint(token, keys, line=number)
        for number, token in enumerate(tokens, start=1)
        if token.strip()
    ]


class CheckpointFile:
    """The append-only file of checkpoints in ``folder``. Whole lines are appended with one
    ``write`` on an ``O_APPEND`` descriptor, under an exclusive ``flock`` that spans reading the
    last checkpoint and appending the next, so workers appending at once never interleave and
    never sign the same head twice."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / CHECKPOINT_FILE

    def tokens(self) -> list[str]:
        """Every line, in file order; none when the file does not exist."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            return handle.read().decode("ascii", errors="replace").splitlines()

    @contextlib.contextmanager
    def locked(self) -> Iterator[_LockedFile]:
        """The file held exclusively, made (with its folder) if missing."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield _LockedFile(fd)
        finally:
            os.close(fd)  # releases the lock


class _LockedFile:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def last_token(self) -> str | None:
        """The last complete line, read backwards from the end (the file only grows)."""
        end = os.fstat(self._fd).st_size
        tail = b""
        position = end
        while position > 0:
            start = max(0, position - _BLOCK)
            tail = os.pread(self._fd, position - start, start) + tail
            position = start
            lines = tail.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or position == 0:
                last = lines[-1].strip()
                return last.decode("ascii", errors="replace") if last else None
        return None

    def append(self, checkpoint: Checkpoint) -> None:
        line = checkpoint.token.encode("ascii") + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):  # a regular file takes a whole small write or fails
            raise OSError(f"short write to the checkpoint file ({written} of {len(line)})")
        os.fsync(self._fd)
