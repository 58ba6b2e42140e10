"""The weekly migration report's SQL: the waves begun by a day, and GROUP BY counts over the
flows' events before a moment (a SQL aggregate each; flows are never read one by one)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, NamedTuple

from sqlalchemy import (
    Column,
    ColumnElement,
    Integer,
    MetaData,
    Row,
    Select,
    String,
    Table,
    Uuid,
    and_,
    case,
    distinct,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session

from server.storage.migration_events import COMPLETED, DROPPED, FAILED, KIND_STEPS, OK, REMINDED
from server.storage.migration_tables import MIGRATION_EVENTS as _events
from server.storage.migration_tables import MIGRATION_INVITATIONS as _invitations
from server.storage.migration_tables import MIGRATION_WAVES as _waves
from server.storage.tables import UtcDateTime


class FlowGroup(NamedTuple):
    """Flows of one wave in one status (``completed``, ``dropped``, ``in_progress``) with the
    same channels, last step and last kind."""

    wave_id: uuid.UUID | None
    status: str
    first_channel: str
    last_channel: str
    completed_channel: str | None
    last_step: str
    last_kind: str | None
    flows: int


def waves_begun_by(session: Session, day: dt.date) -> list[Row[Any]]:
    """Every wave whose start date is ``day`` or before, by start date then name."""
    return list(
        session.execute(
            select(_waves)
            .where(_waves.c.starts_on <= day)
            .order_by(_waves.c.starts_on, _waves.c.name)
        )
    )


class ReportQueries:
    """The report's SQL: a few GROUP BY statements over the events before ``as_of``.

    Each flow's state (first and last event, completion) is worked out once, with window
    functions, into a temporary table that the other statements group; it is dropped by
    ``close`` or with the transaction. A flow's wave is the one its events name (the
    events carry it for this report), so the report reads the events, not the flows."""

    def __init__(self, session: Session, as_of: dt.datetime, abandon_after: dt.timedelta) -> None:
        self._session = session
        self._as_of = as_of
        self._stale = as_of - abandon_after
        self._states = Table(
            f"report_flows_{uuid.uuid4().hex[:12]}",
            MetaData(),
            Column("flow_id", Uuid()),
            Column("wave_id", Uuid()),
            Column("first_at", UtcDateTime()),
            Column("last_at", UtcDateTime()),
            Column("first_channel", String(32)),
            Column("last_channel", String(32)),
            Column("last_step", String(32)),
            Column("last_outcome", String(16)),
            Column("last_kind", String(32)),
            Column("completed", Integer()),
            Column("completed_at", UtcDateTime()),
            Column("completed_channel", String(32)),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        connection = session.connection()
        self._states.create(connection)
        session.execute(
            self._states.insert().from_select(self._states.c.keys(), self._state_rows())
        )

    def close(self) -> None:
        self._states.drop(self._session.connection())

    def _events_before(self) -> ColumnElement[bool]:
        return and_(_events.c.at < self._as_of, _events.c.outcome != REMINDED)

    def _state_rows(self) -> Select[Any]:
        """One row per flow that had started by ``as_of``."""
        e = _events.c
        ranked = (
            select(
                e.flow_id,
                e.wave_id,
                e.step,
                e.outcome,
                e.at,
                e.channel,
                e.kind,
                func.row_number()
                .over(partition_by=e.flow_id, order_by=(e.at.desc(), e.id.desc()))
                .label("newest"),
                func.row_number()
                .over(partition_by=e.flow_id, order_by=(e.at.asc(), e.id.asc()))
                .label("oldest"),
            )
            .where(self._events_before())
            .subquery("ranked")
        )
        r = ranked.c
        done = and_(r.step == COMPLETED, r.outcome == OK)
        return select(
            r.flow_id,
            r.wave_id,
            func.min(r.at),
            func.max(r.at),
            func.max(case((r.oldest == 1, r.channel))),
            func.max(case((r.newest == 1, r.channel))),
            func.max(case((r.newest == 1, r.step))),
            func.max(case((r.newest == 1, r.outcome))),
            func.max(case((r.newest == 1, r.kind))),
            func.max(case((done, 1), else_=0)),
            func.min(case((done, r.at))),
            func.max(case((done, r.channel))),
        ).group_by(r.flow_id, r.wave_id)

    def invited(self) -> dict[uuid.UUID | None, int]:
        rows = self._session.execute(
            select(_invitations.c.wave_id, func.count())
            .where(_invitations.c.invited_at < self._as_of)
            .group_by(_invitations.c.wave_id)
        )
        return {wave: int(count) for wave, count in rows}

    def flow_groups(self) -> list[FlowGroup]:
        """Flows grouped by wave, status, channels, last step and last kind: few groups, so
        the totals, drop-outs and channel counts all come from one statement."""
        s = self._states.c
        status = case(
            (s.completed == 1, "completed"),
            (or_(s.last_outcome == DROPPED, s.last_at <= self._stale), "dropped"),
            else_="in_progress",
        ).label("status")
        keys = (
            s.wave_id,
            status,
            s.first_channel,
            s.last_channel,
            s.completed_channel,
            s.last_step,
            s.last_kind,
        )
        rows = self._session.execute(select(*keys, func.count()).group_by(*keys))
        return [
            FlowGroup(wave, status, first, last, completed_in, step, kind, int(count))
            for wave, status, first, last, completed_in, step, kind, count in rows
        ]

    def steps(self) -> dict[tuple[uuid.UUID | None, str], tuple[int, int]]:
        """(wave, step) -> (flows that reached it, failed attempts)."""
        e = _events.c
        rows = self._session.execute(
            select(
                e.wave_id,
                e.step,
                func.count(distinct(case((e.outcome == OK, e.flow_id)))),
                func.sum(case((e.outcome == FAILED, 1), else_=0)),
            )
            .where(self._events_before())
            .group_by(e.wave_id, e.step)
        )
        return {
            (wave, step): (int(reached), int(failed or 0)) for wave, step, reached, failed in rows
        }

    def kinds(self) -> dict[tuple[uuid.UUID | None, str, str], tuple[int, int]]:
        """(wave, kind, step) -> (flows with an ``ok`` event, failed attempts)."""
        e = _events.c
        rows = self._session.execute(
            select(
                e.wave_id,
                e.kind,
                e.step,
                func.count(distinct(case((e.outcome == OK, e.flow_id)))),
                func.sum(case((e.outcome == FAILED, 1), else_=0)),
            )
            .where(self._events_before(), e.kind.is_not(None), e.step.in_(KIND_STEPS))
            .group_by(e.wave_id, e.kind, e.step)
        )
        return {
            (wave, kind, step): (int(ok), int(failed or 0)) for wave, kind, step, ok, failed in rows
        }

    def hourly(self, since: dt.datetime) -> list[tuple[int, uuid.UUID, dt.datetime, int]]:
        """(slot, wave, hour, count) from ``since`` on, slot 0 for invitations, 1 for starts,
        2 for completions. The database counts per hour (UTC), since a Danish week's bounds in
        UTC move with daylight saving time, while every Danish midnight is a whole UTC hour:
        at most 168 rows a week and wave, however many people there are."""
        counts: list[tuple[int, uuid.UUID, dt.datetime, int]] = []
        s = self._states.c
        i = _invitations.c
        for slot, wave_column, at in (
            (0, i.wave_id, i.invited_at),
            (1, s.wave_id, s.first_at),
            (2, s.wave_id, s.completed_at),
        ):
            hour = self._hour(at)
            rows = self._session.execute(
                select(wave_column, hour, func.count())
                .where(wave_column.is_not(None), at >= since, at < self._as_of)
                .group_by(wave_column, hour)
            )
            for wave, text, count in rows:
                moment = dt.datetime.strptime(text, "%Y-%m-%d %H").replace(tzinfo=dt.UTC)
                counts.append((slot, wave, moment, int(count)))
        return counts

    def _hour(self, at: Any) -> ColumnElement[str]:
        """The UTC hour of a time as text, ``YYYY-MM-DD HH``."""
        if self._session.get_bind().dialect.name == "postgresql":
            return func.to_char(func.timezone("UTC", at), "YYYY-MM-DD HH24", type_=String())
        return func.strftime("%Y-%m-%d %H", at, type_=String())
