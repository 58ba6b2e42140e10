"""``private_key_jwt`` (RFC 7523, OpenID Connect Core 9): Authlib's client assertion check,
subclassed so that only ES256 and RS256 signatures by the client's registered keys count
(``alg=none``, and HS256 made with a public key as its secret, are refused), the audience
may be the issuer or the token endpoint, and each ``jti`` is accepted once."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from server.services.oidc.registry import ProviderRejected, public_key_set

if TYPE_CHECKING:
    from server.oidc.provider import Provider, RelyingParty

ALGORITHMS = ["ES256", "RS256"]
JWKS_CACHE_S = 300.0
_fetched: dict[str, tuple[float, dict[str, Any]]] = {}
_fetched_lock = threading.Lock()


def fetch_key_set(uri: str) -> dict[str, Any]:
    """The JWK set a client publishes at ``uri``, kept a few minutes."""
    now = time.monotonic()
    with _fetched_lock:
        kept = _fetched.get(uri)
    if kept is not None and now - kept[0] < JWKS_CACHE_S:
        return kept[1]
    try:
        answer = httpx.get(uri, timeout=5, follow_redirects=False)
        answer.raise_for_status()
        document = public_key_set(answer.json())
    except (httpx.HTTPError, ValueError, ProviderRejected) as exc:
        raise InvalidClientError(description="The client's JWKS cannot be read.") from exc
    with _fetched_lock:
        _fetched[uri] = (now, document)
    return document


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, provider: Provider) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.provider = provider

    def get_audiences(self) -> list[str]:
        return [self.provider.issuer, self.provider.url("/token")]

    def resolve_client_public_key(self, client: RelyingParty) -> KeySet:
        row = client.row
        document = row.jwks if row.jwks is not None else None
        if document is None and row.jwks_uri is not None:
            document = fetch_key_set(row.jwks_uri)
        if document is None:
            raise InvalidClientError(description="The client has no registered keys.")
        return KeySet.import_key_set(document)  # type: ignore[arg-type]

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(description="The client assertion is not valid.") from exc
        except (ValueError, TypeError) as exc:
            raise InvalidClientError(description="The client assertion cannot be read.") from exc
        self.verify_claims(token.claims)
        return token.claims

    def validate_jti(self, claims: dict[str, Any], jti: Any) -> bool:
        if not isinstance(jti, str) or not jti:
            return False
        expires = claims.get("exp")
        if not isinstance(expires, int):
            return False
        until = dt.datetime.fromtimestamp(expires + self.leeway, dt.UTC)
        return self.provider.grants.first_use_of_assertion(str(claims["sub"]), jti, until)
