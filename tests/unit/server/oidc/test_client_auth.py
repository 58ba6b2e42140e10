"""``private_key_jwt`` at the token endpoint: ES256 and RS256 by the client's registered key,
the audience the issuer or the token endpoint, each assertion once; ``alg=none``, HS256 with
the public key as its secret, expired assertions and another's key refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest

from tests.unit.server.oidc.harness import (
    ISSUER,
    RP,
    RSA_RP,
    TOKEN_URL,
    Op,
    assertion,
    authorized,
    token_request,
)
from tests.unit.server.oidc.keys import ec_key

pytestmark = pytest.mark.databases("sqlite")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claims(client_id: str = RP, **changes: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
        **changes,
    }


def _unsigned(claims: dict[str, object]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _hs256_with_public_key(op: Op) -> str:
    """The classic confusion: HMAC keyed with the client's *public* key, which anyone has."""
    public = json.dumps(op.keys[RP].as_dict(private=False), sort_keys=True).encode()
    header = _b64(json.dumps({"alg": "HS256", "kid": op.keys[RP].kid}).encode())
    body = _b64(json.dumps(_claims()).encode())
    signature = hmac.digest(public, f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{_b64(signature)}"


@pytest.mark.parametrize("aud", [TOKEN_URL, ISSUER])
def test_the_audience_may_be_the_token_endpoint_or_the_issuer(op: Op, aud: str) -> None:
    done = authorized(op)
    answer = token_request(op, done, client_assertion=assertion(RP, op.keys[RP], aud=aud))
    assert answer.status_code == 200, answer.text


def test_an_rs256_client_is_accepted(op: Op) -> None:
    done = authorized(op, RSA_RP)
    answer = token_request(op, done, client_id=RSA_RP)
    assert answer.status_code == 200, answer.text


@pytest.mark.databases("sqlite", "postgresql")
def test_an_assertion_is_accepted_once(op: Op) -> None:
    used = assertion(RP, op.keys[RP])
    assert token_request(op, authorized(op), client_assertion=used).status_code == 200
    replayed = token_request(op, authorized(op), client_assertion=used)
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "made",
    [
        "alg-none",
        "hs256-public-key",
        "expired",
        "other-audience",
        "other-key",
        "issuer-not-subject",
        "another-clients-subject",
        "no-jti",
        "garbage",
    ],
)
def test_bad_assertions_are_refused(op: Op, made: str) -> None:
    key = op.keys[RP]
    client_assertion = {
        "alg-none": lambda: _unsigned(_claims()),
        "hs256-public-key": lambda: _hs256_with_public_key(op),
        "expired": lambda: assertion(RP, key, lifetime=-120),
        "other-audience": lambda: assertion(RP, key, aud="https://elsewhere.example/token"),
        "other-key": lambda: assertion(RP, ec_key(key.kid or "rp-ec")),
        "issuer-not-subject": lambda: assertion(RP, key, iss=RSA_RP),
        "another-clients-subject": lambda: assertion(RSA_RP, key),
        "no-jti": lambda: _signed_without_jti(op),
        "garbage": lambda: "not.a.jwt",
    }[made]()
    done = authorized(op)
    answer = token_request(op, done, client_assertion=client_assertion)
    assert answer.status_code in (400, 401), answer.text
    assert answer.json()["error"] == "invalid_client"
    # The code was not spent by the refused request: the client's own assertion still works.
    assert token_request(op, done).status_code == 200
    events = _audited(op)
    assert ("oidc.token_refused", "invalid_client") in events
    assert ("oidc.token_issued", None) in events


def _audited(op: Op) -> list[tuple[str, object]]:
    from server.services.audit import AuditLog

    with op.browser.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        return [(entry.event, entry.details.get("error")) for entry in AuditLog(session).tail(20)]


def _signed_without_jti(op: Op) -> str:
    from joserfc import jwt

    claims = _claims()
    del claims["jti"]
    key = op.keys[RP]
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])
