"""The OpenID Provider's rows: registered clients, waiting requests, codes, access tokens and
client assertion ids. Repositories flush but never commit; the caller owns the transaction."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.storage.errors import NotFound
from server.storage.oidc_tables import (
    OidcAssertionId,
    OidcClient,
    OidcCode,
    OidcRequest,
    OidcSsoSession,
    OidcToken,
)


class ClientRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, client: OidcClient) -> OidcClient:
        self._session.add(client)
        self._session.flush()
        return client

    def find(self, client_id: str) -> OidcClient | None:
        return self._session.get(OidcClient, client_id)

    def get(self, client_id: str) -> OidcClient:
        client = self.find(client_id)
        if client is None:
            raise NotFound("oidc client", client_id)
        return client

    def all(self) -> list[OidcClient]:
        return list(self._session.scalars(select(OidcClient).order_by(OidcClient.client_id)))

    def remove(self, client_id: str) -> bool:
        client = self.find(client_id)
        if client is None:
            return False
        self._session.delete(client)
        self._session.flush()
        return True


class GrantRepository:
    """Requests, codes, tokens and assertion ids."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # --- requests waiting for their login ---

    def add_request(self, request: OidcRequest) -> None:
        self._session.add(request)
        self._session.flush()

    def request(self, transaction_id: uuid.UUID) -> OidcRequest:
        found = self._session.get(OidcRequest, transaction_id)
        if found is None:
            raise NotFound("oidc request", transaction_id)
        return found

    def drop_request(self, request: OidcRequest) -> None:
        self._session.delete(request)
        self._session.flush()

    # --- codes ---

    def add_code(self, code: OidcCode) -> None:
        self._session.add(code)
        self._session.flush()

    def code(self, code_digest: str) -> OidcCode | None:
        return self._session.get(OidcCode, code_digest)

    def spend_code(self, code_digest: str, now: dt.datetime) -> bool:
        """Mark the code used; False when it was used already (by a concurrent request too:
        the update counts only a row still unused)."""
        result = self._session.execute(
            update(OidcCode)
            .where(OidcCode.code_digest == code_digest, OidcCode.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        self._session.expire_all()
        return bool(getattr(result, "rowcount", 0))

    # --- access tokens ---

    def add_token(self, token: OidcToken) -> None:
        self._session.add(token)
        self._session.flush()

    def token(self, token_digest: str) -> OidcToken | None:
        return self._session.get(OidcToken, token_digest)

    def revoke_tokens_of_code(self, code_digest: str, now: dt.datetime) -> int:
        result = self._session.execute(
            update(OidcToken)
            .where(OidcToken.code_digest == code_digest, OidcToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        self._session.expire_all()
        return int(getattr(result, "rowcount", 0))

    # --- client assertion ids ---

    def remember_assertion(self, client_id: str, jti: str, expires_at: dt.datetime) -> bool:
        """Keep ``jti`` of ``client_id`` until ``expires_at``; False when it was seen before."""
        if self._session.get(OidcAssertionId, (client_id, jti)) is not None:
            return False
        try:
            with self._session.begin_nested():
                self._session.add(
                    OidcAssertionId(client_id=client_id, jti=jti, expires_at=expires_at)
                )
        except IntegrityError:
            return False
        return True


class SsoRepository:
    """Single sign-on sessions."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, sso: OidcSsoSession) -> None:
        self._session.add(sso)
        self._session.flush()

    def get(self, sid: str) -> OidcSsoSession | None:
        return self._session.get(OidcSsoSession, sid)

    def of_browser(self, binding: str, now: dt.datetime) -> list[OidcSsoSession]:
        """The browser's sessions that have neither ended nor expired."""
        return list(
            self._session.scalars(
                select(OidcSsoSession).where(
                    OidcSsoSession.browser_binding == binding,
                    OidcSsoSession.ended_at.is_(None),
                    OidcSsoSession.expires_at > now,
                )
            )
        )

    def flush(self) -> None:
        self._session.flush()
