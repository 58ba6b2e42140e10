"""The migration plan: waves (a cohort of legacy users, a start, a quota and a deadline), the
invitations that go out per wave, and the reminders for people who were invited and have not
started, or whose flow stopped. Five million people move in waves so the assisted channels are
not overrun; the operators' mailing system sends the letters from the lists made here.

Everything runs as set-based SQL (``INSERT ... SELECT``, ``UPDATE ... WHERE``), never a Python
loop over people: a million invitations cost about two hundred statements, not a million.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from zoneinfo import ZoneInfo

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
    exists,
    func,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.services.errors import DomainError
from server.services.identities import AuditHook, no_audit
from server.storage.migration_tables import (
    LegacyUser,
    LegacyUserStatus,
    MigrationEvent,
    MigrationFlow,
    MigrationInvitation,
    MigrationWave,
)
from server.storage.tables import UtcDateTime

# The plan's dates are Danish dates: a wave starts at midnight in Copenhagen, not in UTC.
PLAN_ZONE = ZoneInfo("Europe/Copenhagen")
COHORT_KEYS = frozenset({"birth_year", "bank"})
BIRTH_YEARS = (1850, 2100)
MAX_QUOTA = 50_000_000  # ten times the legacy population; keeps the quota an INTEGER
NAME_LENGTH = 100
BANK_LENGTH = 64  # legacy_users.bank
DEFAULT_BATCH = 50_000  # legacy users read per transaction
# The outcome of the event a reminder writes into a flow's history (the flow writes the others).
REMINDED = "reminded"
FIRST_STEP = "started"
COMPLETED = "completed"  # the flow's final state

_users = cast(Table, LegacyUser.__table__)
_waves = cast(Table, MigrationWave.__table__)
_invitations = cast(Table, MigrationInvitation.__table__)
_flows = cast(Table, MigrationFlow.__table__)
_events = cast(Table, MigrationEvent.__table__)


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


class WaveNotFound(WaveError):
    code = "not-found"
    default_detail = "there is no migration wave with this name"


class WaveExists(WaveError):
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

    def condition(self, *, indexed: bool = True) -> ColumnElement[bool]:
        """The SQL condition on ``legacy_users``. Both columns are indexed; ``indexed=False``
        compares expressions of them instead (``birth_year + 0``, ``bank || ''``), which no
        planner answers from those indexes."""
        year: ColumnElement[int] = _users.c.birth_year
        bank: ColumnElement[str | None] = _users.c.bank
        if not indexed:
            year = year + 0
            bank = bank.concat("")
        terms: list[ColumnElement[bool]] = []
        if self.birth_years is not None:
            terms.append(year.between(*self.birth_years))
        if self.bank is not None:
            terms.append(bank == self.bank)
        return and_(*terms)


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


# --- the service -------------------------------------------------------------------------------


class MigrationPlan:
    """Waves, invitations and reminders over one session. ``clock`` returns seconds since the
    epoch (``Services.clock``). Creating a wave leaves committing to the caller; ``invite``
    commits after each batch (see there); ``remind`` leaves its one transaction open so the
    caller can write the mailing list first and commit only when it is safely written."""

    def __init__(
        self,
        session: Session,
        clock: Callable[[], float] = time.time,
        audit: AuditHook = no_audit,
    ) -> None:
        self._session = session
        self._clock = clock
        self._audit = audit

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    # --- waves ---------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        cohort: Cohort | Mapping[str, object],
        starts_on: dt.date,
        deadline: dt.date,
        quota: int,
    ) -> MigrationWave:
        """Plan a wave. Raises ``InvalidWave`` (which field) or ``WaveExists``."""
        name = name.strip()
        if not 0 < len(name) <= NAME_LENGTH or not name.isprintable():
            raise InvalidWave("name", f"1-{NAME_LENGTH} printable characters")
        parsed = cohort if isinstance(cohort, Cohort) else Cohort.from_json(cohort)
        if deadline <= starts_on:
            raise InvalidWave("deadline", "the deadline is after the start date")
        if isinstance(quota, bool) or not 0 < quota <= MAX_QUOTA:
            raise InvalidWave("quota", f"the quota is a number of people, 1-{MAX_QUOTA}")
        wave = MigrationWave(
            name=name,
            cohort=parsed.to_json(),
            starts_on=starts_on,
            deadline=deadline,
            quota=quota,
            created_at=self.now(),
        )
        try:
            with self._session.begin_nested():
                self._session.add(wave)
        except IntegrityError:
            raise WaveExists(f"wave {name!r} exists") from None
        self._audit(
            "migration.wave_created",
            {
                "wave": name,
                "cohort": parsed.to_json(),
                "starts_on": starts_on.isoformat(),
                "deadline": deadline.isoformat(),
                "quota": quota,
            },
        )
        return wave

    def get(self, name: str) -> MigrationWave:
        wave = self._session.scalars(
            select(MigrationWave).where(MigrationWave.name == name.strip())
        ).first()
        if wave is None:
            raise WaveNotFound(f"no wave {name!r}")
        return wave

    def list(self) -> list[WaveSummary]:
        """Every wave, by start date then name, with the number invited so far."""
        invited = (
            select(_invitations.c.wave_id, func.count().label("invited"))
            .group_by(_invitations.c.wave_id)
            .subquery()
        )
        rows = self._session.execute(
            select(MigrationWave, func.coalesce(invited.c.invited, 0))
            .outerjoin(invited, invited.c.wave_id == MigrationWave.id)
            .order_by(MigrationWave.starts_on, MigrationWave.name)
        ).all()
        return [
            WaveSummary(
                id=wave.id,
                name=wave.name,
                cohort=Cohort.from_json(wave.cohort),
                starts_on=wave.starts_on,
                deadline=wave.deadline,
                quota=wave.quota,
                invited=int(count),
            )
            for wave, count in rows
        ]

    # --- invitations -----------------------------------------------------------------------------

    def invite(self, name: str, *, batch_size: int = DEFAULT_BATCH) -> InvitationRun:
        """Invite the wave's cohort up to its quota: legacy users who are active (so not
        migrated), have no flow yet and were invited by no wave, in user-id order.

        The legacy users are walked in user-id order, ``batch_size`` of them at a time; each
        batch is an ``INSERT ... SELECT`` over that range of the primary key, committed on its
        own, so a long run holds the write lock only briefly, every batch costs the same however
        far the walk has come, and a killed run keeps whole batches. Running it again walks
        again and invites only those not invited yet (one invitation per person is the primary
        key), so nobody twice.
        The wave's row is locked for each batch, so two runs for one wave cannot pass its
        quota; a person whom another wave's run invited first is skipped.
        """
        if batch_size < 1:
            raise ValueError("batch_size is at least 1")
        wave = self.get(name)
        now = self.now()
        if now.astimezone(PLAN_ZONE).date() < wave.starts_on:
            raise WaveNotStarted(f"wave {wave.name!r} starts on {wave.starts_on.isoformat()}")
        cohort = Cohort.from_json(wave.cohort)
        after: str | None = None
        invited = batches = total = 0
        while True:
            total = self._lock_and_count(wave.id)
            room = wave.quota - total
            if room <= 0:
                break
            upto = self._range_end(after, batch_size)
            added = self._invite_range(wave.id, now, cohort, after, upto, room)
            invited += added
            total += added
            batches += 1
            self._session.commit()
            if upto is None:
                break
            after = upto
        if invited:
            self._audit(
                "migration.wave_invited",
                {"wave": wave.name, "invited": invited, "total": total, "quota": wave.quota},
            )
        self._session.commit()
        return InvitationRun(wave.name, invited, total, wave.quota, batches)

    def _invite_range(
        self,
        wave_id: uuid.UUID,
        now: dt.datetime,
        cohort: Cohort,
        after: str | None,
        upto: str | None,
        room: int,
    ) -> int:
        """Invite up to ``room`` eligible users of the range (``after``, ``upto``]; return how
        many. The chosen ids are staged in a temporary table first, so the statement that
        looks for people without an invitation never inserts invitations itself: PostgreSQL
        would otherwise probe a table that grows under the probe, and when its statistics say
        the table is empty (a fresh plan) it probes by sequential scan, each probe reading
        every row inserted so far: quadratic in the batch."""
        connection = self._session.connection()
        staged = Table(
            f"invite_batch_{uuid.uuid4().hex[:12]}",
            MetaData(),
            Column("user_id", String(64), primary_key=True),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        staged.create(connection)
        chosen = self._eligible(cohort, after, upto).order_by(_users.c.user_id).limit(room)
        self._session.execute(staged.insert().from_select(["user_id"], chosen))
        rows = select(
            staged.c.user_id,
            literal(wave_id, Uuid()),
            literal(now, UtcDateTime()),
            literal(0, Integer()),
        ).where(staged.c.user_id.is_not(None))  # SQLite reads "FROM t ON CONFLICT" as a join
        statement = (
            self._insert_ignoring_taken()
            .from_select(["user_id", "wave_id", "invited_at", "reminders"], rows)
            # An INSERT's row count is kept only when asked for (it is for UPDATEs).
            .execution_options(preserve_rowcount=True)
        )
        added = _changed(self._session.execute(statement))
        staged.drop(connection)
        return added

    def _lock_and_count(self, wave_id: uuid.UUID) -> int:
        # A no-op UPDATE takes the wave's row lock on PostgreSQL and the write lock on SQLite,
        # so the count below cannot change under this batch.
        self._session.execute(
            update(_waves).where(_waves.c.id == wave_id).values(quota=_waves.c.quota)
        )
        count = self._session.scalar(
            select(func.count()).select_from(_invitations).where(_invitations.c.wave_id == wave_id)
        )
        return int(count or 0)

    def _range_end(self, after: str | None, size: int) -> str | None:
        """The user id ``size`` users after ``after`` in primary-key order; None when fewer
        are left (the batch then runs to the end)."""
        query = select(_users.c.user_id).order_by(_users.c.user_id).offset(size - 1).limit(1)
        if after is not None:
            query = query.where(_users.c.user_id > after)
        return self._session.scalar(query)

    def _eligible(self, cohort: Cohort, after: str | None, upto: str | None) -> Select[Any]:
        conditions = [
            # Not through the cohort's indexes: a batch must read its range of the primary
            # key, not the whole cohort (a bank's million customers) and sort it.
            cohort.condition(indexed=False),
            _users.c.status == LegacyUserStatus.ACTIVE.value,
            ~exists().where(_invitations.c.user_id == _users.c.user_id),
            ~exists().where(_flows.c.user_id == _users.c.user_id),
        ]
        if after is not None:
            conditions.append(_users.c.user_id > after)
        if upto is not None:
            conditions.append(_users.c.user_id <= upto)
        return select(_users.c.user_id).where(*conditions)

    def _insert_ignoring_taken(self) -> Any:
        dialect = self._session.get_bind().dialect.name
        module = postgresql if dialect == "postgresql" else sqlite
        return module.insert(_invitations).on_conflict_do_nothing()

    # --- reminders -------------------------------------------------------------------------------

    def remind(self, policy: ReminderPolicy) -> ReminderRun:
        """Mark everyone due a reminder, in the session's transaction (not committed):

        * invited at least ``after_invitation`` ago, no flow yet: the invitation's
          ``reminded_at`` and ``reminders`` move on;
        * a flow not completed and untouched for ``idle`` (abandoned ones too): the flow's
          ``reminded_at`` moves on and a ``reminded`` event records the step it stopped at
          (the invitation, if any, counts the reminder too). The event is not activity: the
          report does not take a reminded flow for a resumed one.

        Nobody whose legacy user is no longer active is reminded, nobody twice within
        ``interval``, and nobody more than ``max_reminders`` times to start, or to finish.
        Read the list with ``reminders(run.at)`` before committing.
        """
        now = self.now()
        not_before = now - policy.interval

        def recently(column: Any) -> ColumnElement[bool]:
            return and_(column.is_not(None), column > not_before)

        active = exists().where(
            _users.c.user_id == _invitations.c.user_id,
            _users.c.status == LegacyUserStatus.ACTIVE.value,
        )
        not_started = _changed(
            self._session.execute(
                update(_invitations)
                .where(
                    _invitations.c.invited_at <= now - policy.after_invitation,
                    ~recently(_invitations.c.reminded_at),
                    _invitations.c.reminders < policy.max_reminders,
                    ~exists().where(_flows.c.user_id == _invitations.c.user_id),
                    active,
                )
                .values(reminded_at=now, reminders=_invitations.c.reminders + 1)
            )
        )

        reminded_before = (
            select(func.count())
            .select_from(_events)
            .where(_events.c.flow_id == _flows.c.id, _events.c.outcome == REMINDED)
            .scalar_subquery()
        )
        idle = _changed(
            self._session.execute(
                update(_flows)
                .where(
                    _flows.c.completed_at.is_(None),
                    _flows.c.state != COMPLETED,
                    _flows.c.updated_at <= now - policy.idle,
                    ~recently(_flows.c.reminded_at),
                    ~exists().where(
                        _invitations.c.user_id == _flows.c.user_id,
                        recently(_invitations.c.reminded_at),
                    ),
                    reminded_before < policy.max_reminders,
                    exists().where(
                        _users.c.user_id == _flows.c.user_id,
                        _users.c.status == LegacyUserStatus.ACTIVE.value,
                    ),
                )
                .values(reminded_at=now)
            )
        )
        if idle:
            self._record_idle_reminders(now)
        run = ReminderRun(now, not_started, idle)
        if not_started or idle:
            self._audit(
                "migration.reminded",
                {"not_started": not_started, "idle": idle, "at": now.isoformat()},
            )
        return run

    def _record_idle_reminders(self, now: dt.datetime) -> None:
        """The ``reminded`` events and invitation counters of the flows marked at ``now``."""
        marked = _flows.c.reminded_at == now
        self._session.execute(
            _events.insert().from_select(
                ["flow_id", "wave_id", "at", "step", "outcome", "channel", "kind"],
                select(
                    _flows.c.id,
                    _flows.c.wave_id,
                    literal(now, UtcDateTime()),
                    func.coalesce(_stopped_at(), literal(FIRST_STEP, String())),
                    literal(REMINDED, String()),
                    _flows.c.channel,
                    null(),
                ).where(marked),
            )
        )
        self._session.execute(
            update(_invitations)
            .where(_invitations.c.user_id.in_(select(_flows.c.user_id).where(marked)))
            .values(reminded_at=now, reminders=_invitations.c.reminders + 1)
        )

    def reminders(self, at: dt.datetime, *, chunk: int = 1000) -> Iterator[Reminder]:
        """The people the run at ``at`` reminded, by user id, read ``chunk`` rows at a time
        (the list can be hundreds of thousands long)."""
        invitations = _invitations.alias("inv")
        not_started = select(
            invitations.c.user_id.label("user_id"),
            literal("not_started", String()).label("reason"),
            invitations.c.wave_id.label("wave_id"),
            null().label("step"),
            invitations.c.invited_at.label("invited_at"),
            invitations.c.reminders.label("count"),
        ).where(
            invitations.c.reminded_at == at,
            ~exists().where(_flows.c.user_id == invitations.c.user_id, _flows.c.reminded_at == at),
        )
        events = _events.alias("reminded")
        earlier = _events.alias("earlier")
        idle = (
            select(
                _flows.c.user_id.label("user_id"),
                literal("idle", String()).label("reason"),
                _flows.c.wave_id.label("wave_id"),
                events.c.step.label("step"),
                invitations.c.invited_at.label("invited_at"),
                select(func.count())
                .select_from(earlier)
                .where(earlier.c.flow_id == _flows.c.id, earlier.c.outcome == REMINDED)
                .scalar_subquery()
                .label("count"),
            )
            .join(events, and_(events.c.flow_id == _flows.c.id, events.c.outcome == REMINDED))
            .outerjoin(invitations, invitations.c.user_id == _flows.c.user_id)
            .where(_flows.c.reminded_at == at, events.c.at == at)
        )
        listed = union_all(not_started, idle).subquery()
        query = (
            select(
                listed.c.user_id,
                _users.c.person_number,
                _users.c.name,
                listed.c.reason,
                _waves.c.name,
                listed.c.step,
                listed.c.invited_at,
                listed.c.count,
            )
            .join(_users, _users.c.user_id == listed.c.user_id)
            .outerjoin(_waves, _waves.c.id == listed.c.wave_id)
            .order_by(listed.c.user_id)
            .execution_options(yield_per=chunk)
        )
        for row in self._session.execute(query):
            yield Reminder(
                user_id=row[0],
                person_number=row[1],
                name=row[2],
                reason=row[3],
                wave=row[4],
                step=row[5],
                invited_at=row[6],
                count=int(row[7]),
            )


def _stopped_at() -> Any:
    """The step of a flow's latest event that was not itself a reminder (correlated to the
    flow row of the enclosing statement)."""
    return (
        select(_events.c.step)
        .where(_events.c.flow_id == _flows.c.id, _events.c.outcome != REMINDED)
        .order_by(_events.c.at.desc(), _events.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _changed(result: Result[Any]) -> int:
    """Rows an INSERT or UPDATE statement wrote."""
    return cast("CursorResult[Any]", result).rowcount
