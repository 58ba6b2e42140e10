"""The forecast of when a wave reaches its quota, at the rate of its latest weeks."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

RATE_WEEKS = 4  # the forecast's rate: completions over this many latest weeks


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
