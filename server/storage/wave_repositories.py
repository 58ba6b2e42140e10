"""The migration plan's SQL: waves, the invitations a wave sends, and the reminders, all as
set-based statements (``INSERT ... SELECT``, ``UPDATE ... WHERE``), never a loop over people:
a million invitations cost about two hundred statements, not a million."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
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
from sqlalchemy.orm import Session

from server.storage.migration_events import COMPLETED, REMINDED
from server.storage.migration_repositories import add_unless_taken, record_marked_flows
from server.storage.migration_tables import LEGACY_USERS as _users
from server.storage.migration_tables import MIGRATION_EVENTS as _events
from server.storage.migration_tables import MIGRATION_FLOWS as _flows
from server.storage.migration_tables import MIGRATION_INVITATIONS as _invitations
from server.storage.migration_tables import MIGRATION_WAVES as _waves
from server.storage.migration_tables import (
    LegacyUserStatus,
    MigrationWave,
)
from server.storage.tables import UtcDateTime


def cohort_condition(
    birth_years: tuple[int, int] | None, bank: str | None, *, indexed: bool = True
) -> ColumnElement[bool]:
    """The SQL condition on ``legacy_users`` for a cohort. Both columns are indexed;
    ``indexed=False`` compares expressions of them instead (``birth_year + 0``, ``bank || ''``),
    which no planner answers from those indexes."""
    year: ColumnElement[int] = _users.c.birth_year
    bank_column: ColumnElement[str | None] = _users.c.bank
    if not indexed:
        year = year + 0
        bank_column = bank_column.concat("")
    terms: list[ColumnElement[bool]] = []
    if birth_years is not None:
        terms.append(year.between(*birth_years))
    if bank is not None:
        terms.append(bank_column == bank)
    return and_(*terms)


# A line of the reminders' list: user id, person number, name, reason, wave name, step, invited
# at, reminder count.
RemindedRow = tuple[str, str, str, str, str | None, str | None, dt.datetime | None, int]


class WaveRepository:
    """Waves, invitations and reminders over one session; the caller owns the transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # --- waves -------------------------------------------------------------------------------

    def add(self, wave: MigrationWave) -> bool:
        """Add ``wave`` in a savepoint; False if its name is taken."""
        return add_unless_taken(self._session, wave)

    def by_name(self, name: str) -> MigrationWave | None:
        return self._session.scalars(
            select(MigrationWave).where(MigrationWave.name == name)
        ).first()

    def with_invited(self) -> list[tuple[MigrationWave, int]]:
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
        return [(wave, int(count)) for wave, count in rows]

    # --- invitations -----------------------------------------------------------------------------

    def lock_and_count(self, wave_id: uuid.UUID) -> int:
        """The wave's invitations so far, counted under the wave's lock."""
        # A no-op UPDATE takes the wave's row lock on PostgreSQL and the write lock on SQLite,
        # so the count below cannot change under this batch.
        self._session.execute(
            update(_waves).where(_waves.c.id == wave_id).values(quota=_waves.c.quota)
        )
        count = self._session.scalar(
            select(func.count()).select_from(_invitations).where(_invitations.c.wave_id == wave_id)
        )
        return int(count or 0)

    def range_end(self, after: str | None, size: int) -> str | None:
        """The user id ``size`` users after ``after`` in primary-key order; None when fewer
        are left (the batch then runs to the end)."""
        query = select(_users.c.user_id).order_by(_users.c.user_id).offset(size - 1).limit(1)
        if after is not None:
            query = query.where(_users.c.user_id > after)
        return self._session.scalar(query)

    def invite_range(
        self,
        wave_id: uuid.UUID,
        now: dt.datetime,
        cohort: ColumnElement[bool],
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

    def _eligible(
        self, cohort: ColumnElement[bool], after: str | None, upto: str | None
    ) -> Select[Any]:
        conditions = [
            cohort,
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

    def remind_not_started(
        self, now: dt.datetime, invited_by: dt.datetime, not_before: dt.datetime, most: int
    ) -> int:
        """Move on ``reminded_at`` and ``reminders`` of every invitation made by
        ``invited_by`` with no flow yet, not reminded since ``not_before``, reminded fewer than
        ``most`` times, of an active legacy user; return how many."""
        active = exists().where(
            _users.c.user_id == _invitations.c.user_id,
            _users.c.status == LegacyUserStatus.ACTIVE.value,
        )
        return _changed(
            self._session.execute(
                update(_invitations)
                .where(
                    _invitations.c.invited_at <= invited_by,
                    ~_recently(_invitations.c.reminded_at, not_before),
                    _invitations.c.reminders < most,
                    ~exists().where(_flows.c.user_id == _invitations.c.user_id),
                    active,
                )
                .values(reminded_at=now, reminders=_invitations.c.reminders + 1)
            )
        )

    def remind_idle(
        self, now: dt.datetime, untouched_by: dt.datetime, not_before: dt.datetime, most: int
    ) -> int:
        """Move on ``reminded_at`` of every flow not completed and untouched since
        ``untouched_by``, whose person was not reminded since ``not_before`` and fewer than
        ``most`` times, of an active legacy user; record the reminders; return how many."""
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
                    _flows.c.updated_at <= untouched_by,
                    ~_recently(_flows.c.reminded_at, not_before),
                    ~exists().where(
                        _invitations.c.user_id == _flows.c.user_id,
                        _recently(_invitations.c.reminded_at, not_before),
                    ),
                    reminded_before < most,
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
        return idle

    def _record_idle_reminders(self, now: dt.datetime) -> None:
        """The ``reminded`` events and invitation counters of the flows marked at ``now``."""
        marked = _flows.c.reminded_at == now
        record_marked_flows(self._session, marked, now, REMINDED, null())
        self._session.execute(
            update(_invitations)
            .where(_invitations.c.user_id.in_(select(_flows.c.user_id).where(marked)))
            .values(reminded_at=now, reminders=_invitations.c.reminders + 1)
        )

    def reminded(self, at: dt.datetime, *, chunk: int) -> Iterator[RemindedRow]:
        """The people the run at ``at`` reminded, by user id, read ``chunk`` rows at a time."""
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
            yield cast(RemindedRow, tuple(row))


def _recently(column: Any, not_before: dt.datetime) -> ColumnElement[bool]:
    return and_(column.is_not(None), column > not_before)


def _changed(result: Result[Any]) -> int:
    """Rows an INSERT or UPDATE statement wrote."""
    return cast("CursorResult[Any]", result).rowcount
