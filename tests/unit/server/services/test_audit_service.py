"""The audit log service on SQLite and PostgreSQL: chained appends over several chains, tampering
found and named, secrets refused, concurrent appends from threads and processes, and the
``akkreditiv audit`` commands."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from akkreditiv.cli import app
from server.services.audit import (
    AuditLog,
    AuditPartitions,
    append_with_retry,
    format_at,
    verify_database,
)
from server.services.audit_chain import GENESIS, Anchor, genesis
from server.services.errors import AuditChainBroken, AuditDetailsRefused, Breakage
from server.storage.audit_repositories import AuditRepository
from server.storage.engine import create_engine_for, migrate, session_factory
from tests.unit.server.storage import conftest as storage
from tests.unit.server.storage.together import READY, run_together

# The storage fixtures: every test runs on SQLite and on PostgreSQL.
database_url = storage.database_url
empty_engine = storage.empty_engine
engine = storage.engine
sessions = storage.sessions

ROOT = Path(__file__).resolve().parents[4]
# A time with microseconds, so the round trip through both databases is really tested.
START = 1_777_000_000.123456


def _clock() -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: START + next(ticks)


def _fill(sessions: sessionmaker[Session], count: int) -> None:
    clock = _clock()
    for n in range(1, count + 1):
        with sessions.begin() as session:
            AuditLog(session, clock).append(
                "credential.activated",
                actor="system",
                subject=f"credential-{n}",
                details={"n": n, "kind": "piv", "reader": {"name": "vpcd 0", "slots": [0, 1]}},
            )


def _broken(sessions: sessionmaker[Session]) -> AuditChainBroken:
    with sessions() as session, pytest.raises(AuditChainBroken) as caught:
        verify_database(session)
    return caught.value


def _execute(sessions: sessionmaker[Session], *statements: str, **params: object) -> None:
    with sessions.begin() as session:
        for statement in statements:
            session.execute(text(statement), params)


def test_append_builds_a_chain_that_verifies(sessions: sessionmaker[Session]) -> None:
    _fill(sessions, 8)
    with sessions() as session:
        entries = AuditRepository(session).all_in_order()
        assert verify_database(session) == 8
    assert [entry.seq for entry in entries] == list(range(1, 9))
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert format_at(entries[0].at) == "2026-04-24T03:06:40.123456+00:00"
    assert entries[2].details == {
        "n": 3,
        "kind": "piv",
        "reader": {"name": "vpcd 0", "slots": [0, 1]},
    }


def test_append_chains_several_events_in_one_transaction(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        log = AuditLog(session, _clock())
        first = log.append("identity.created", actor="operator-7", subject="id-1", details={})
        second = log.append("credential.ordered", actor="operator-7", subject="id-1", details={})
        assert (first.seq, second.seq, second.prev_hash) == (1, 2, first.hash)
    with sessions() as session:
        assert verify_database(session) == 2


def test_verify_database_counts_nothing_when_empty(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert verify_database(session) == 0


def test_verify_database_finds_altered_details(sessions: sessionmaker[Session]) -> None:
    _fill(sessions, 5)
    statement = (
        "UPDATE audit_entries SET details = CAST(:details AS JSONB) WHERE seq = 3"
        if sessions.kw["bind"].dialect.name == "postgresql"
        else "UPDATE audit_entries SET details = :details WHERE seq = 3"
    )
    _execute(sessions, statement, details=json.dumps({"n": 3, "kind": "fido2"}))
    error = _broken(sessions)
    assert (error.seq, error.reason) == (3, Breakage.ALTERED)


def test_verify_database_finds_a_removed_middle_entry(sessions: sessionmaker[Session]) -> None:
    _fill(sessions, 5)
    _execute(sessions, "DELETE FROM audit_entries WHERE seq = 3")
    error = _broken(sessions)
    assert (error.seq, error.reason) == (3, Breakage.REMOVED)


def test_verify_database_finds_swapped_entries(sessions: sessionmaker[Session]) -> None:
    _fill(sessions, 5)
    _execute(
        sessions,
        "UPDATE audit_entries SET seq = 0 WHERE seq = 2",
        "UPDATE audit_entries SET seq = 2 WHERE seq = 4",
        "UPDATE audit_entries SET seq = 4 WHERE seq = 0",
    )
    error = _broken(sessions)
    assert (error.seq, error.reason) == (2, Breakage.REORDERED)


def test_verify_database_reports_an_unreadable_row_as_altered(
    sessions: sessionmaker[Session],
) -> None:
    _fill(sessions, 4)
    _execute(sessions, "UPDATE audit_entries SET subject = NULL WHERE seq = 3")
    error = _broken(sessions)
    assert (error.seq, error.reason) == (3, Breakage.ALTERED)


def test_verify_database_finds_a_cut_off_end_only_with_an_anchor(
    sessions: sessionmaker[Session],
) -> None:
    _fill(sessions, 4)
    with sessions() as session:
        last = AuditRepository(session).last()
        assert last is not None
        anchor = Anchor(0, last.seq, last.hash)
    _execute(sessions, "DELETE FROM audit_entries WHERE seq = 4")
    with sessions() as session:
        assert verify_database(session) == 3
        with pytest.raises(AuditChainBroken) as caught:
            verify_database(session, anchors=[anchor])
    assert (caught.value.seq, caught.value.reason) == (4, Breakage.REMOVED)


def test_an_end_cut_off_shows_at_the_next_append(sessions: sessionmaker[Session]) -> None:
    _fill(sessions, 4)
    _execute(sessions, "DELETE FROM audit_entries WHERE seq >= 3")
    with sessions.begin() as session:
        entry = AuditLog(session, _clock()).append(
            "after.cut", actor="system", subject="s", details={}
        )
    # The head still names entry 4: the next entry chains after it, and the gap shows.
    assert entry.seq == 5
    error = _broken(sessions)
    assert (error.seq, error.reason) == (3, Breakage.REMOVED)


def test_concurrent_appends_queue_for_the_head_and_never_conflict(database_url: str) -> None:
    # As the server runs them: SQLite transactions begin IMMEDIATE; PostgreSQL's lock the head.
    engine = create_engine_for(database_url, sqlite_immediate=True)
    migrate(engine)
    sessions = session_factory(engine)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for n in range(15):
                append_with_retry(
                    sessions, "tick", actor=name, subject=str(n), details={}, attempts=1
                )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"writer-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sessions() as session:
        assert verify_database(session) == 60
    engine.dispose()


def test_the_events_of_one_transaction_stay_in_one_chain(sessions: sessionmaker[Session]) -> None:
    partitions = AuditPartitions(4)
    with sessions.begin() as session:
        log = AuditLog(session, _clock(), partitions)
        entries = [
            log.append(f"step-{n}", actor="system", subject="login-1", details={}) for n in range(3)
        ]
    with sessions.begin() as session:
        after = AuditLog(session, _clock(), partitions).append(
            "next", actor="system", subject="login-2", details={}
        )
    assert {entry.chain for entry in entries} == {entries[0].chain}
    assert [entry.seq for entry in entries] == [1, 2, 3]
    assert [entry.prev_hash for entry in entries] == [
        genesis(entries[0].chain),
        entries[0].hash,
        entries[1].hash,
    ]
    # One after another, appends take the chains in turn.
    assert (after.chain, after.seq) == ((entries[0].chain + 1) % 4, 1)
    with sessions() as session:
        assert verify_database(session) == 4


@pytest.mark.databases("postgresql")
def test_an_append_takes_a_chain_nobody_holds_without_waiting(database_url: str) -> None:
    # As the server runs: a lock not had within lock_timeout fails the request.
    engine = create_engine_for(database_url, lock_timeout_ms=1000)
    migrate(engine)
    sessions = session_factory(engine)
    partitions = AuditPartitions(2)
    with sessions() as holder:
        held = AuditLog(holder, _clock(), partitions).append(
            "held", actor="system", subject="a", details={}
        )  # its chain stays locked until this transaction ends
        for n in range(3):
            with sessions.begin() as session:
                entry = AuditLog(session, _clock(), partitions).append(
                    "other", actor="system", subject=str(n), details={}
                )
            assert entry.chain != held.chain
        holder.commit()
    with sessions() as session:
        assert verify_database(session) == 4
    engine.dispose()


# Appends from a process of their own, as a worker of ``akkreditiv serve`` makes them.
_APPENDER = f"""
import sys
from server.services.audit import AuditPartitions, append_with_retry
from server.storage.engine import create_engine_for, session_factory
url, name, count, chains = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
engine = create_engine_for(url, sqlite_immediate=True)
sessions = session_factory(engine)
partitions = AuditPartitions(chains)
{READY}
for n in range(count):
    append_with_retry(
        sessions, "tick", actor=name, subject=str(n), details={{}}, attempts=1,
        partitions=partitions,
    )
engine.dispose()
"""


def test_appends_from_several_processes_keep_every_chain_intact(database_url: str) -> None:
    engine = create_engine_for(database_url)
    migrate(engine)
    processes, each, chains = 4, 40, 4
    # attempts=1: an append that met a conflict instead of a lock would fail its process.
    run_together(
        _APPENDER, [[database_url, f"p{n}", str(each), str(chains)] for n in range(processes)]
    )
    with session_factory(engine)() as session:
        assert verify_database(session) == processes * each
        heads = AuditRepository(session).heads()
    engine.dispose()
    assert sum(head.seq for head in heads) == processes * each
    assert [head.chain for head in heads if head.seq] == list(range(chains))


@pytest.mark.parametrize(
    "details",
    [{"user_pin": "1234"}, {"device": {"otpSeed": "c2VlZA=="}}, {"codes": ["123456"]}],
)
def test_append_refuses_secret_details_and_writes_nothing(
    sessions: sessionmaker[Session], details: dict[str, object]
) -> None:
    _fill(sessions, 1)
    with sessions() as session:
        with pytest.raises(AuditDetailsRefused) as caught:
            AuditLog(session, _clock()).append(
                "credential.activated",
                actor="system",
                subject="credential-2",
                details=details,  # type: ignore[arg-type]
            )
        assert "1234" not in str(caught.value)
        assert not session.new
        session.commit()
    with pytest.raises(AuditDetailsRefused):
        append_with_retry(sessions, "pin.changed", actor="x", subject="y", details={"pin": "1"})
    with sessions() as session:
        assert verify_database(session) == 1


def test_append_refuses_a_field_longer_than_its_column(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(ValueError, match="event"):
        AuditLog(session).append("e" * 65, actor="system", subject="s", details={})


def test_concurrent_appends_from_threads_keep_the_chain_linear(
    sessions: sessionmaker[Session],
) -> None:
    per_thread = 15
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for n in range(per_thread):
                append_with_retry(
                    sessions, "tick", actor=name, subject=str(n), details={}, attempts=100
                )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"writer-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sessions() as session:
        assert verify_database(session) == 3 * per_thread


def _sqlite_busy(error: BaseException) -> bool:
    orig = getattr(error, "orig", None)
    return (
        isinstance(orig, sqlite3.OperationalError) and orig.sqlite_errorcode == sqlite3.SQLITE_BUSY
    )


def test_tail_returns_the_latest_entries_oldest_first(sessions: sessionmaker[Session]) -> None:
    _fill(sessions, 6)
    with sessions() as session:
        assert [entry.seq for entry in AuditLog(session).tail(4)] == [3, 4, 5, 6]
        assert len(AuditLog(session).tail(20)) == 6


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+pysqlite:///{tmp_path / 'audit.db'}"
    database = create_engine_for(url)
    migrate(database)
    _fill(session_factory(database), 3)
    database.dispose()
    return url


def _cli(*args: str, checkpoints: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AKKREDITIV_")}
    # Not the checkout's var/audit-checkpoints, which a service started there may have filled.
    env["AKKREDITIV_AUDIT_CHECKPOINT_DIR"] = str(checkpoints)
    return subprocess.run(
        [sys.executable, "-m", "akkreditiv", "audit", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_verify_exits_0_when_intact(sqlite_url: str, tmp_path: Path) -> None:
    result = _cli("verify", "--database-url", sqlite_url, checkpoints=tmp_path / "none")
    assert (result.returncode, result.stdout) == (0, "audit log intact: 3 entries\n")


def test_cli_verify_exits_3_when_tampered(sqlite_url: str, tmp_path: Path) -> None:
    database = create_engine_for(sqlite_url)
    _execute(session_factory(database), "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 2")
    database.dispose()
    result = _cli("verify", "--database-url", sqlite_url, checkpoints=tmp_path / "none")
    assert (result.returncode, result.stdout) == (
        3,
        "audit log broken at entry 2 of chain 0: altered\n",
    )


def test_cli_verify_exits_1_when_the_database_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = CliRunner().invoke(
        app, ["audit", "verify", "--database-url", f"sqlite+pysqlite:///{missing}"]
    )
    assert result.exit_code == 1
    assert not missing.exists()


def test_cli_tail_prints_the_latest_entries(sqlite_url: str) -> None:
    result = CliRunner().invoke(app, ["audit", "tail", "-n", "2", "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("0:2  2026-04-24T03:06:41.123456+00:00  credential.activated")
    assert "actor=system  subject=credential-2" in lines[0]
    assert lines[1].endswith(
        '{"kind": "piv", "n": 3, "reader": {"name": "vpcd 0", "slots": [0, 1]}}'
    )
