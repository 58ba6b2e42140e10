"""Progress of the migration against its plan: the entry point of the weekly report.

``progress(session, week)`` computes, from the database alone and as of the end of an ISO week
(Sunday midnight in Copenhagen), per wave: invited, started, completed and dropped; each step's
reach, failures and drop-outs; the same by channel and by authenticator kind; a week-by-week
series; and the forecast date to finish the wave's quota at the rate of the last four weeks.
Only events before that moment count, so the report of a past week can be made again and says
the same. Every number is a SQL aggregate (``storage.report_queries``).

``write_report(progress, folder)`` writes it as an HTML page (PNG plots beside it, each with a
text alternative that states its numbers) and as CSV files.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from server.services.migration.report_forecast import Forecast, ForecastStatus, forecast
from server.services.migration.report_model import (
    CHANNELS,
    DEFAULT_ABANDON,
    KINDS,
    OUTSIDE_WAVES,
    STEPS,
    ChannelProgress,
    KindProgress,
    Progress,
    StepProgress,
    WavePlan,
    WaveProgress,
    WeekProgress,
)
from server.services.migration.report_render import ReportFiles, csv_tables, write_report
from server.services.migration.report_weeks import InvalidWeek, IsoWeek, weeks_between
from server.services.migration.wave_values import PLAN_ZONE, Cohort
from server.storage.report_queries import FlowGroup, ReportQueries, waves_begun_by

# What ``akkreditiv migration report`` and the operators' tools use, in one place.
__all__ = [
    "OUTSIDE_WAVES",
    "ChannelProgress",
    "Forecast",
    "ForecastStatus",
    "InvalidWeek",
    "IsoWeek",
    "KindProgress",
    "Progress",
    "ReportFiles",
    "StepProgress",
    "WavePlan",
    "WaveProgress",
    "WeekProgress",
    "csv_tables",
    "forecast",
    "progress",
    "write_report",
]


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
        for row in waves_begun_by(session, week.sunday)
    ]
    query = ReportQueries(session, as_of, abandon_after)
    invited = query.invited()
    flows = _FlowGroups.of(query.flow_groups())
    steps = query.steps()
    kinds = query.kinds()
    first = min((plan.starts_on for plan in plans), default=week.monday)
    series = _by_week(query.hourly(IsoWeek.of(first).start()))
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
    """Counts by wave from the flows' states (see ``ReportQueries.flow_groups``)."""

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

    @classmethod
    def of(cls, rows: list[FlowGroup]) -> _FlowGroups:
        groups = cls()
        for wave, state, first, last, completed_in, step, kind, n in rows:
            groups.started[wave] += n
            groups.channel_started[wave, first] += n
            if state == "completed":
                groups.completed[wave] += n
                groups.channel_completed[wave, completed_in or ""] += n
            elif state == "dropped":
                groups.dropped[wave] += n
                groups.dropped_at[wave, step] += n
                groups.channel_dropped[wave, last] += n
                if kind is not None:
                    groups.dropped_kind[wave, kind] += n
        return groups


def _by_week(
    hourly: list[tuple[int, uuid.UUID, dt.datetime, int]],
) -> dict[uuid.UUID, dict[IsoWeek, tuple[int, int, int]]]:
    """wave -> week -> (invited, started, completed), the database's hourly counts put into
    Danish weeks."""
    counts: dict[uuid.UUID, dict[IsoWeek, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0, 0])
    )
    for slot, wave, moment, count in hourly:
        counts[wave][IsoWeek.of(moment.astimezone(PLAN_ZONE).date())][slot] += count
    return {
        wave: {week: (c[0], c[1], c[2]) for week, c in by_week.items()}
        for wave, by_week in counts.items()
    }


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
