"""Decaying failure counters (``throttles``): each failure is one atomic upsert, so workers
and concurrent requests never lose a count."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection
from typing import NamedTuple, cast

from sqlalchemy import Select, Table, bindparam, case, delete, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from server.storage.conflicts import conflicts_as
from server.storage.tables import RateLimit, Throttle, UtcDateTime
from server.storage.upserts import upsert_insert

_throttles = cast(Table, Throttle.__table__)
_rate_limits = cast(Table, RateLimit.__table__)


class ThrottleState(NamedTuple):
    """A counter as read: when it is empty again (ms since the epoch) and its failures since
    it was last empty."""

    tat_ms: int
    failures: int


@functools.cache
def _states(count: int) -> Select[tuple[str, int, int]]:
    # One bound parameter per key rather than an "expanding" IN, rewritten at every execution.
    keys: list[BindParameter[str]] = [bindparam(f"key{n}") for n in range(count)]
    return select(_throttles.c.key, _throttles.c.tat_ms, _throttles.c.failures).where(
        _throttles.c.key.in_(keys)
    )


class ThrottleRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def states(self, keys: Collection[str]) -> dict[str, ThrottleState]:
        """The counters of ``keys`` that have a row, in one statement."""
        if not keys:
            return {}
        parameters = {f"key{n}": key for n, key in enumerate(keys)}
        rows = self._session.connection().execute(_states(len(keys)), parameters)
        return {row.key: ThrottleState(row.tat_ms, row.failures) for row in rows}

    def charge(self, key: str, now_ms: int, interval_ms: int) -> ThrottleState:
        """Count one failure: the counter moves on by ``interval_ms`` from ``now_ms`` or from
        where it stood, whichever is later; its run of failures restarts once it was empty."""
        table = _throttles
        now = literal(now_ms)
        running = table.c.tat_ms > now
        insert = upsert_insert(self._session, Throttle).values(
            key=key, tat_ms=now_ms + interval_ms, failures=1
        )
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "tat_ms": case((running, table.c.tat_ms), else_=now) + literal(interval_ms),
                "failures": case((running, table.c.failures + 1), else_=literal(1)),
            },
        ).returning(table.c.tat_ms, table.c.failures)
        row = self._session.execute(statement).one()
        return ThrottleState(row.tat_ms, row.failures)

    def mark(self, key: str, until_ms: int) -> None:
        """Keep ``key`` until ``until_ms`` with no failures (a remembered fact, not a count)."""
        insert = upsert_insert(self._session, Throttle).values(key=key, tat_ms=until_ms, failures=0)
        self._session.execute(
            insert.on_conflict_do_update(
                index_elements=[_throttles.c.key], set_={"tat_ms": until_ms, "failures": 0}
            )
        )

    def clear(self, key: str) -> None:
        self._session.execute(delete(Throttle).where(Throttle.key == key))

    def clear_prefix(self, prefix: str) -> int:
        """Remove every counter whose key starts with ``prefix``: how many there were."""
        result = self._session.execute(
            delete(Throttle).where(Throttle.key.startswith(prefix, autoescape=True))
        )
        return int(getattr(result, "rowcount", 0))

    def with_prefix(self, prefix: str) -> dict[str, ThrottleState]:
        rows = self._session.execute(
            select(_throttles.c.key, _throttles.c.tat_ms, _throttles.c.failures).where(
                _throttles.c.key.startswith(prefix, autoescape=True)
            )
        )
        return {row.key: ThrottleState(row.tat_ms, row.failures) for row in rows}


# The operator console's sign-in counters (fixed windows that lock for a while).


@functools.cache
def _limit_states(count: int) -> Select[tuple[str, int, dt.datetime | None]]:
    # One bound parameter per key rather than an "expanding" IN, whose SQL is rewritten at
    # every execution.
    keys: list[BindParameter[str]] = [bindparam(f"key{n}") for n in range(count)]
    return select(_rate_limits.c.key, _rate_limits.c.failures, _rate_limits.c.locked_until).where(
        _rate_limits.c.key.in_(keys)
    )


def source_limit_key(source: str) -> str:
    """The rate-limit key of the failures from one source (a client address): the operator
    console's sign-in throttle."""
    return f"source:{source}"


class LimitState(NamedTuple):
    failures: int
    locked_until: dt.datetime | None


class RateLimitRepository:
    """Failure counters shared by every worker; each update is one atomic upsert."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def record_failure(
        self,
        key: str,
        now: dt.datetime,
        *,
        window: dt.timedelta,
        max_failures: int,
        lockout: dt.timedelta,
    ) -> RateLimit:
        """Count one failure in the window that began within ``window`` of ``now`` (or start
        a new one); reaching ``max_failures`` sets ``locked_until = now + lockout``."""
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        table = RateLimit.__table__
        when = UtcDateTime()
        expired = table.c.window_start <= literal(now - window, when)
        failures = case((expired, 1), else_=table.c.failures + 1)
        locked_until = literal(now + lockout, when)
        insert = upsert_insert(self._session, RateLimit).values(
            key=key,
            failures=1,
            window_start=now,
            locked_until=locked_until if max_failures <= 1 else None,
        )
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "failures": failures,
                "window_start": case((expired, literal(now, when)), else_=table.c.window_start),
                "locked_until": case(
                    (failures >= max_failures, locked_until), else_=table.c.locked_until
                ),
            },
        ).returning(RateLimit)
        with conflicts_as("rate limit", key):
            row = self._session.scalars(
                statement, execution_options={"populate_existing": True}
            ).one()
        return row

    def reset(self, key: str) -> None:
        self._session.execute(delete(RateLimit).where(RateLimit.key == key))

    def states(self, keys: Collection[str]) -> dict[str, LimitState]:
        """The current counters of ``keys`` that have any, in one statement."""
        statement = _limit_states(len(keys))
        parameters = {f"key{n}": key for n, key in enumerate(keys)}
        rows = self._session.connection().execute(statement, parameters)
        return {row.key: LimitState(row.failures, row.locked_until) for row in rows}

    def get(self, key: str) -> RateLimit | None:
        return self._session.get(RateLimit, key, populate_existing=True)
