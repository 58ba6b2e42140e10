"""The migration plan: waves, invitations by cohort and quota, reminders; on SQLite and
PostgreSQL. The flows and their events are written directly, as the guided flow writes them."""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine, Integer, String, Table, event, func, insert, literal, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from akkreditiv.cli import app
from server.domain.model import ProofingChannel
from server.services.migration.wave_values import (
    PLAN_ZONE,
    REMINDER_COLUMNS,
    Cohort,
    InvalidWave,
    ReminderPolicy,
    WaveExists,
    WaveNotFound,
    WaveNotStarted,
)
from server.services.migration.waves import MigrationPlan
from server.storage.migration_tables import (
    LegacyUser,
    LegacyUserStatus,
    MigrationEvent,
    MigrationFlow,
    MigrationInvitation,
    MigrationWave,
)
from server.storage.tables import AuditEntry, UtcDateTime

# Monday of 2026-W10, 10:00 in Copenhagen.
MONDAY = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
_users = cast(Table, LegacyUser.__table__)


class Clock:
    """A clock the test moves by hand (seconds since the epoch, like ``time.time``)."""

    def __init__(self, at: dt.datetime = MONDAY) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()

    def advance(self, **delta: float) -> dt.datetime:
        self.at += dt.timedelta(**delta)
        return self.at


def user_row(
    user_id: str,
    birth_year: int = 1945,
    bank: str | None = None,
    status: LegacyUserStatus = LegacyUserStatus.ACTIVE,
) -> dict[str, Any]:
    """A legacy user as the importer stores one (the password hash is never checked here)."""
    return {
        "user_id": user_id,
        "person_number": f"pn-{user_id}",
        "name": f"Person {user_id}",
        "birth_year": birth_year,
        "bank": bank,
        "password_hash": "pbkdf2_sha256$1$c2FsdHNhbHRzYWx0c2FsdA==$" + "A" * 43 + "=",
        "status": status.value,
        "failures": 0,
        "row_digest": "0" * 64,
        "imported_at": MONDAY - dt.timedelta(days=30),
        "version": 1,
    }


def add_users(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    session.execute(insert(_users), list(rows))
    session.commit()


def add_flow(
    session: Session,
    user_id: str,
    wave_id: uuid.UUID | None,
    channel: ProofingChannel,
    events: Sequence[tuple[dt.datetime, str, str, str | None]],
) -> MigrationFlow:
    """A flow with its events ``(at, step, outcome, kind)``, as the guided flow leaves them."""
    last = events[-1][0] if events else MONDAY
    completed = [at for at, step, outcome, _ in events if step == "completed" and outcome == "ok"]
    flow = MigrationFlow(
        user_id=user_id,
        wave_id=wave_id,
        channel=channel,
        state=events[-1][1] if events else "started",
        started_at=events[0][0] if events else MONDAY,
        updated_at=last,
        completed_at=completed[0] if completed else None,
        abandoned_at=last if events and events[-1][2] == "dropped" else None,
    )
    session.add(flow)
    session.flush()
    for at, step, outcome, kind in events:
        session.add(
            MigrationEvent(
                flow_id=flow.id,
                wave_id=wave_id,
                at=at,
                step=step,
                outcome=outcome,
                channel=channel,
                kind=kind,
            )
        )
    session.commit()
    return flow


def invited_ids(session: Session, wave_id: uuid.UUID | None = None) -> list[str]:
    query = select(MigrationInvitation.user_id).order_by(MigrationInvitation.user_id)
    if wave_id is not None:
        query = query.where(MigrationInvitation.wave_id == wave_id)
    return list(session.scalars(query))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def plan(session: Session, clock: Clock) -> MigrationPlan:
    return MigrationPlan(session, clock=clock)


def _wave(
    plan: MigrationPlan,
    name: str = "1940s",
    cohort: dict[str, object] | None = None,
    quota: int = 100,
    starts_on: dt.date = dt.date(2026, 3, 2),
    deadline: dt.date = dt.date(2026, 6, 30),
) -> MigrationWave:
    wave = plan.create(name, cohort or {"birth_year": [1940, 1949]}, starts_on, deadline, quota)
    plan._session.commit()
    return wave


# --- waves -------------------------------------------------------------------------------------


def test_a_wave_is_stored_with_its_cohort_and_listed_with_nobody_invited(
    plan: MigrationPlan, session: Session
) -> None:
    _wave(plan, "later", {"bank": "Nordbank"}, quota=5, starts_on=dt.date(2026, 5, 1))
    _wave(plan, "first", {"birth_year": [1940, 1949], "bank": "Sydbank"}, quota=7)
    stored = session.scalars(select(MigrationWave).where(MigrationWave.name == "first")).one()
    assert stored.cohort == {"birth_year": [1940, 1949], "bank": "Sydbank"}
    assert (stored.starts_on, stored.deadline, stored.quota) == (
        dt.date(2026, 3, 2),
        dt.date(2026, 6, 30),
        7,
    )
    listed = plan.list()
    assert [(w.name, w.invited, w.quota) for w in listed] == [("first", 0, 7), ("later", 0, 5)]
    assert listed[0].cohort.describe() == "born 1940-1949, bank Sydbank"


@pytest.mark.parametrize(
    "cohort",
    [
        {},
        {"birth_years": [1940, 1949]},  # a misspelt key must not widen the wave to everyone
        {"birth_year": [1949, 1940]},
        {"birth_year": [1940]},
        {"birth_year": "1940-1949"},
        {"birth_year": [1940, True]},
        {"birth_year": [1700, 1949]},
        {"bank": ""},
        {"bank": 7},
        {"bank": "B" * 65},
        {"bank": "line\nbreak"},
    ],
)
def test_a_cohort_with_unknown_keys_or_bad_values_is_refused(cohort: dict[str, object]) -> None:
    with pytest.raises(InvalidWave) as raised:
        Cohort.from_json(cohort)
    assert raised.value.field == "cohort"
    assert raised.value.detail.startswith("cohort: ")


def test_a_cohort_round_trips_through_its_stored_form() -> None:
    for data in (
        {"birth_year": [1940, 1949]},
        {"bank": "Nordbank"},
        {"birth_year": [1950, 1950], "bank": "Sydbank"},
    ):
        assert Cohort.from_json(data).to_json() == data
    assert Cohort(birth_years=(1950, 1950)).describe() == "born 1950"


WAVE = {
    "name": "wave",
    "cohort": {"birth_year": [1940, 1949]},
    "starts_on": dt.date(2026, 3, 2),
    "deadline": dt.date(2026, 6, 30),
    "quota": 10,
}
REFUSED_WAVES: list[tuple[dict[str, Any], str]] = [
    ({"deadline": dt.date(2026, 3, 2)}, "deadline"),  # the same day as the start
    ({"deadline": dt.date(2026, 3, 1)}, "deadline"),
    ({"quota": 0}, "quota"),
    ({"quota": -5}, "quota"),
    ({"quota": True}, "quota"),
    ({"quota": 50_000_001}, "quota"),
    ({"name": "  "}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "tab\tname"}, "name"),
    ({"cohort": {"birth_year": [1949, 1940]}}, "cohort"),
    ({"cohort": {"town": "Aarhus"}}, "cohort"),
]


def test_a_wave_that_cannot_be_planned_is_refused_by_field_and_nothing_is_stored(
    plan: MigrationPlan, session: Session
) -> None:
    for changes, field in REFUSED_WAVES:
        with pytest.raises(InvalidWave) as raised:
            plan.create(**(WAVE | changes))
        assert (raised.value.field, raised.value.code) == (field, "invalid-wave"), changes
        assert raised.value.detail.startswith(f"{field}: ")
    session.commit()
    assert session.scalar(select(func.count()).select_from(MigrationWave)) == 0
    plan.create(**WAVE)  # the same values with nothing changed are accepted
    session.commit()
    assert [w.name for w in plan.list()] == ["wave"]


def test_a_second_wave_of_the_same_name_is_refused_and_the_session_stays_usable(
    plan: MigrationPlan, session: Session
) -> None:
    _wave(plan, "1940s")
    with pytest.raises(WaveExists):
        plan.create("1940s", {"bank": "Nordbank"}, dt.date(2026, 4, 1), dt.date(2026, 5, 1), 3)
    _wave(plan, "1950s", {"birth_year": [1950, 1959]})
    assert [w.name for w in plan.list()] == ["1940s", "1950s"]


def test_an_unknown_wave_is_not_found(plan: MigrationPlan) -> None:
    with pytest.raises(WaveNotFound):
        plan.invite("nobody's wave")


# --- invitations ---------------------------------------------------------------------------------


def test_invitation_takes_the_cohort_in_user_id_order_up_to_the_quota(
    plan: MigrationPlan, session: Session, clock: Clock
) -> None:
    add_users(
        session,
        [
            user_row("u07", 1941, "Nordbank"),
            user_row("u01", 1940, "Nordbank"),
            user_row("u02", 1949, "Nordbank"),
            user_row("u03", 1950, "Nordbank"),  # born too late
            user_row("u04", 1945, "Sydbank"),  # another bank
            user_row("u05", 1945, None),  # no bank
            user_row("u06", 1945, "Nordbank", LegacyUserStatus.CLOSED),
            user_row("u08", 1945, "Nordbank", LegacyUserStatus.MIGRATED),
            user_row("u09", 1946, "Nordbank"),  # has a flow already
            user_row("u10", 1947, "Nordbank"),  # invited by another wave
            user_row("u11", 1948, "Nordbank"),
            user_row("u12", 1948, "Nordbank"),
        ],
    )
    add_flow(session, "u09", None, ProofingChannel.BANK, [(MONDAY, "started", "ok", None)])
    other = _wave(plan, "Nordbank", {"bank": "Nordbank", "birth_year": [1947, 1947]}, quota=1)
    assert plan.invite("Nordbank").invited == 1
    wave = _wave(plan, "1940s Nordbank", {"birth_year": [1940, 1949], "bank": "Nordbank"}, 4)

    run = plan.invite("1940s Nordbank")

    assert (run.invited, run.total, run.quota) == (4, 4, 4)
    assert invited_ids(session, wave.id) == ["u01", "u02", "u07", "u11"]
    assert invited_ids(session, other.id) == ["u10"]
    invitation = session.get(MigrationInvitation, "u01")
    assert invitation is not None
    assert (invitation.invited_at, invitation.reminders, invitation.reminded_at) == (
        clock.at,
        0,
        None,
    )


def test_inviting_again_invites_nobody_twice_and_only_newcomers_while_below_quota(
    plan: MigrationPlan, session: Session, clock: Clock
) -> None:
    add_users(session, [user_row(f"u{i}", 1940 + i) for i in range(3)])
    wave = _wave(plan, quota=5)
    assert plan.invite(wave.name).invited == 3
    clock.advance(days=1)

    again = plan.invite(wave.name)

    assert (again.invited, again.total) == (0, 3)
    assert invited_ids(session) == ["u0", "u1", "u2"]
    add_users(session, [user_row(f"v{i}", 1945) for i in range(4)])
    later = plan.invite(wave.name)
    assert (later.invited, later.total) == (2, 5)
    assert invited_ids(session) == ["u0", "u1", "u2", "v0", "v1"]
    first = session.get(MigrationInvitation, "u0")
    newcomer = session.get(MigrationInvitation, "v0")
    assert first is not None
    assert newcomer is not None
    assert first.invited_at == MONDAY  # kept, not refreshed
    assert newcomer.invited_at == MONDAY + dt.timedelta(days=1)
    assert plan.invite(wave.name).invited == 0


def test_invitation_in_small_batches_keeps_to_the_quota(
    plan: MigrationPlan, session: Session
) -> None:
    add_users(session, [user_row(f"u{i:02d}", 1945) for i in range(12)])
    wave = _wave(plan, quota=7)

    run = plan.invite(wave.name, batch_size=3)

    assert (run.invited, run.batches) == (7, 3)  # 3 + 3 + 1
    assert invited_ids(session) == [f"u{i:02d}" for i in range(7)]


def test_an_invitation_run_that_dies_keeps_its_whole_batches_and_the_next_run_completes_it(
    engine: Engine, plan: MigrationPlan, session: Session, sessions: sessionmaker[Session]
) -> None:
    add_users(session, [user_row(f"u{i:02d}", 1945) for i in range(10)])
    wave = _wave(plan, quota=8)
    inserts = 0

    def die_at_the_third_batch(*args: object) -> None:
        nonlocal inserts
        if str(args[2]).startswith("INSERT INTO migration_invitations"):
            inserts += 1
            if inserts == 3:
                raise RuntimeError("killed")

    event.listen(engine, "before_cursor_execute", die_at_the_third_batch)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            plan.invite(wave.name, batch_size=3)
    finally:
        event.remove(engine, "before_cursor_execute", die_at_the_third_batch)
    session.rollback()
    with sessions() as other:  # what was committed, as another connection sees it
        assert invited_ids(other) == [f"u{i:02d}" for i in range(6)]

    run = plan.invite(wave.name, batch_size=3)

    assert (run.invited, run.total) == (2, 8)
    assert invited_ids(session) == [f"u{i:02d}" for i in range(8)]


def test_invitation_before_the_wave_starts_is_refused(
    plan: MigrationPlan, session: Session
) -> None:
    add_users(session, [user_row("u1")])
    # 2 March 2026 00:30 in Copenhagen is still 1 March in UTC: the plan's days are Danish.
    early = MigrationPlan(session, clock=Clock(dt.datetime(2026, 3, 1, 22, 0, tzinfo=dt.UTC)))
    wave = _wave(early, starts_on=dt.date(2026, 3, 3))
    with pytest.raises(WaveNotStarted):
        early.invite(wave.name)
    on_the_day = MigrationPlan(session, clock=Clock(dt.datetime(2026, 3, 2, 23, 30, tzinfo=dt.UTC)))
    assert on_the_day.invite(wave.name).invited == 1
    assert invited_ids(session) == ["u1"]


def test_invitation_and_wave_creation_are_audited_without_people_in_them(
    session: Session, clock: Clock
) -> None:
    from server.services.audit import AuditLog

    log = AuditLog(session, clock)

    def record(name: str, details: dict[str, Any]) -> None:
        log.append(name, actor="cli:test", subject=str(details["wave"]), details=details)

    plan = MigrationPlan(session, clock=clock, audit=record)
    add_users(session, [user_row("u1"), user_row("u2")])
    _wave(plan, quota=10)
    plan.invite("1940s")
    entries = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert [(e.event, e.subject) for e in entries] == [
        ("migration.wave_created", "1940s"),
        ("migration.wave_invited", "1940s"),
    ]
    assert entries[1].details == {"wave": "1940s", "invited": 2, "total": 2, "quota": 10}
    assert "u1" not in str([e.details for e in entries])


# --- reminders -------------------------------------------------------------------------------


POLICY = ReminderPolicy(
    after_invitation=dt.timedelta(days=14),
    idle=dt.timedelta(days=3),
    interval=dt.timedelta(days=7),
    max_reminders=2,
)


def _remind(session: Session, at: dt.datetime) -> tuple[Any, list[Any]]:
    plan = MigrationPlan(session, clock=Clock(at))
    run = plan.remind(POLICY)
    listed = list(plan.reminders(run.at))
    session.commit()
    return run, listed


def test_people_invited_long_ago_who_have_not_started_are_reminded_each_interval_up_to_a_maximum(
    plan: MigrationPlan, session: Session
) -> None:
    add_users(session, [user_row("u1"), user_row("u2"), user_row("u3"), user_row("u4")])
    _wave(plan, quota=10)
    plan.invite("1940s")
    day = dt.timedelta(days=1)
    add_flow(  # u3 started (and finished), so is not reminded to start
        session,
        "u3",
        None,
        ProofingChannel.SELF_SERVICE,
        [(MONDAY + day, "started", "ok", None), (MONDAY + day, "completed", "ok", None)],
    )
    session.execute(  # u4 was closed in the legacy eID since
        _users.update().where(_users.c.user_id == "u4").values(status="closed")
    )
    session.commit()

    assert _remind(session, MONDAY + 14 * day - dt.timedelta(seconds=1))[0].not_started == 0
    run, listed = _remind(session, MONDAY + 14 * day)
    assert (run.not_started, run.idle) == (2, 0)
    assert [(r.user_id, r.reason, r.wave, r.step, r.invited_at, r.count) for r in listed] == [
        ("u1", "not_started", "1940s", None, MONDAY, 1),
        ("u2", "not_started", "1940s", None, MONDAY, 1),
    ]
    assert (listed[0].person_number, listed[0].name) == ("pn-u1", "Person u1")
    assert _remind(session, MONDAY + 20 * day)[0].not_started == 0  # within the interval
    _run, listed = _remind(session, MONDAY + 21 * day)
    assert [(r.user_id, r.count) for r in listed] == [("u1", 2), ("u2", 2)]
    assert _remind(session, MONDAY + 60 * day)[0].not_started == 0  # two is the maximum
    invitation = session.get(MigrationInvitation, "u1")
    assert invitation is not None
    assert (invitation.reminders, invitation.reminded_at) == (2, MONDAY + 21 * day)


def test_stopped_flows_are_reminded_with_an_event_at_the_step_they_stopped(
    plan: MigrationPlan, session: Session
) -> None:
    day = dt.timedelta(days=1)
    add_users(session, [user_row(f"u{i}") for i in range(1, 6)])
    wave = _wave(plan, quota=10)
    plan.invite("1940s")
    stalled = add_flow(
        session,
        "u1",
        wave.id,
        ProofingChannel.SELF_SERVICE,
        [
            (MONDAY + day, "started", "ok", None),
            (MONDAY + day, "legacy_proven", "ok", None),
            (MONDAY + day, "details_confirmed", "failed", None),
        ],
    )
    abandoned = add_flow(
        session,
        "u2",
        wave.id,
        ProofingChannel.BANK,
        [(MONDAY, "started", "ok", None), (MONDAY + day, "authenticator_chosen", "dropped", "piv")],
    )
    add_flow(
        session,
        "u3",
        wave.id,
        ProofingChannel.SELF_SERVICE,
        [(MONDAY, "started", "ok", None), (MONDAY, "completed", "ok", None)],
    )
    add_flow(  # recent: not idle yet
        session,
        "u4",
        wave.id,
        ProofingChannel.SELF_SERVICE,
        [(MONDAY + 3 * day, "started", "ok", None)],
    )
    add_flow(  # moved on in the legacy eID (migrated elsewhere): no reminder
        session, "u5", wave.id, ProofingChannel.SELF_SERVICE, [(MONDAY, "started", "ok", None)]
    )
    session.execute(_users.update().where(_users.c.user_id == "u5").values(status="migrated"))
    # A completed flow is not reminded, even if only its state says so.
    flows = cast(Table, MigrationFlow.__table__)
    session.execute(flows.update().where(flows.c.user_id == "u3").values(completed_at=None))
    session.commit()

    at = MONDAY + 4 * day
    run, listed = _remind(session, at)

    assert (run.not_started, run.idle) == (0, 2)
    assert [(r.user_id, r.reason, r.wave, r.step, r.count) for r in listed] == [
        ("u1", "idle", "1940s", "details_confirmed", 1),
        ("u2", "idle", "1940s", "authenticator_chosen", 1),
    ]
    reminded = session.execute(
        select(MigrationEvent.flow_id, MigrationEvent.step, MigrationEvent.channel)
        .where(MigrationEvent.outcome == "reminded")
        .order_by(MigrationEvent.step)
    ).all()
    assert [tuple(row) for row in reminded] == [
        (abandoned.id, "authenticator_chosen", ProofingChannel.BANK),
        (stalled.id, "details_confirmed", ProofingChannel.SELF_SERVICE),
    ]
    session.refresh(stalled)
    assert (stalled.reminded_at, stalled.updated_at) == (at, MONDAY + day)  # not activity
    invitation = session.get(MigrationInvitation, "u1")
    assert invitation is not None
    assert (invitation.reminders, invitation.reminded_at) == (1, at)

    _run, listed = _remind(session, at + 6 * day)  # u1 and u2 within the interval
    assert [(r.user_id, r.step, r.count) for r in listed] == [("u4", "started", 1)]
    _run, listed = _remind(session, at + 7 * day)
    assert [(r.user_id, r.step, r.count) for r in listed] == [
        ("u1", "details_confirmed", 2),  # the reminder before is not the step it stopped at
        ("u2", "authenticator_chosen", 2),
    ]
    _run, listed = _remind(session, at + 30 * day)  # u1 and u2 had the maximum
    assert [(r.user_id, r.count) for r in listed] == [("u4", 2)]


def test_a_person_reminded_to_start_is_not_reminded_again_within_the_interval_once_started(
    plan: MigrationPlan, session: Session
) -> None:
    day = dt.timedelta(days=1)
    add_users(session, [user_row("u1")])
    wave = _wave(plan, quota=10)
    plan.invite("1940s")
    assert _remind(session, MONDAY + 14 * day)[0].not_started == 1
    add_flow(
        session, "u1", wave.id, ProofingChannel.BANK, [(MONDAY + 15 * day, "started", "ok", None)]
    )
    assert _remind(session, MONDAY + 19 * day)[0].idle == 0  # idle 4 days, reminded 5 ago
    _run, listed = _remind(session, MONDAY + 21 * day)
    assert [(r.user_id, r.reason, r.count) for r in listed] == [("u1", "idle", 1)]
    invitation = session.get(MigrationInvitation, "u1")
    assert invitation is not None
    assert invitation.reminders == 2  # the person's reminders, of either kind


INVITE_50K = 50_000


def test_fifty_thousand_people_are_invited_in_a_few_statements(
    engine: Engine, session: Session, clock: Clock
) -> None:
    # The population is made by the database too: 50,000 rows in one INSERT ... SELECT.
    _fill_population(session, INVITE_50K)
    plan = MigrationPlan(session, clock=clock)
    wave = _wave(plan, "everyone born 1900-2010", {"birth_year": [1900, 2010]}, INVITE_50K)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    started = time.perf_counter()
    try:
        run = plan.invite(wave.name, batch_size=10_000)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    elapsed = time.perf_counter() - started

    assert (run.invited, run.total, run.batches) == (INVITE_50K, INVITE_50K, 5)
    assert session.scalar(select(func.count()).select_from(MigrationInvitation)) == INVITE_50K
    # Eight statements a batch (begin, lock, count, range end, create a staging table, stage
    # the chosen, invite them, drop it) and a few more, whatever the number of people.
    assert len(statements) <= 8 * run.batches + 6, statements
    assert elapsed < 30, f"inviting {INVITE_50K} took {elapsed:.1f} s"
    assert plan.invite(wave.name).invited == 0


def _fill_population(session: Session, count: int, prefix: str = "p") -> None:
    """``count`` active legacy users ``p0000000``... born 1900-2009, made by the database in
    one ``INSERT ... SELECT`` over a recursive counter."""
    seed = select(literal(0, Integer()).label("n")).cte("numbers", recursive=True)
    numbers = seed.union_all(select((seed.c.n + 1).label("n")).where(seed.c.n < count - 1))
    n = numbers.c.n
    if session.get_bind().dialect.name == "postgresql":
        digits = func.lpad(sql_cast(n, String()), 7, "0", type_=String())
    else:
        digits = func.printf("%07d", n, type_=String())
    template = user_row("x")
    columns = {
        "user_id": literal(prefix, String()) + digits,
        "person_number": literal(f"pn-{prefix}", String()) + digits,
        "name": literal("Person ", String()) + digits,
        "birth_year": 1900 + n % 110,
        "bank": literal(None, String()),
        "password_hash": literal(template["password_hash"], String()),
        "status": literal("active", String()),
        "failures": literal(0, Integer()),
        "row_digest": literal(template["row_digest"], String()),
        "imported_at": literal(template["imported_at"], UtcDateTime()),
        "version": literal(1, Integer()),
    }
    session.execute(
        insert(_users).from_select(list(columns), select(*columns.values()).select_from(numbers))
    )
    session.commit()


# --- the command ---------------------------------------------------------------------------------


def _cli(database_url: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["migration", "waves", *args, "--database-url", database_url])


def test_the_waves_commands_plan_invite_and_write_the_reminder_list(
    engine: Engine, database_url: str, session: Session, tmp_path: Path
) -> None:
    today = dt.datetime.now(dt.UTC).astimezone(PLAN_ZONE).date()
    add_users(session, [user_row("u1", 1941), user_row("u2", 1942), user_row("u3", 1960)])
    start = (today - dt.timedelta(days=30)).isoformat()
    deadline = (today + dt.timedelta(days=60)).isoformat()

    added = _cli(
        database_url,
        "add",
        "--name",
        "1940s",
        "--birth-years",
        "1940-1949",
        "--start",
        start,
        "--deadline",
        deadline,
        "--quota",
        "50",
    )
    assert added.exit_code == 0, added.output
    assert added.stdout == f"wave 1940s: born 1940-1949, quota 50, {start} to {deadline}\n"
    invited = _cli(database_url, "invite", "1940s")
    assert invited.exit_code == 0, invited.output
    assert invited.stdout == "wave 1940s: invited 2 now, 2 of 50 in all\n"
    listed = _cli(database_url, "list", "--json")
    assert json.loads(listed.stdout) == [
        {
            "name": "1940s",
            "cohort": {"birth_year": [1940, 1949]},
            "starts_on": start,
            "deadline": deadline,
            "quota": 50,
            "invited": 2,
        }
    ]
    # u1 was invited long ago (as if the wave had invited them a month back).
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=20)
    session.execute(
        _invitations_table()
        .update()
        .where(_invitations_table().c.user_id == "u1")
        .values(invited_at=long_ago)
    )
    session.commit()
    out = tmp_path / "mail" / "reminders.csv"

    reminded = _cli(database_url, "remind", "--out", str(out))

    assert reminded.exit_code == 0, reminded.output
    assert reminded.stdout.startswith(f"1 reminders written to {out}: 1 not started")
    with out.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == list(REMINDER_COLUMNS)
    assert rows[1][:6] == ["u1", "pn-u1", "Person u1", "not_started", "1940s", ""]
    assert dt.datetime.fromisoformat(rows[1][6]) == long_ago
    assert rows[1][7] == "1"
    assert len(rows) == 2
    assert out.stat().st_mode & 0o777 == 0o600
    events = session.scalars(select(AuditEntry.event).order_by(AuditEntry.seq)).all()
    assert list(events) == [
        "migration.wave_created",
        "migration.wave_invited",
        "migration.reminded",
    ]
    again = _cli(database_url, "remind", "--out", str(out))
    assert again.stdout.startswith(f"0 reminders written to {out}")


def test_the_reminder_list_that_cannot_be_written_reminds_nobody(
    engine: Engine, database_url: str, session: Session, tmp_path: Path
) -> None:
    add_users(session, [user_row("u1")])
    plan = MigrationPlan(session, clock=Clock(dt.datetime.now(dt.UTC) - dt.timedelta(days=20)))
    _wave(plan, starts_on=dt.date(2000, 1, 1), deadline=dt.date(2100, 1, 1))
    plan.invite("1940s")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")

    result = _cli(database_url, "remind", "--out", str(blocked / "reminders.csv"))

    assert result.exit_code == 1
    assert "nobody was reminded" in result.output
    session.expire_all()
    invitation = session.get(MigrationInvitation, "u1")
    assert invitation is not None
    assert (invitation.reminders, invitation.reminded_at) == (0, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--birth-years", "1940-1949", "--quota", "0"], "quota: the quota is a number"),
        (["--birth-years", "1949-1940"], "cohort: birth years are a range"),
        ([], "cohort: give a birth-year range, a bank or both"),
        (["--birth-years", "forties"], "expected a year or a range"),
        (["--bank", "Nordbank", "--deadline", "2026-03-01"], "deadline: the deadline is after"),
    ],
)
def test_the_add_command_refuses_a_bad_wave_with_its_reason(
    engine: Engine, database_url: str, args: list[str], message: str
) -> None:
    base = {"--name": "w", "--start": "2026-03-02", "--deadline": "2026-06-30", "--quota": "5"}
    for index in range(0, len(args), 2):
        base[args[index]] = args[index + 1]
    result = _cli(database_url, "add", *[part for pair in base.items() for part in pair])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_inviting_an_unknown_or_unstarted_wave_exits_2(
    engine: Engine, database_url: str, session: Session
) -> None:
    result = _cli(database_url, "invite", "nothing")
    assert (result.exit_code, "there is no migration wave with this name" in result.output) == (
        2,
        True,
    )
    _wave(MigrationPlan(session), starts_on=dt.date(2100, 1, 1), deadline=dt.date(2100, 2, 1))
    result = _cli(database_url, "invite", "1940s")
    assert result.exit_code == 2
    assert "the wave has not started yet" in result.output


def test_the_commands_refuse_a_missing_database_without_making_one(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = _cli(f"sqlite+pysqlite:///{missing}", "list")
    assert result.exit_code == 1
    assert "no database at" in result.output
    assert not missing.exists()


def _invitations_table() -> Table:
    return cast(Table, MigrationInvitation.__table__)
