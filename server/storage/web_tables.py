"""Tables of the web pages: browser sessions. Same metadata as ``tables``; created only by
migrations.

A browser session is kept server-side: the cookie carries a random token and the table keeps
only its SHA-256 digest, so a database dump cannot be replayed as a cookie. The CSRF token of
the session's forms lives beside it. ``kind`` says who the browser is: nobody yet, a citizen
after a login, or an operator after signing in to the console.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.storage.tables import Base, Json, UtcDateTime, _enum, utcnow


class BrowserKind(enum.StrEnum):
    ANONYMOUS = "anonymous"
    CITIZEN = "citizen"
    OPERATOR = "operator"


class WebSession(Base):
    __tablename__ = "web_sessions"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[BrowserKind] = mapped_column(_enum(BrowserKind, "browser_kind"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    lang: Mapped[str] = mapped_column(String(8))
    identity_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identities.id"), index=True)
    # The assurance level the citizen's login reached (low, substantial, high).
    level: Mapped[str | None] = mapped_column(String(16))
    # An operator's API key id, name and roles ("+"-joined) when the operator signed in; each
    # request takes the roles the key has now.
    operator_key: Mapped[str | None] = mapped_column(String(64))
    operator_name: Mapped[str | None] = mapped_column(String(128))
    operator_role: Mapped[str | None] = mapped_column(String(128))
    # Small page state: the login a page started, a ceremony's state id, a flash message.
    data: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
