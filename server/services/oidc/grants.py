"""What the OpenID Provider issues, in one session: the authorization request kept while its
login runs, the code the login ends in (used once: a second use revokes what the first
issued), the access token for userinfo, and the client assertion ids already seen. Codes and
tokens are random; only their SHA-256 digests are stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from server.services.authentication import Conclusion
from server.services.login.record import credentials, proofs
from server.services.oidc.levels import acr_of, amr_of
from server.services.oidc.sso import Authenticated, new_sid
from server.storage.errors import NotFound
from server.storage.oidc_repositories import GrantRepository
from server.storage.oidc_tables import OidcCode, OidcRequest, OidcToken
from server.storage.repositories import IdentityRepository
from server.storage.tables import Identity

CODE_LIFETIME = dt.timedelta(minutes=1)
TOKEN_LIFETIME = dt.timedelta(minutes=10)

Audit = Callable[[str, dict[str, Any]], None]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def authenticated(done: Conclusion) -> Authenticated:
    """A completed login as a code is issued for it, in a session of its own (``sid``)."""
    return Authenticated(
        identity_id=done.identity.id,
        transaction_id=done.transaction.id,
        level=done.level,
        amr=amr_of(done.authenticators, len(done.authenticators)),
        auth_time=done.auth_time,
        sid=new_sid(),
        credentials=tuple(sorted(credentials(proofs(done.transaction.factors)), key=str)),
    )


class Grants:
    """The OpenID Provider's requests, codes, tokens and assertion ids of one session."""

    def __init__(
        self,
        session: Session,
        clock: Callable[[], dt.datetime],
        audit: Audit = lambda event, details: None,
    ) -> None:
        self._rows = GrantRepository(session)
        self._identities = IdentityRepository(session)
        self._clock = clock
        self._audit = audit

    # --- the request, while its login runs ---

    def keep_request(
        self,
        transaction_id: uuid.UUID,
        client_id: str,
        params: Mapping[str, str],
        expires_at: dt.datetime,
    ) -> None:
        self._rows.add_request(
            OidcRequest(
                transaction_id=transaction_id,
                client_id=client_id,
                params=dict(params),
                created_at=self._clock(),
                expires_at=expires_at,
            )
        )
        self._audit(
            "oidc.authorize",
            {"transaction": str(transaction_id), "provider": client_id},
        )

    def request(self, transaction_id: uuid.UUID) -> OidcRequest | None:
        """The request waiting for the login ``transaction_id``, until it expires."""
        try:
            found = self._rows.request(transaction_id)
        except NotFound:
            return None
        return found if self._clock() < found.expires_at else None

    def drop_request(self, request: OidcRequest) -> None:
        self._rows.drop_request(request)

    # --- codes ---

    def issue_code(
        self,
        done: Authenticated,
        *,
        client_id: str,
        redirect_uri: str,
        scope: str,
        nonce: str | None,
        code_challenge: str,
        code_challenge_method: str,
        code: str | None = None,
    ) -> str:
        """A code for the login (or single sign-on) ``done`` (``code``: one made already, by
        the library)."""
        value = code or secrets.token_urlsafe(32)
        now = self._clock()
        self._rows.add_code(
            OidcCode(
                code_digest=digest(value),
                client_id=client_id,
                transaction_id=done.transaction_id,
                identity_id=done.identity_id,
                redirect_uri=redirect_uri,
                scope=scope,
                nonce=nonce,
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
                acr=acr_of(done.level),
                amr=list(done.amr),
                auth_time=done.auth_time,
                sid=done.sid,
                claims={},
                created_at=now,
                expires_at=now + CODE_LIFETIME,
            )
        )
        self._audit(
            "oidc.code_issued",
            {"transaction": str(done.transaction_id), "provider": client_id, "sid": done.sid},
        )
        return value

    def code(self, value: str, client_id: str) -> OidcCode | None:
        """The unused, unexpired code ``value`` of ``client_id``. A code used before is
        refused, and every token issued from it is revoked (RFC 6749 section 4.1.2)."""
        row = self._rows.code(digest(value))
        if row is None or row.client_id != client_id:
            return None
        if row.used_at is not None:
            self._reused(row)
            return None
        if self._clock() >= row.expires_at:
            return None
        return row

    def spend_code(self, row: OidcCode) -> bool:
        """Mark ``row`` used; False (and its tokens revoked) when another request used it."""
        if self._rows.spend_code(row.code_digest, self._clock()):
            return True
        self._reused(row)
        return False

    def _reused(self, row: OidcCode) -> None:
        revoked = self._rows.revoke_tokens_of_code(row.code_digest, self._clock())
        self._audit(
            "oidc.code_reused",
            {
                "transaction": str(row.transaction_id),
                "provider": row.client_id,
                "tokens_revoked": revoked,
            },
        )

    # --- access tokens ---

    def issue_token(self, row: OidcCode, scope: str) -> tuple[str, int]:
        """An access token for userinfo from the code ``row``, and its lifetime in seconds."""
        value = secrets.token_urlsafe(32)
        now = self._clock()
        self._rows.add_token(
            OidcToken(
                token_digest=digest(value),
                code_digest=row.code_digest,
                client_id=row.client_id,
                identity_id=row.identity_id,
                scope=scope,
                created_at=now,
                expires_at=now + TOKEN_LIFETIME,
            )
        )
        return value, int(TOKEN_LIFETIME.total_seconds())

    def token(self, value: str) -> OidcToken | None:
        """The access token ``value`` while it is valid (not expired, not revoked)."""
        row = self._rows.token(digest(value))
        if row is None or row.revoked_at is not None or self._clock() >= row.expires_at:
            return None
        return row

    def person(self, row: OidcCode | OidcToken) -> Identity | None:
        """The person a code or token was issued for (None once the identity is gone)."""
        try:
            return self._identities.get(row.identity_id)
        except NotFound:
            return None

    # --- client assertions ---

    def first_use_of_assertion(self, client_id: str, jti: str, expires_at: dt.datetime) -> bool:
        """Whether the assertion id ``jti`` of ``client_id`` is new (it is kept till it
        expires); a replayed assertion is audited."""
        if self._rows.remember_assertion(client_id, jti[:255], expires_at):
            return True
        self._audit("oidc.assertion_replayed", {"provider": client_id})
        return False
