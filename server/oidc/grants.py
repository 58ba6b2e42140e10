"""Authlib's authorization code grant, PKCE and OpenID Connect extensions, subclassed for this
service: code flow only, PKCE with S256 on every request, codes kept as digests and used once,
and the ID token signed ES256 with the service's assertion key."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from authlib.oidc.core.util import create_half_hash

from server.services.oidc.claims import id_token_claims
from server.storage.oidc_tables import OidcCode
from server.storage.tables import Identity

if TYPE_CHECKING:
    from server.oidc.provider import Provider, Request

ID_TOKEN_LIFETIME = dt.timedelta(minutes=5)


class IssuedCode(AuthorizationCodeMixin):  # type: ignore[misc]
    """A stored code as Authlib reads it."""

    def __init__(self, row: OidcCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return int(self.row.auth_time.timestamp())

    def get_acr(self) -> str:
        return self.row.acr

    def get_amr(self) -> list[str]:
        return list(self.row.amr)


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    """The code grant: clients authenticate with their keys (``private_key_jwt``) or, in
    development, a secret (``client_secret_basic``); never as public clients."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt", "client_secret_basic"]  # noqa: RUF012
    server: Provider

    def save_authorization_code(self, code: str, request: Request) -> None:
        done = request.user  # an Authenticated: the login's, or the SSO session's
        payload = request.payload.data
        self.server.grants.issue_code(
            done,
            client_id=request.client.get_client_id(),
            redirect_uri=payload["redirect_uri"],
            scope=request.scope or "",
            nonce=payload.get("nonce") or None,
            code_challenge=payload["code_challenge"],
            code_challenge_method=payload["code_challenge_method"],
            code=code,
        )

    def query_authorization_code(self, code: str, client: Any) -> IssuedCode | None:
        if not isinstance(code, str) or not code:
            return None
        row = self.server.grants.code(code, client.get_client_id())
        return None if row is None else IssuedCode(row)

    def delete_authorization_code(self, authorization_code: IssuedCode) -> None:
        if not self.server.grants.spend_code(authorization_code.row):
            raise InvalidGrantError("The code was used already.")

    def authenticate_user(self, authorization_code: IssuedCode) -> Identity | None:
        return self.server.grants.person(authorization_code.row)

    def generate_token(
        self,
        user: Any = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """An opaque access token for userinfo, kept as a digest; no refresh token."""
        row = self.request.authorization_code.row
        token, lifetime = self.server.grants.issue_token(row, scope or "")
        self.server.audit(
            "oidc.token_issued",
            {"transaction": str(row.transaction_id), "provider": row.client_id, "sid": row.sid},
        )
        return {
            "token_type": "Bearer",
            "access_token": token,
            "expires_in": lifetime,
            "scope": scope or "",
        }


class S256Required(CodeChallenge):  # type: ignore[misc]
    """PKCE on every request, S256 only: a request without a challenge, or with "plain", is
    refused; so is a code_verifier for a code issued without a challenge (Authlib's own)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012

    def validate_code_challenge(self, grant: CodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (S256).")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


class IdToken(OpenIDCode):  # type: ignore[misc]
    """The ID token of a code: made by ``services.oidc.claims`` and signed with the service's
    ES256 assertion key, or its RS256 key for a provider registered so (both in its JWKS). A
    nonce is optional in the code flow."""

    def __init__(self) -> None:
        super().__init__(require_nonce=False)

    def exists_nonce(self, nonce: str, request: Request) -> bool:
        return False  # the nonce is the relying party's to check; codes are used once

    def encode_id_token(self, token: dict[str, Any], request: Request) -> str:
        server: Provider = request.provider
        code: IssuedCode = request.authorization_code
        claims = id_token_claims(
            issuer=server.issuer,
            client=request.client.row,
            identity=request.user,
            code=code.row,
            pseudonyms=server.services.pseudonyms,
            now=server.now(),
            lifetime=ID_TOKEN_LIFETIME,
        )
        alg = request.client.row.id_token_alg
        at_hash = create_half_hash(token["access_token"], alg)
        if at_hash is not None:
            claims["at_hash"] = at_hash.decode("ascii")
        if alg == "RS256":
            return server.services.rsa_signer.sign(claims)
        return server.services.signer.sign(claims)
