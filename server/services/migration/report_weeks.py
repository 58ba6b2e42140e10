"""ISO 8601 weeks as the migration report counts them: Danish weeks, Monday 00:00 in
Copenhagen to the next."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from server.domain.errors import DomainError
from server.services.migration.wave_values import PLAN_ZONE

_WEEK = re.compile(r"(\d{4})-W(\d{2})")


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
