"""Relying-party keys for the OpenID Provider's tests."""

from __future__ import annotations

from joserfc.jwk import ECKey, RSAKey


def ec_key(kid: str = "rp-ec") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig"}, private=True)


def rsa_key(kid: str = "rp-rsa") -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"}, private=True)
