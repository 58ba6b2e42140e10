"""The sweep's SQL: what expired removed a batch at a time (each batch a short transaction, so
a SQLite writer never waits long behind it), and the lease that lets one process at a time
sweep. The audit log is never touched here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from server.domain.model import CeremonyKind
from server.storage.oidc_tables import (
    OidcAssertionId,
    OidcCode,
    OidcRequest,
    OidcSsoSession,
    OidcToken,
)
from server.storage.tables import AuthTransaction, Base, MaintenanceLease, RateLimit, Throttle
from server.storage.upserts import upsert_insert
from server.storage.web_tables import WebSession

_leases = cast(Table, MaintenanceLease.__table__)


class SweepRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def transactions(
        self, kinds: Collection[CeremonyKind], expired_before: dt.datetime, *, limit: int
    ) -> int:
        """Remove up to ``limit`` logins or ceremonies of ``kinds`` that expired before
        ``expired_before``, whatever their state; how many went."""
        condition = AuthTransaction.kind.in_(list(kinds)) & (
            AuthTransaction.expires_at < expired_before
        )
        return self._delete(AuthTransaction, AuthTransaction.id, condition, limit)

    def sessions(self, now: dt.datetime, *, limit: int) -> int:
        """Remove up to ``limit`` browser sessions that ended by ``now``."""
        return self._delete(
            WebSession, WebSession.token_digest, WebSession.expires_at <= now, limit
        )

    def throttles(self, now_ms: int, *, limit: int) -> int:
        """Remove up to ``limit`` counters that have drained by ``now_ms`` (a drained counter
        counts as none: the next failure starts a new run either way) and remembered facts
        whose time is over."""
        return self._delete(Throttle, Throttle.key, Throttle.tat_ms <= now_ms, limit)

    def rate_limits(self, window_began_before: dt.datetime, now: dt.datetime, *, limit: int) -> int:
        """Remove up to ``limit`` fixed-window counters whose window began before
        ``window_began_before`` (the next failure starts a new window) and that lock nothing."""
        condition = (RateLimit.window_start <= window_began_before) & or_(
            RateLimit.locked_until.is_(None), RateLimit.locked_until <= now
        )
        return self._delete(RateLimit, RateLimit.key, condition, limit)

    def _delete(
        self,
        model: type[Base],
        key: InstrumentedAttribute[Any],
        condition: ColumnElement[bool],
        limit: int,
    ) -> int:
        # The rows are chosen by their key first: DELETE has no LIMIT on PostgreSQL.
        chosen = select(key).where(condition).limit(limit)
        result = self._session.execute(
            # The condition again: a key that is not unique alone (an assertion id of several
            # clients) must not take another row with it.
            delete(model).where(key.in_(chosen), condition),
            execution_options={"synchronize_session": False},
        )
        return int(getattr(result, "rowcount", 0))

    def oidc(self, now: dt.datetime, *, limit: int) -> int:
        """Remove up to ``limit`` of each of the OpenID Provider's rows that expired by
        ``now``: waiting requests, codes, access tokens, client assertion ids and single
        sign-on sessions."""
        removed = 0
        for model, key in (
            (OidcRequest, OidcRequest.transaction_id),
            (OidcCode, OidcCode.code_digest),
            (OidcToken, OidcToken.token_digest),
            (OidcAssertionId, OidcAssertionId.jti),
            (OidcSsoSession, OidcSsoSession.sid),
        ):
            removed += self._delete(model, key, model.expires_at <= now, limit)
        return removed

    def take_lease(self, task: str, holder: str, now: dt.datetime, until: dt.datetime) -> bool:
        """Take ``task`` for ``holder`` until ``until``, if nobody holds it at ``now``: one
        atomic upsert, so of processes asking at once one gets it."""
        statement = (
            upsert_insert(self._session, MaintenanceLease)
            .values(task=task, holder=holder, until=until)
            .on_conflict_do_update(
                index_elements=[_leases.c.task],
                set_={"holder": holder, "until": until},
                where=_leases.c.until <= now,
            )
            .returning(_leases.c.task)
        )
        return self._session.execute(statement).first() is not None
