"""The browser sessions of the pages (``web_sessions``): read one, store one (the sweep removes
the ended ones: ``sweep_repositories``)."""

from __future__ import annotations

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
