"""Credential key pairs of the simulated FIDO2 key and their credential IDs: private keys
never leave the key except sealed (AES-256-GCM under a per-device master key, bound to the
RP ID hash) inside a credential ID."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ES256 = -7
EDDSA = -8
_ALG_CODES = {ES256: 1, EDDSA: 2}
ALGORITHMS = frozenset(_ALG_CODES)  # the COSE algorithms a credential can have

# Credential ID: format byte, GCM nonce, sealed (algorithm code, flags, 32-byte key), tag.
_CRED_FORMAT = 0x01
_CRED_DISCOVERABLE = 0x01
CREDENTIAL_ID_LENGTH = 1 + 12 + 2 + 32 + 16


PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def cose_key(public: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> dict[int, Any]:
    """A credential public key as a COSE_Key (RFC 8152 13.1 and 13.2)."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        return {
            1: 2,  # kty EC2
            3: ES256,
            -1: 1,  # crv P-256
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {1: 1, 3: EDDSA, -1: 6, -2: raw}  # kty OKP, crv Ed25519


@dataclass(frozen=True)
class CredentialKey:
    alg: int
    discoverable: bool
    private: PrivateKey

    @classmethod
    def generate(cls, alg: int, discoverable: bool) -> CredentialKey:
        private: PrivateKey
        if alg == ES256:
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        return cls(alg, discoverable, private)

    def raw(self) -> bytes:
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return self.private.private_numbers().private_value.to_bytes(32, "big")
        return self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def cose_public(self) -> dict[int, Any]:
        return cose_key(self.private.public_key())

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return self.private.sign(message, ec.ECDSA(hashes.SHA256()))
        return self.private.sign(message)


def seal_credential(master_key: bytes, rp_id_hash: bytes, key: CredentialKey) -> bytes:
    nonce = secrets.token_bytes(12)
    flags = _CRED_DISCOVERABLE if key.discoverable else 0
    plaintext = bytes((_ALG_CODES[key.alg], flags)) + key.raw()
    sealed = AESGCM(master_key).encrypt(nonce, plaintext, bytes((_CRED_FORMAT,)) + rp_id_hash)
    return bytes((_CRED_FORMAT,)) + nonce + sealed


def open_credential(
    master_key: bytes, rp_id_hash: bytes, credential_id: bytes
) -> CredentialKey | None:
    """The key inside a credential ID this device sealed for this RP, else None."""
    if len(credential_id) != CREDENTIAL_ID_LENGTH or credential_id[0] != _CRED_FORMAT:
        return None
    try:
        plaintext = AESGCM(master_key).decrypt(
            credential_id[1:13], credential_id[13:], bytes((_CRED_FORMAT,)) + rp_id_hash
        )
    except InvalidTag:
        return None
    code, flags, raw = plaintext[0], plaintext[1], plaintext[2:]
    private: PrivateKey
    if code == _ALG_CODES[ES256]:
        private = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        alg = ES256
    elif code == _ALG_CODES[EDDSA]:
        private = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        alg = EDDSA
    else:
        return None
    return CredentialKey(alg, bool(flags & _CRED_DISCOVERABLE), private)
