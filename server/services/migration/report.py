"""Progress of the migration against its plan, and the weekly report made from it.

``progress(session, week)`` computes, from the database alone and as of the end of an ISO week
(Sunday midnight in Copenhagen), per wave: invited, started, completed and dropped; each step's
reach, failures and drop-outs; the same by channel and by authenticator kind; a week-by-week
series; and the forecast date to finish the wave's quota at the rate of the last four weeks.
Only events before that moment count, so the report of a past week can be made again and says
the same. Every number is a SQL aggregate: the flows are never read into Python one by one.

``write_report(progress, folder)`` writes it as an HTML page (PNG plots beside it, each with a
text alternative that states its numbers) and as CSV files.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import math
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Column,
    ColumnElement,
    Integer,
    MetaData,
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

from server.services.errors import DomainError
from server.services.migration.waves import PLAN_ZONE, REMINDED, Cohort
from server.storage.migration_tables import (
    MigrationEvent,
    MigrationFlow,
    MigrationInvitation,
    MigrationWave,
)
from server.storage.tables import ProofingChannel, UtcDateTime

# The steps a flow goes through, in order, and the outcomes its events record.
STEPS = (
    "started",
    "legacy_proven",
    "details_confirmed",
    "authenticator_chosen",
    "activated",
    "completed",
)
KIND_STEPS = ("authenticator_chosen", "activated")
KINDS = ("password", "code_display", "audio_reader", "otp_token", "fido2", "piv")
CHANNELS = tuple(channel.value for channel in ProofingChannel)
OK = "ok"
FAILED = "failed"
DROPPED = "dropped"
DEFAULT_ABANDON = dt.timedelta(days=14)
RATE_WEEKS = 4  # the forecast's rate: completions over this many latest weeks
OUTSIDE_WAVES = "(outside waves)"

STEP_NAMES = {
    "started": "Started",
    "legacy_proven": "Proved with the legacy eID",
    "details_confirmed": "Confirmed identity details",
    "authenticator_chosen": "Chose an authenticator",
    "activated": "Activated the authenticator",
    "completed": "Completed",
}
CHANNEL_NAMES = {
    "self_service": "Self-service",
    "bank": "Bank",
    "service_centre": "Citizen service centre",
}
KIND_NAMES = {
    "password": "Password",
    "code_display": "Code display",
    "audio_reader": "Audio code reader",
    "otp_token": "OTP token",
    "fido2": "FIDO2 security key",
    "piv": "PIV smartcard",
}

_waves = cast(Table, MigrationWave.__table__)
_invitations = cast(Table, MigrationInvitation.__table__)
_flows = cast(Table, MigrationFlow.__table__)
_events = cast(Table, MigrationEvent.__table__)

_WEEK = re.compile(r"(\d{4})-W(\d{2})")


# --- ISO weeks ---------------------------------------------------------------------------------


class InvalidWeek(DomainError):
    """Text that is not an ISO week, or a week its year does not have."""

    code = "invalid-week"
    default_detail = "expected an ISO week such as 2026-W09"


def weeks_in(year: int) -> int:
    """52 or 53: 28 December is always in the year's last ISO week."""
    return dt.date(year, 12, 28).isocalendar().week


@dataclass(frozen=True, order=True)
class IsoWeek:
    """An ISO 8601 week. Its days are Danish days: it starts Monday 00:00 in Copenhagen."""

    year: int
    week: int

    def __post_init__(self) -> None:
        if not dt.MINYEAR <= self.year <= dt.MAXYEAR - 1:
            raise InvalidWeek(f"year {self.year} out of range")
        last = weeks_in(self.year)
        if not 1 <= self.week <= last:
            message = f"{self} does not exist: {self.year} has {last} ISO weeks"
            raise InvalidWeek(message, detail=message)

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        match = _WEEK.fullmatch(text.strip())
        if match is None:
            raise InvalidWeek("not an ISO week")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def of(cls, day: dt.date) -> IsoWeek:
        year, week, _ = day.isocalendar()
        return cls(year, week)

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.week:02d}"

    @property
    def monday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.week, 1)

    @property
    def sunday(self) -> dt.date:
        return self.monday + dt.timedelta(days=6)

    def start(self) -> dt.datetime:
        """Monday 00:00 in Copenhagen, in UTC."""
        return _midnight(self.monday)

    def end(self) -> dt.datetime:
        """The next Monday 00:00 in Copenhagen, in UTC: the report's "as of" (exclusive)."""
        return _midnight(self.monday + dt.timedelta(days=7))

    def next(self) -> IsoWeek:
        return IsoWeek.of(self.monday + dt.timedelta(days=7))


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=PLAN_ZONE).astimezone(dt.UTC)


def weeks_between(first: IsoWeek, last: IsoWeek) -> list[IsoWeek]:
    weeks = []
    week = first
    while week <= last:
        weeks.append(week)
        week = week.next()
    return weeks


# --- progress ---------------------------------------------------------------------------------


class ForecastStatus(StrEnum):
    COMPLETE = "complete"
    ON_TRACK = "on_track"
    LATE = "late"
    NEVER = "never"


@dataclass(frozen=True)
class Forecast:
    """When the quota will be reached at the rate of the last ``RATE_WEEKS`` weeks (fewer in
    a wave's first weeks): ``finish_on`` is None when complete or when the rate is zero."""

    status: ForecastStatus
    rate_per_week: Fraction
    finish_on: dt.date | None = None
    late_by_days: int = 0

    def describe(self, deadline: dt.date) -> str:
        if self.status is ForecastStatus.COMPLETE:
            return "quota reached"
        if self.status is ForecastStatus.NEVER:
            return f"never at the current rate (no completions in the last {RATE_WEEKS} weeks)"
        finish = self.finish_on.isoformat() if self.finish_on else "-"
        if self.status is ForecastStatus.LATE:
            days = "day" if self.late_by_days == 1 else "days"
            return (
                f"late by {self.late_by_days} {days}: forecast {finish}, "
                f"deadline {deadline.isoformat()}"
            )
        return f"on track: forecast {finish}, deadline {deadline.isoformat()}"


@dataclass(frozen=True)
class StepProgress:
    step: str
    reached: int  # flows with an ``ok`` event for this step
    failed: int  # failed attempts (events), e.g. a token that did not activate
    dropped: int  # dropped flows whose last event was this step


@dataclass(frozen=True)
class ChannelProgress:
    channel: str
    started: int  # by the channel of the flow's first event
    completed: int  # by the channel it completed in
    dropped: int  # by the channel of its last event


@dataclass(frozen=True)
class KindProgress:
    kind: str
    chosen: int
    activated: int
    activation_failures: int
    dropped: int  # dropped flows whose last event was about this kind


@dataclass(frozen=True)
class WeekProgress:
    week: IsoWeek
    invited: int
    started: int
    completed: int
    completed_to_date: int
    planned_to_date: int


@dataclass(frozen=True)
class WavePlan:
    id: uuid.UUID
    name: str
    cohort: Cohort
    starts_on: dt.date
    deadline: dt.date
    quota: int

    def planned_by(self, day: dt.date) -> int:
        """Completions the plan expects by the end of ``day``: the quota spread evenly from
        the start date to the deadline (both days included)."""
        total = (self.deadline - self.starts_on).days + 1
        elapsed = min(max((day - self.starts_on).days + 1, 0), total)
        return self.quota * elapsed // total


@dataclass(frozen=True)
class WaveProgress:
    """One wave's progress, or (``plan`` None) that of flows that belong to no wave."""

    plan: WavePlan | None
    invited: int
    started: int
    completed: int
    dropped: int
    steps: list[StepProgress]
    channels: list[ChannelProgress]
    kinds: list[KindProgress]
    weeks: list[WeekProgress] = field(default_factory=list)
    planned_to_date: int | None = None
    forecast: Forecast | None = None

    @property
    def name(self) -> str:
        return self.plan.name if self.plan is not None else OUTSIDE_WAVES

    @property
    def in_progress(self) -> int:
        return self.started - self.completed - self.dropped


@dataclass(frozen=True)
class Progress:
    week: IsoWeek
    as_of: dt.datetime
    abandon_after: dt.timedelta
    waves: list[WaveProgress]

    def dropped_by_step(self) -> dict[str, int]:
        totals = dict.fromkeys(STEPS, 0)
        for wave in self.waves:
            for step in wave.steps:
                totals[step.step] += step.dropped
        return totals


def progress(
    session: Session, week: IsoWeek, *, abandon_after: dt.timedelta = DEFAULT_ABANDON
) -> Progress:
    """Every wave that had started by the end of ``week``, and the flows outside waves, as of
    the end of that week. A flow is dropped when its last event (before then, reminders not
    counted) is an explicit drop-out, or is ``abandon_after`` or older; a completed flow is
    never dropped."""
    if abandon_after <= dt.timedelta(0):
        raise ValueError("abandon_after is positive")
    as_of = week.end()
    plans = [
        WavePlan(
            id=row.id,
            name=row.name,
            cohort=Cohort.from_json(row.cohort),
            starts_on=row.starts_on,
            deadline=row.deadline,
            quota=row.quota,
        )
        for row in session.execute(
            select(_waves)
            .where(_waves.c.starts_on <= week.sunday)
            .order_by(_waves.c.starts_on, _waves.c.name)
        )
    ]
    query = _Queries(session, as_of, abandon_after)
    invited = query.invited()
    flows = query.flow_groups()
    steps = query.steps()
    kinds = query.kinds()
    first = min((plan.starts_on for plan in plans), default=week.monday)
    series = query.weekly(IsoWeek.of(first).start())
    # Not on the way out of an error: a failed PostgreSQL transaction takes no more
    # statements, and its rollback drops the table anyway.
    query.close()

    waves = [
        _wave_progress(plan, week, invited, flows, steps, kinds, series.get(plan.id, {}))
        for plan in plans
    ]
    if None in flows.started:
        waves.append(_wave_progress(None, week, invited, flows, steps, kinds, {}))
    return Progress(week, as_of, abandon_after, waves)


@dataclass
class _FlowGroups:
    """Counts by wave from the flows' states (see ``_Queries.flow_groups``)."""

    started: dict[uuid.UUID | None, int] = field(default_factory=lambda: defaultdict(int))
    completed: dict[uuid.UUID | None, int] = field(default_factory=lambda: defaultdict(int))
    dropped: dict[uuid.UUID | None, int] = field(default_factory=lambda: defaultdict(int))
    # (wave, key) -> count
    dropped_at: dict[tuple[uuid.UUID | None, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    dropped_kind: dict[tuple[uuid.UUID | None, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    channel_started: dict[tuple[uuid.UUID | None, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    channel_completed: dict[tuple[uuid.UUID | None, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    channel_dropped: dict[tuple[uuid.UUID | None, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )


class _Queries:
    """The report's SQL: a few GROUP BY statements over the events before ``as_of``.

    Each flow's state (first and last event, completion) is worked out once, with window
    functions, into a temporary table that the other statements group; it is dropped by
    ``close`` or with the transaction. A flow's wave is the one its events name (the
    events carry it for this report), so the report reads the events, not the flows."""

    def __init__(self, session: Session, as_of: dt.datetime, abandon_after: dt.timedelta):
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
        done = and_(r.step == "completed", r.outcome == OK)
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

    def flow_groups(self) -> _FlowGroups:
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
        groups = _FlowGroups()
        for wave, state, first, last, completed_in, step, kind, count in rows:
            n = int(count)
            groups.started[wave] += n
            groups.channel_started[wave, first] += n
            if state == "completed":
                groups.completed[wave] += n
                groups.channel_completed[wave, completed_in] += n
            elif state == "dropped":
                groups.dropped[wave] += n
                groups.dropped_at[wave, step] += n
                groups.channel_dropped[wave, last] += n
                if kind is not None:
                    groups.dropped_kind[wave, kind] += n
        return groups

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

    def weekly(self, since: dt.datetime) -> dict[uuid.UUID, dict[IsoWeek, tuple[int, int, int]]]:
        """wave -> week -> (invited, started, completed) from ``since`` on. The database counts
        per hour (UTC); the hours are put into Danish weeks here, since a week's bounds in UTC
        move with daylight saving time, while every Danish midnight is a whole UTC hour. That
        is at most 168 rows a week and wave, however many people there are."""
        counts: dict[uuid.UUID, dict[IsoWeek, list[int]]] = defaultdict(
            lambda: defaultdict(lambda: [0, 0, 0])
        )
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
                counts[wave][IsoWeek.of(moment.astimezone(PLAN_ZONE).date())][slot] += int(count)
        return {
            wave: {week: (c[0], c[1], c[2]) for week, c in by_week.items()}
            for wave, by_week in counts.items()
        }

    def _hour(self, at: Any) -> ColumnElement[str]:
        """The UTC hour of a time as text, ``YYYY-MM-DD HH``."""
        if self._session.get_bind().dialect.name == "postgresql":
            return func.to_char(func.timezone("UTC", at), "YYYY-MM-DD HH24", type_=String())
        return func.strftime("%Y-%m-%d %H", at, type_=String())


def _wave_progress(
    plan: WavePlan | None,
    week: IsoWeek,
    invited: dict[uuid.UUID | None, int],
    flows: _FlowGroups,
    steps: dict[tuple[uuid.UUID | None, str], tuple[int, int]],
    kinds: dict[tuple[uuid.UUID | None, str, str], tuple[int, int]],
    series: dict[IsoWeek, tuple[int, int, int]],
) -> WaveProgress:
    key = plan.id if plan is not None else None
    step_rows = [
        StepProgress(
            step,
            reached=steps.get((key, step), (0, 0))[0],
            failed=steps.get((key, step), (0, 0))[1],
            dropped=flows.dropped_at.get((key, step), 0),
        )
        for step in STEPS
    ]
    channel_rows = [
        ChannelProgress(
            channel,
            started=flows.channel_started.get((key, channel), 0),
            completed=flows.channel_completed.get((key, channel), 0),
            dropped=flows.channel_dropped.get((key, channel), 0),
        )
        for channel in CHANNELS
    ]
    seen_kinds = {kind for (wave, kind, _) in kinds if wave == key}
    seen_kinds |= {kind for (wave, kind) in flows.dropped_kind if wave == key}
    kind_rows = [
        KindProgress(
            kind,
            chosen=kinds.get((key, kind, "authenticator_chosen"), (0, 0))[0],
            activated=kinds.get((key, kind, "activated"), (0, 0))[0],
            activation_failures=kinds.get((key, kind, "activated"), (0, 0))[1],
            dropped=flows.dropped_kind.get((key, kind), 0),
        )
        # The known kinds in their order, then any other kind the flows recorded.
        for kind in [*KINDS, *sorted(seen_kinds - set(KINDS))]
    ]
    completed = flows.completed.get(key, 0)
    if plan is None:
        return WaveProgress(
            None,
            invited.get(None, 0),
            flows.started.get(None, 0),
            completed,
            flows.dropped.get(None, 0),
            step_rows,
            channel_rows,
            kind_rows,
        )
    weeks: list[WeekProgress] = []
    to_date = 0
    for each in weeks_between(IsoWeek.of(plan.starts_on), week):
        week_invited, week_started, week_completed = series.get(each, (0, 0, 0))
        to_date += week_completed
        weeks.append(
            WeekProgress(
                each,
                week_invited,
                week_started,
                week_completed,
                to_date,
                plan.planned_by(each.sunday),
            )
        )
    return WaveProgress(
        plan,
        invited.get(key, 0),
        flows.started.get(key, 0),
        completed,
        flows.dropped.get(key, 0),
        step_rows,
        channel_rows,
        kind_rows,
        weeks,
        plan.planned_by(week.sunday),
        forecast(plan.quota, completed, [w.completed for w in weeks], week.sunday, plan.deadline),
    )


def forecast(
    quota: int,
    completed: int,
    weekly_completed: Sequence[int],
    last_day: dt.date,
    deadline: dt.date,
) -> Forecast:
    """When ``quota`` completions are reached, going on from ``last_day`` at the rate of the
    last ``RATE_WEEKS`` entries of ``weekly_completed`` (fewer when the wave is younger)."""
    recent = list(weekly_completed[-RATE_WEEKS:])
    done = sum(recent)
    rate = Fraction(done, len(recent)) if recent else Fraction(0)
    remaining = quota - completed
    if remaining <= 0:
        return Forecast(ForecastStatus.COMPLETE, rate)
    if done == 0:
        return Forecast(ForecastStatus.NEVER, rate)
    days = math.ceil(Fraction(remaining * 7) / rate)
    finish = last_day + dt.timedelta(days=days)
    late_by = (finish - deadline).days
    if late_by > 0:
        return Forecast(ForecastStatus.LATE, rate, finish, late_by)
    return Forecast(ForecastStatus.ON_TRACK, rate, finish)


# --- the files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    tables: dict[str, Path]  # name -> CSV file
    images: list[Path]


WAVE_COLUMNS = (
    "wave",
    "cohort",
    "starts_on",
    "deadline",
    "quota",
    "invited",
    "started",
    "completed",
    "dropped",
    "in_progress",
    "planned_to_date",
    "completed_per_week",
    "forecast",
    "late_by_days",
    "status",
)


def _rate(value: Fraction) -> str:
    return f"{float(value):.1f}"


def csv_tables(report: Progress) -> dict[str, tuple[tuple[str, ...], list[list[object]]]]:
    """The report's tables as CSV rows: name -> (header, rows)."""
    waves: list[list[object]] = []
    steps: list[list[object]] = []
    channels: list[list[object]] = []
    kinds: list[list[object]] = []
    weekly: list[list[object]] = []
    for wave in report.waves:
        plan = wave.plan
        fc = wave.forecast
        waves.append(
            [
                wave.name,
                plan.cohort.describe() if plan else "",
                plan.starts_on.isoformat() if plan else "",
                plan.deadline.isoformat() if plan else "",
                plan.quota if plan else "",
                wave.invited,
                wave.started,
                wave.completed,
                wave.dropped,
                wave.in_progress,
                wave.planned_to_date if wave.planned_to_date is not None else "",
                _rate(fc.rate_per_week) if fc else "",
                (fc.finish_on.isoformat() if fc.finish_on else fc.status.value) if fc else "",
                fc.late_by_days if fc else "",
                fc.status.value if fc else "",
            ]
        )
        steps += [[wave.name, s.step, s.reached, s.failed, s.dropped] for s in wave.steps]
        channels += [
            [wave.name, c.channel, c.started, c.completed, c.dropped] for c in wave.channels
        ]
        kinds += [
            [wave.name, k.kind, k.chosen, k.activated, k.activation_failures, k.dropped]
            for k in wave.kinds
        ]
        weekly += [
            [
                wave.name,
                str(w.week),
                w.invited,
                w.started,
                w.completed,
                w.completed_to_date,
                w.planned_to_date,
            ]
            for w in wave.weeks
        ]
    return {
        "waves": (WAVE_COLUMNS, waves),
        "steps": (("wave", "step", "reached", "failed", "dropped"), steps),
        "channels": (("wave", "channel", "started", "completed", "dropped"), channels),
        "kinds": (
            ("wave", "kind", "chosen", "activated", "activation_failures", "dropped"),
            kinds,
        ),
        "weekly": (
            (
                "wave",
                "week",
                "invited",
                "started",
                "completed",
                "completed_to_date",
                "planned_to_date",
            ),
            weekly,
        ),
    }


def write_report(report: Progress, folder: Path) -> ReportFiles:
    """Write ``report-YYYY-Www.html``, its PNG plots and the CSV tables into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = str(report.week)
    tables: dict[str, Path] = {}
    for name, (header, rows) in csv_tables(report).items():
        path = folder / f"{name}-{suffix}.csv"
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            writer.writerows(rows)
        tables[name] = path
    figures = _figures(report)
    images = []
    for figure in figures:
        _plot(figure, folder / figure.file)
        images.append(folder / figure.file)
    page = folder / f"report-{suffix}.html"
    page.write_text(_html(report, figures, tables), encoding="utf-8")
    return ReportFiles(page, tables, images)


# --- plots ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Figure:
    """A plot and its text alternative (which states every number the plot shows)."""

    file: str
    alt: str
    caption: str
    kind: str  # "dropoff" or "wave"
    labels: list[str]
    series: list[tuple[str, list[int]]]
    deadline_index: int | None = None


WIDTH, HEIGHT, DPI = 8.0, 4.5, 100


def _figures(report: Progress) -> list[_Figure]:
    suffix = str(report.week)
    dropped = report.dropped_by_step()
    figures = [
        _Figure(
            file=f"dropoff-{suffix}.png",
            alt="Bar chart of the flows that dropped out, by the step they stopped at, all "
            "waves together: "
            + "; ".join(f"{STEP_NAMES[step]} {count}" for step, count in dropped.items())
            + ".",
            caption="Flows that dropped out, by the last step they took (all waves).",
            kind="dropoff",
            labels=[STEP_NAMES[step] for step in STEPS],
            series=[("dropped", [dropped[step] for step in STEPS])],
        )
    ]
    for number, wave in enumerate(report.waves, 1):
        plan = wave.plan
        if plan is None or not wave.weeks:
            continue
        points = "; ".join(
            f"{w.week} {w.completed_to_date} completed, {w.planned_to_date} planned"
            for w in wave.weeks
        )
        figures.append(
            _Figure(
                file=f"wave-{number}-{suffix}.png",
                alt=f"Line chart of wave {plan.name}: completed migrations in total at the end "
                f"of each week (solid line, circles) against the plan (dashed line, squares), "
                f"quota {plan.quota} by {plan.deadline.isoformat()}: {points}.",
                caption=f"Wave {plan.name}: completed in total, against the plan.",
                kind="wave",
                labels=[str(w.week) for w in wave.weeks],
                series=[
                    ("completed", [w.completed_to_date for w in wave.weeks]),
                    ("planned", [w.planned_to_date for w in wave.weeks]),
                ],
            )
        )
    return figures


def _plot(figure: _Figure, path: Path) -> None:
    """Draw with matplotlib's Agg canvas (no display, no global pyplot state). Series differ
    by line style, marker and label, never by colour alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    plot = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    FigureCanvasAgg(plot)
    axes = plot.add_subplot()
    if figure.kind == "dropoff":
        _, counts = figure.series[0]
        bars = axes.barh(
            figure.labels, counts, color="#4a4a4a", edgecolor="black", hatch="//", label="dropped"
        )
        axes.bar_label(bars, labels=[str(count) for count in counts], padding=3)
        axes.invert_yaxis()  # the first step on top
        axes.set_xlabel("flows that dropped out")
        axes.set_title(figure.caption)
        axes.set_xlim(0, max([*counts, 1]) * 1.15)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        positions = list(range(len(figure.labels)))
        # Hollow squares on filled circles: both series stay visible where they coincide.
        styles: dict[str, dict[str, Any]] = {
            "completed": {"linestyle": "-", "marker": "o", "markersize": 8, "color": "#1f3a93"},
            "planned": {
                "linestyle": "--",
                "marker": "s",
                "markersize": 6,
                "markerfacecolor": "white",
                "color": "#333333",
            },
        }
        for name, points in figure.series:
            axes.plot(positions, points, label=name, **styles[name])
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        step = max(1, math.ceil(len(positions) / 12))
        axes.set_xticks(positions[::step], figure.labels[::step], rotation=45, ha="right")
        axes.set_ylabel("people, in total")
        axes.set_ylim(bottom=0)
        axes.legend(loc="upper left")
        axes.set_title(figure.caption)
    axes.grid(axis="x" if figure.kind == "dropoff" else "y", linestyle=":")
    # No software version or date in the file: the same report gives the same bytes.
    plot.savefig(path, format="png", metadata={"Software": None})


# --- HTML ------------------------------------------------------------------------------------


_STYLE = """
body { font-family: sans-serif; line-height: 1.5; margin: 1rem auto; max-width: 70rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
caption { text-align: left; font-weight: bold; padding: 0.25rem 0; }
th, td { border: 1px solid #444; padding: 0.25rem 0.5rem; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(
    caption: str,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
) -> str:
    """A table whose first column names its row (``<th scope="row">``)."""
    head = "".join(f'<th scope="col">{_e(name)}</th>' for name in header)
    body = []
    for row in rows:
        first, *rest = row
        cells = "".join(
            f'<td class="number">{_e(_rate(value) if isinstance(value, Fraction) else value)}</td>'
            if isinstance(value, int | Fraction)
            else f"<td>{_e(value)}</td>"
            for value in rest
        )
        body.append(f'<tr><th scope="row">{_e(first)}</th>{cells}</tr>')
    return (
        f"<table>\n<caption>{_e(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n"
        f"<tbody>\n{chr(10).join(body)}\n</tbody>\n</table>"
    )


def _figure_html(figure: _Figure) -> str:
    width, height = int(WIDTH * DPI), int(HEIGHT * DPI)
    return (
        f'<figure>\n<img src="{_e(figure.file)}" width="{width}" height="{height}" '
        f'alt="{_e(figure.alt)}">\n<figcaption>{_e(figure.caption)}</figcaption>\n</figure>'
    )


def _status(wave: WaveProgress) -> str:
    if wave.plan is None or wave.forecast is None:
        return ""
    return wave.forecast.describe(wave.plan.deadline)


def _html(report: Progress, figures: list[_Figure], tables: dict[str, Path]) -> str:
    week = report.week
    by_file = {figure.file: figure for figure in figures}
    days = report.abandon_after.days
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Migration report {_e(week)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>Migration from the legacy eID: week {_e(week)}</h1>",
        f"<p>As of the end of Sunday {week.sunday.isoformat()}, Copenhagen time "
        f"({report.as_of:%Y-%m-%d %H:%M} UTC): only steps taken before then count. A flow counts "
        f"as dropped when the person abandoned it, or when it has not moved for {days} days; "
        "it is counted at the last step it took. Completion rates are per week, over the last "
        f"{RATE_WEEKS} weeks.</p>",
        "<h2>Waves against the plan</h2>",
    ]
    if not report.waves:
        parts.append("<p>No wave had started by the end of this week.</p>")
    else:
        parts.append(
            _table(
                "Each wave's people, plan and forecast",
                (
                    "Wave",
                    "Cohort",
                    "Start",
                    "Deadline",
                    "Quota",
                    "Invited",
                    "Started",
                    "Completed",
                    "Dropped",
                    "In progress",
                    "Planned by now",
                    "Completed per week",
                    "Forecast",
                ),
                [
                    [
                        wave.name,
                        wave.plan.cohort.describe() if wave.plan else "",
                        wave.plan.starts_on.isoformat() if wave.plan else "",
                        wave.plan.deadline.isoformat() if wave.plan else "",
                        wave.plan.quota if wave.plan else "",
                        wave.invited,
                        wave.started,
                        wave.completed,
                        wave.dropped,
                        wave.in_progress,
                        wave.planned_to_date if wave.planned_to_date is not None else "",
                        wave.forecast.rate_per_week if wave.forecast else "",
                        _status(wave),
                    ]
                    for wave in report.waves
                ],
            )
        )
    dropoff = by_file[f"dropoff-{week}.png"]
    parts += ["<h2>Where people drop out</h2>", _figure_html(dropoff)]
    for number, wave in enumerate(report.waves, 1):
        parts.append(f'<section aria-labelledby="wave-{number}">')
        title = f"Wave {wave.name}" if wave.plan else "Flows outside waves"
        parts.append(f'<h2 id="wave-{number}">{_e(title)}</h2>')
        parts.append(f"<p>{_e(_summary(wave))}</p>")
        figure = by_file.get(f"wave-{number}-{week}.png")
        if figure is not None:
            parts.append(_figure_html(figure))
        parts += [
            "<h3>Steps</h3>",
            _table(
                f"{wave.name}: flows by step",
                ("Step", "Reached", "Failed attempts", "Dropped here"),
                [[STEP_NAMES[s.step], s.reached, s.failed, s.dropped] for s in wave.steps],
            ),
            "<h3>Channels</h3>",
            _table(
                f"{wave.name}: flows by channel",
                ("Channel", "Started", "Completed", "Dropped"),
                [
                    [CHANNEL_NAMES.get(c.channel, c.channel), c.started, c.completed, c.dropped]
                    for c in wave.channels
                ],
            ),
            "<h3>Authenticators</h3>",
            _table(
                f"{wave.name}: flows by authenticator kind",
                ("Authenticator", "Chosen", "Activated", "Failed activations", "Dropped"),
                [
                    [
                        KIND_NAMES.get(k.kind, k.kind),
                        k.chosen,
                        k.activated,
                        k.activation_failures,
                        k.dropped,
                    ]
                    for k in wave.kinds
                ],
            ),
        ]
        if wave.weeks:
            parts += [
                "<h3>Week by week</h3>",
                _table(
                    f"{wave.name}: each week",
                    (
                        "Week",
                        "Invited",
                        "Started",
                        "Completed",
                        "Completed in total",
                        "Planned in total",
                    ),
                    [
                        [
                            str(w.week),
                            w.invited,
                            w.started,
                            w.completed,
                            w.completed_to_date,
                            w.planned_to_date,
                        ]
                        for w in wave.weeks
                    ],
                ),
            ]
        parts.append("</section>")
    parts.append("<h2>Data files</h2>\n<ul>")
    parts += [
        f'<li><a href="{_e(path.name)}">{_e(path.name)}</a>: {_e(name)} (CSV)</li>'
        for name, path in tables.items()
    ]
    parts += ["</ul>", "</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _summary(wave: WaveProgress) -> str:
    counts = (
        f"{wave.invited} invited, {wave.started} started, {wave.completed} completed, "
        f"{wave.dropped} dropped, {wave.in_progress} in progress."
    )
    if wave.plan is None:
        return f"People who started without an invitation: {counts}"
    return (
        f"{wave.plan.cohort.describe().capitalize()}; quota {wave.plan.quota} from "
        f"{wave.plan.starts_on.isoformat()} to {wave.plan.deadline.isoformat()}. {counts} "
        f"Planned by now: {wave.planned_to_date}. Forecast: {_status(wave)}."
    )
