"""ES256 signing of the assertions service providers receive, and the JWKS they verify them with."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server.services.errors import IncompleteAssertion, KeyMaterialRejected
from server.services.secretbox import ec_key_file, rsa_key_file

ALGORITHM = "ES256"
RSA_ALGORITHM = "RS256"
# Without these an assertion could be replayed at another provider (aud), for ever (exp), or
# be taken for another issuer's: the wrong-session token of the domain brief starts here.
REQUIRED_CLAIMS = frozenset({"iss", "sub", "aud", "iat", "exp"})

Jwk = dict[str, str]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> Jwk:
    """The RFC 7517 JWK members of a P-256 public key (``kty``, ``crv``, ``x``, ``y``)."""
    _require_p256(public_key.curve)
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of the key: a key id that follows from the key itself."""
    members = json.dumps(public_jwk(public_key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(members.encode("ascii")).digest())


def _require_p256(curve: ec.EllipticCurve) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise KeyMaterialRejected(f"ES256 needs a P-256 key, not {curve.name}")


class SigningKey:
    """The service's P-256 assertion key; its key id is its RFC 7638 thumbprint."""

    __slots__ = ("key_id", "private_key")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        _require_p256(private_key.curve)
        self.private_key = private_key
        self.key_id = jwk_thumbprint(private_key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False) -> SigningKey:
        """Load an unencrypted PKCS#8 PEM key from ``path`` (mode 0600); with ``create``, write a
        new one there first if the file is missing."""
        return cls(ec_key_file(path, create=create))

    def signer(self) -> AssertionSigner:
        return AssertionSigner(self.private_key, self.key_id)

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.key_id!r})"


class AssertionSigner:
    """Signs assertions (OIDC id_token style JWTs) with ES256 and publishes the verifying keys.

    ``retired`` holds the public keys of earlier signing keys with their ids, so tokens signed
    before a rotation still verify until they expire.
    """

    __slots__ = ("_key_id", "_private_key", "_published")

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        key_id: str,
        *,
        retired: Sequence[tuple[ec.EllipticCurvePublicKey, str]] = (),
    ) -> None:
        _require_p256(private_key.curve)
        if not key_id:
            raise KeyMaterialRejected("a signing key needs a key id")
        self._private_key = private_key
        self._key_id = key_id
        published = [(private_key.public_key(), key_id), *retired]
        ids = [kid for _, kid in published]
        if len(set(ids)) != len(ids):
            raise KeyMaterialRejected("key ids in the JWKS must be unique")
        self._published = tuple(published)

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, claims: Mapping[str, Any]) -> str:
        """The compact JWS of ``claims``, with ``kid`` and ``typ`` in its header.

        ``claims`` must hold ``iss``, ``sub``, ``aud``, ``iat`` and ``exp``; otherwise
        ``IncompleteAssertion`` is raised.
        """
        return _signed(claims, self._private_key, ALGORITHM, self._key_id)

    def jwks(self) -> dict[str, list[Jwk]]:
        """The JSON Web Key Set with the current and retired public keys."""
        return {
            "keys": [
                {**public_jwk(key), "kid": kid, "use": "sig", "alg": ALGORITHM}
                for key, kid in self._published
            ]
        }

    def __repr__(self) -> str:
        return f"AssertionSigner(kid={self._key_id!r})"


def _signed(
    claims: Mapping[str, Any],
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    algorithm: str,
    key_id: str,
) -> str:
    """The compact JWS of ``claims`` (which must hold ``REQUIRED_CLAIMS``), with ``kid`` and
    ``typ`` in its header."""
    missing = REQUIRED_CLAIMS - claims.keys()
    if missing:
        raise IncompleteAssertion(missing)
    return jwt.encode(dict(claims), key, algorithm=algorithm, headers={"kid": key_id, "typ": "JWT"})


def _int_b64(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class RsaSigner:
    """RS256 signing of the ID tokens of relying parties registered for it (OpenID Connect
    Discovery asks every provider to offer RS256); its key id is its RFC 7638 thumbprint."""

    __slots__ = ("_private_key", "key_id")

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        if private_key.key_size < 2048:
            raise KeyMaterialRejected("RS256 needs an RSA key of 2048 bits or more")
        self._private_key = private_key
        members = json.dumps(self._members(), sort_keys=True, separators=(",", ":"))
        self.key_id = _b64url(hashlib.sha256(members.encode("ascii")).digest())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False) -> RsaSigner:
        return cls(rsa_key_file(path, create=create))

    def _members(self) -> Jwk:
        numbers = self._private_key.public_key().public_numbers()
        return {"e": _int_b64(numbers.e), "kty": "RSA", "n": _int_b64(numbers.n)}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """As ``AssertionSigner.sign``, with RS256."""
        return _signed(claims, self._private_key, RSA_ALGORITHM, self.key_id)

    def jwk(self) -> Jwk:
        return {**self._members(), "kid": self.key_id, "use": "sig", "alg": RSA_ALGORITHM}

    def __repr__(self) -> str:
        return f"RsaSigner(kid={self.key_id!r})"
