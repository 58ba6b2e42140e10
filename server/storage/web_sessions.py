"""The browser sessions of the pages (``web_sessions``): read one, sweep the expired ones."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.storage.web_tables import WebSession


class WebSessionRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, token_digest: str) -> WebSession | None:
        return self._session.get(WebSession, token_digest)

    def add(self, row: WebSession) -> WebSession:
        self._session.add(row)
        return row

    def sweep_expired(self, now: dt.datetime, *, limit: int) -> int:
        """Delete up to ``limit`` sessions that expired by ``now``; how many went."""
        expired = select(WebSession.token_digest).where(WebSession.expires_at <= now)
        stale = list(self._session.scalars(expired.limit(limit)))
        if stale:
            self._session.execute(delete(WebSession).where(WebSession.token_digest.in_(stale)))
        return len(stale)
