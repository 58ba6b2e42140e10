"""The legacy store's SQL: legacy users, their key cards and code tokens, and the atomic count
of a user's failed logins. Flushes, never commits: the caller owns the transaction."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from sqlalchemy import case, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from server.storage.conflicts import conflicts_as as _conflicts_as
from server.storage.migration_repositories import add_unless_taken
from server.storage.migration_tables import LEGACY_USERS as _users
from server.storage.migration_tables import (
    KeyCardStatus,
    LegacyCodeToken,
    LegacyKeyCard,
    LegacyUser,
)
from server.storage.tables import UtcDateTime


class UserFailures(NamedTuple):
    failures: int
    locked_until: dt.datetime | None


class LegacyUserRepository:
    """Legacy users and what they prove possession with, over one session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, user_id: str) -> LegacyUser | None:
        return self._session.get(LegacyUser, user_id)

    def active_card(self, user_id: str) -> LegacyKeyCard | None:
        """The user's newest active key card."""
        return self._session.scalars(
            select(LegacyKeyCard)
            .where(LegacyKeyCard.user_id == user_id, LegacyKeyCard.status == KeyCardStatus.ACTIVE)
            .order_by(LegacyKeyCard.issued_at.desc())
            .limit(1)
        ).first()

    def active_cards(self, user_id: str) -> list[LegacyKeyCard]:
        return list(
            self._session.scalars(
                select(LegacyKeyCard).where(
                    LegacyKeyCard.user_id == user_id,
                    LegacyKeyCard.status == KeyCardStatus.ACTIVE,
                )
            )
        )

    def has_exhausted_card(self, user_id: str) -> bool:
        spent = self._session.scalar(
            select(LegacyKeyCard.serial)
            .where(
                LegacyKeyCard.user_id == user_id,
                LegacyKeyCard.status == KeyCardStatus.EXHAUSTED,
            )
            .limit(1)
        )
        return spent is not None

    def code_token(self, user_id: str) -> LegacyCodeToken | None:
        """The user's code token (the first by serial)."""
        return self._session.scalars(
            select(LegacyCodeToken)
            .where(LegacyCodeToken.user_id == user_id)
            .order_by(LegacyCodeToken.serial)
            .limit(1)
        ).first()

    def add(self, row: LegacyUser | LegacyKeyCard | LegacyCodeToken) -> bool:
        """Add ``row`` in a savepoint; False if a unique key of it is taken."""
        return add_unless_taken(self._session, row)

    def save(self, kind: str, key: str) -> None:
        """Flush the changes of the ``kind`` row ``key`` (legacy user, key card, code token);
        ``StaleWrite`` if another writer changed it since it was read."""
        with _conflicts_as(kind, key):
            self._session.flush()

    def count_failure(
        self, user: LegacyUser, now: dt.datetime, *, max_failures: int, lockout: dt.timedelta
    ) -> UserFailures:
        """One more failed login of ``user``, locking it for ``lockout`` at ``max_failures``;
        one atomic statement, so concurrent failures all count, whatever else changes the
        row. ``user`` is brought up to date with what was written."""
        failures = _users.c.failures + 1
        until = literal(now + lockout, UtcDateTime())
        row = self._session.execute(
            update(_users)
            .where(_users.c.user_id == user.user_id)
            .values(
                failures=failures,
                locked_until=case((failures >= max_failures, until), else_=_users.c.locked_until),
                version=_users.c.version + 1,
            )
            .returning(_users.c.failures, _users.c.locked_until, _users.c.version)
        ).one()
        for name, value in zip(("failures", "locked_until", "version"), row, strict=True):
            set_committed_value(user, name, value)
        return UserFailures(row.failures, row.locked_until)
