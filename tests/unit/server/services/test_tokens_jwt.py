"""AssertionSigner: ES256 assertions with a kid, verified by PyJWT through the published JWKS."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from server.services.errors import IncompleteAssertion, KeyMaterialRejected
from server.services.tokens_jwt import (
    AssertionSigner,
    SigningKey,
    jwk_thumbprint,
    public_jwk,
)

AUDIENCE = "https://sp.example"


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "https://eid.example",
        "sub": "2b8f6c1e-0d5a-8c3b-9f11-5a7e3d2c1b00",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "loa": "substantial",
        "amr": ["pwd", "otp"],
        **extra,
    }


def _verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["ES256", "RS256"], audience=AUDIENCE
    )
    return claims


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def test_sign_verifies_with_the_jwks(key: SigningKey) -> None:
    signer = key.signer()
    claims = _claims()
    token = signer.sign(claims)
    assert _verify(token, signer.jwks()) == claims
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": key.key_id, "typ": "JWT"}


def test_token_from_another_key_does_not_verify(key: SigningKey) -> None:
    forger = SigningKey.generate()
    token = AssertionSigner(forger.private_key, key.key_id).sign(_claims())
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(token, key.signer().jwks())


def test_jwks_publishes_the_public_key_only(key: SigningKey) -> None:
    (jwk,) = key.signer().jwks()["keys"]
    assert jwk == {
        **public_jwk(key.private_key.public_key()),
        "kid": key.key_id,
        "use": "sig",
        "alg": "ES256",
    }
    assert "d" not in jwk
    reference = ECAlgorithm.to_jwk(key.private_key.public_key(), as_dict=True)
    assert {name: jwk[name] for name in ("kty", "crv", "x", "y")} == {
        name: reference[name] for name in ("kty", "crv", "x", "y")
    }


def test_key_id_is_the_rfc7638_thumbprint(key: SigningKey) -> None:
    assert key.key_id == jwk_thumbprint(key.private_key.public_key())
    assert len(key.key_id) == 43  # base64url of 32 bytes, unpadded
    assert SigningKey(key.private_key).key_id == key.key_id


def test_retired_keys_stay_in_the_jwks(key: SigningKey) -> None:
    old = SigningKey.generate()
    old_token = old.signer().sign(_claims())
    signer = AssertionSigner(
        key.private_key, key.key_id, retired=[(old.private_key.public_key(), old.key_id)]
    )
    jwks = signer.jwks()
    assert [jwk["kid"] for jwk in jwks["keys"]] == [key.key_id, old.key_id]
    assert _verify(old_token, jwks)["aud"] == AUDIENCE
    assert jwt.get_unverified_header(signer.sign(_claims()))["kid"] == key.key_id


def test_duplicate_key_ids_are_refused(key: SigningKey) -> None:
    with pytest.raises(KeyMaterialRejected):
        AssertionSigner(
            key.private_key, "k1", retired=[(SigningKey.generate().private_key.public_key(), "k1")]
        )


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "iat", "exp"])
def test_sign_without_a_required_claim_raises_incomplete_assertion(
    key: SigningKey, claim: str
) -> None:
    claims = _claims()
    del claims[claim]
    with pytest.raises(IncompleteAssertion) as caught:
        key.signer().sign(claims)
    assert caught.value.missing == (claim,)


def test_other_curves_are_refused() -> None:
    with pytest.raises(KeyMaterialRejected, match="P-256"):
        SigningKey(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(KeyMaterialRejected, match="P-256"):
        AssertionSigner(ec.generate_private_key(ec.SECP384R1()), "kid")


def test_repr_has_no_private_key(key: SigningKey) -> None:
    private = key.private_key.private_numbers().private_value
    for text in (repr(key), repr(key.signer())):
        assert key.key_id in text
        assert str(private) not in text
        assert "PRIVATE" not in text


def test_from_file_create_writes_an_owner_only_pem(tmp_path: Path) -> None:
    path = tmp_path / "assertion.pem"
    key = SigningKey.from_file(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert SigningKey.from_file(path).key_id == key.key_id
    assert SigningKey.from_file(path, create=True).key_id == key.key_id


def test_from_file_missing_without_create_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialRejected, match="no key file"):
        SigningKey.from_file(tmp_path / "missing.pem")


def test_from_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "assertion.pem"
    SigningKey.from_file(path, create=True)
    path.chmod(0o644)
    with pytest.raises(KeyMaterialRejected, match="chmod 600"):
        SigningKey.from_file(path)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_from_file_refuses_non_pem(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialRejected, match="PEM"):
        SigningKey.from_file(_write(tmp_path / "k.pem", b"not a key"))


def test_from_file_refuses_encrypted_pem(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    with pytest.raises(KeyMaterialRejected, match="PEM"):
        SigningKey.from_file(_write(tmp_path / "k.pem", pem))


def test_from_file_refuses_rsa(tmp_path: Path) -> None:
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyMaterialRejected, match="elliptic"):
        SigningKey.from_file(_write(tmp_path / "k.pem", pem))


def test_rs256_signs_what_its_jwk_verifies_and_publishes_no_private_member(
    tmp_path: Path,
) -> None:
    from server.services.tokens_jwt import RsaSigner

    signer = RsaSigner.from_file(tmp_path / "rsa.pem", create=True)
    claims = {"iss": "https://op", "sub": "s", "aud": AUDIENCE, "iat": 1, "exp": 2**31}
    token = signer.sign(claims)
    jwk = signer.jwk()
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": jwk["kid"], "typ": "JWT"}
    assert set(jwk) == {"kty", "n", "e", "kid", "use", "alg"}
    assert _verify(token, {"keys": [jwk]}) == claims
    assert RsaSigner.from_file(tmp_path / "rsa.pem").key_id == signer.key_id  # kept, same id


def test_an_rsa_key_under_2048_bits_is_refused(tmp_path: Path) -> None:
    from server.services.tokens_jwt import RsaSigner

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refused
    path = tmp_path / "small.pem"
    path.write_bytes(
        small.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(KeyMaterialRejected):
        RsaSigner.from_file(path)
