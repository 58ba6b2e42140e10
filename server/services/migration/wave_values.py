"""The migration plan's values: a wave's cohort, what a run of invitations or reminders did,
a line of the reminders' mailing list, and the plan's errors."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from server.domain.errors import ConflictingState, DomainError, UnknownSubject

# The plan's dates are Danish dates: a wave starts at midnight in Copenhagen, not in UTC.
PLAN_ZONE = ZoneInfo("Europe/Copenhagen")
COHORT_KEYS = frozenset({"birth_year", "bank"})
BIRTH_YEARS = (1850, 2100)
MAX_QUOTA = 50_000_000  # ten times the legacy population; keeps the quota an INTEGER
NAME_LENGTH = 100
BANK_LENGTH = 64  # legacy_users.bank


# --- errors ------------------------------------------------------------------------------------


class WaveError(DomainError):
    """Base of the migration plan's errors."""

    code = "wave-error"


class InvalidWave(WaveError):
    """A wave that cannot be planned; ``field`` names the part that is wrong. The detail
    repeats no personal data (a wave holds none)."""

    code = "invalid-wave"

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        super().__init__(f"wave refused: {field}: {detail}", detail=f"{field}: {detail}")


class WaveNotFound(WaveError, UnknownSubject):
    code = "not-found"
    default_detail = "there is no migration wave with this name"


class WaveExists(WaveError, ConflictingState):
    code = "conflict"
    default_detail = "a migration wave with this name exists already"


class WaveNotStarted(WaveError):
    """Invitations are dated: sending them before the wave starts would put them outside it."""

    code = "wave-not-started"
    default_detail = "the wave has not started yet; invite its people from its start date on"


# --- the plan's values ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    """Who a wave is for: people born in a range of years, customers of one bank, or both.
    Stored as JSON, e.g. ``{"birth_year": [1940, 1949], "bank": "Nordbank"}``."""

    birth_years: tuple[int, int] | None = None
    bank: str | None = None

    def __post_init__(self) -> None:
        if self.birth_years is None and self.bank is None:
            raise InvalidWave("cohort", "give a birth-year range, a bank or both")
        if self.birth_years is not None:
            first, last = self.birth_years
            low, high = BIRTH_YEARS
            if not low <= first <= last <= high:
                raise InvalidWave(
                    "cohort", f"birth years are a range FIRST <= LAST within {low}-{high}"
                )
        if self.bank is not None and not (
            0 < len(self.bank) <= BANK_LENGTH and self.bank.isprintable()
        ):
            raise InvalidWave("cohort", f"a bank is 1-{BANK_LENGTH} printable characters")

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Cohort:
        """Parse the stored (or submitted) form; unknown keys are refused, not ignored, so a
        misspelt criterion cannot silently widen a wave to everyone."""
        unknown = sorted(set(data) - COHORT_KEYS)
        if unknown:
            raise InvalidWave(
                "cohort", f"unknown key {unknown[0]!r}; use {' and '.join(sorted(COHORT_KEYS))}"
            )
        years = data.get("birth_year")
        bank = data.get("bank")
        parsed_years: tuple[int, int] | None = None
        if years is not None:
            if (
                not isinstance(years, list | tuple)
                or len(years) != 2
                or not all(isinstance(y, int) and not isinstance(y, bool) for y in years)
            ):
                raise InvalidWave("cohort", "birth_year is a list of two years [FIRST, LAST]")
            parsed_years = (int(years[0]), int(years[1]))
        if bank is not None and not isinstance(bank, str):
            raise InvalidWave("cohort", "bank is a bank's name")
        return cls(birth_years=parsed_years, bank=bank)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.birth_years is not None:
            data["birth_year"] = list(self.birth_years)
        if self.bank is not None:
            data["bank"] = self.bank
        return data

    def describe(self) -> str:
        parts = []
        if self.birth_years is not None:
            first, last = self.birth_years
            parts.append(f"born {first}" if first == last else f"born {first}-{last}")
        if self.bank is not None:
            parts.append(f"bank {self.bank}")
        return ", ".join(parts)


@dataclass(frozen=True)
class WaveSummary:
    """A wave as ``list`` shows it: the plan and how many were invited so far."""

    id: uuid.UUID
    name: str
    cohort: Cohort
    starts_on: dt.date
    deadline: dt.date
    quota: int
    invited: int


@dataclass(frozen=True)
class ReminderPolicy:
    """When people are reminded. ``after_invitation``: invited this long ago and not started;
    ``idle``: a flow untouched this long and not completed (abandoned ones too); ``interval``:
    no person is reminded twice within it; ``max_reminders``: to start, and again to finish."""

    after_invitation: dt.timedelta = dt.timedelta(days=14)
    idle: dt.timedelta = dt.timedelta(days=3)
    interval: dt.timedelta = dt.timedelta(days=7)
    max_reminders: int = 3

    def __post_init__(self) -> None:
        zero = dt.timedelta(0)
        if min(self.after_invitation, self.idle, self.interval) <= zero:
            raise ValueError("reminder delays are positive")
        if self.max_reminders < 1:
            raise ValueError("max_reminders is at least 1")


@dataclass(frozen=True)
class InvitationRun:
    wave: str
    invited: int  # by this run
    total: int  # in the wave, after this run
    quota: int
    batches: int


@dataclass(frozen=True)
class ReminderRun:
    """One reminder run: everybody it reminded carries ``at`` as their ``reminded_at``."""

    at: dt.datetime
    not_started: int
    idle: int


@dataclass(frozen=True)
class Reminder:
    """One line of the mailing list. ``reason`` is ``not_started`` or ``idle``; ``step`` is
    where an idle flow stopped; ``count`` is which reminder of its kind this is."""

    user_id: str
    person_number: str
    name: str
    reason: str
    wave: str | None
    step: str | None
    invited_at: dt.datetime | None
    count: int


REMINDER_COLUMNS = (
    "user_id",
    "person_number",
    "name",
    "reason",
    "wave",
    "step",
    "invited_at",
    "reminder",
)
