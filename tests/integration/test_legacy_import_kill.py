"""Killing the importer at any moment loses nothing and duplicates nothing: ``akkreditiv legacy
import`` runs as its own process and is SIGKILLed at several points of a 30,000-row export,
then run again; the result equals one clean import, on SQLite and on PostgreSQL. On PostgreSQL
it is also killed in the middle of a batch's ``COPY``, held there by a row the test keeps
uncommitted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from server.services.migration.generator import generate
from server.services.migration.import_rows import RowRejected, parse_json_line
from server.services.migration.importer import LegacyImporter
from server.services.secretbox import SecretBox
from server.storage.engine import create_engine_for, migrate
from server.storage.migration_tables import ImportReject, ImportRun, ImportStatus, LegacyUser
from tests.integration.conftest import AKKREDITIV
from tests.unit.server.migration.test_importer import legacy_content_digest
from tests.unit.server.storage.databases import postgres_schema

pytestmark = pytest.mark.integration

ROWS = 30_000
BATCH = 2_000
# Committed lines after which to kill, one for each phase a kill can hit: at once (maybe
# before the run is recorded), after the first committed batch, and part-way through a run
# that was itself resumed. Killing a resumed run again would take the same path as the third.
KILL_AFTER = (0, 1, 14_000)
POLL_S = 0.02
DEADLINE_S = 300.0
T = TypeVar("T")


@dataclass(frozen=True)
class Reference:
    """One clean import of the export, to compare the killed-and-resumed one with."""

    digest: str
    users: int
    rejects: list[tuple[int, str]]
    imported: int


@pytest.fixture(scope="module")
def kek(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "kek.bin"
    SecretBox.from_file(path, create=True)
    return path


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "legacy.jsonl"
    generate(path, count=ROWS, seed=77, bad_every=499, workers=1)
    return path


@pytest.fixture(scope="module")
def reference(export: Path, kek: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    engine = create_engine_for(f"sqlite+pysqlite:///{tmp_path_factory.mktemp('ref') / 'ref.db'}")
    try:
        migrate(engine)
        box = SecretBox.from_file(kek)
        summary = LegacyImporter(engine, box, batch_size=BATCH).run(export)
        return Reference(
            digest=legacy_content_digest(engine, box),
            users=_count(engine),
            rejects=_rejects(engine),
            imported=summary.inserted,
        )
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'legacy.db'}"
    else:
        with postgres_schema() as url:  # skips, or fails when CI=true, without PostgreSQL
            yield url


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(LegacyUser)) or 0)


def _rejects(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as connection:
        return [
            (int(line), str(reason))
            for line, reason in connection.execute(
                select(ImportReject.line_number, ImportReject.reason).order_by(
                    ImportReject.line_number
                )
            )
        ]


def _committed_line(engine: Engine) -> int | None:
    with engine.connect() as connection:
        return connection.scalar(select(func.max(ImportRun.line_number)))


def _importer(export: Path, url: str, kek: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *AKKREDITIV,
            *("legacy", "import", str(export), "--database-url", url),
            # One parsing worker: the kill also takes down a process the importer forked.
            *("--batch", str(BATCH), "--workers", "1", "--quiet", "--json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AKKREDITIV_KEK_FILE": str(kek)},
    )


def _kill_after(process: subprocess.Popen[str], engine: Engine, lines: int) -> None:
    """SIGKILL the importer once its run has committed at least ``lines`` lines (at once for
    0). The condition is read from ``import_runs``; the pause between reads only spaces
    them out."""
    deadline = time.monotonic() + DEADLINE_S
    while lines > 0 and process.poll() is None:
        committed = _committed_line(engine) if _has_runs(engine) else None
        if committed is not None and committed >= lines:
            break
        assert time.monotonic() < deadline, f"no progress to line {lines} in {DEADLINE_S} s"
        time.sleep(POLL_S)
    assert process.poll() is None, f"the importer ended before line {lines}: kill it earlier"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _has_runs(engine: Engine) -> bool:
    with engine.connect() as connection:
        return engine.dialect.has_table(connection, "import_runs")


def test_killed_imports_resume_to_exactly_one_clean_import(
    database_url: str, export: Path, kek: Path, reference: Reference
) -> None:
    engine = create_engine_for(database_url)
    try:
        progress: list[int | None] = []
        for lines in KILL_AFTER:
            _kill_after(_importer(export, database_url, kek), engine, lines)
            progress.append(_committed_line(engine) if _has_runs(engine) else None)
        # Every kill after the first left a run part-way: the kills really interrupted it.
        assert all(p is not None and 0 < p < ROWS for p in progress[1:]), progress
        assert (progress[2] or 0) >= KILL_AFTER[2]
        final = _importer(export, database_url, kek)
        out, err = final.communicate(timeout=DEADLINE_S)
        assert final.returncode == 0, err
        summary = json.loads(out)
        assert summary["resumed"] is True
        assert summary["first_line"] > KILL_AFTER[-1]
        with engine.connect() as connection:
            runs = list(connection.execute(select(ImportRun)))
        assert len(runs) == 1  # every invocation continued the one run of this file
        run = runs[0]
        assert run.status == ImportStatus.COMPLETED
        assert (run.line_number, run.byte_offset) == (ROWS, export.stat().st_size)
        assert run.rows_imported == reference.imported  # none counted twice
        assert run.rows_rejected == len(reference.rejects)
        assert _count(engine) == reference.users
        assert _rejects(engine) == reference.rejects
        assert legacy_content_digest(engine, SecretBox.from_file(kek)) == reference.digest
    finally:
        engine.dispose()


# The line whose row the test holds: in the third batch, so two batches are committed first.
HELD_LINE = 2 * BATCH + BATCH // 2
# The user the test holds a card serial for: neither its id nor its "person number" is a
# value the import writes.
HOLDER = "held-by-the-test"


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _held_row(export: Path) -> tuple[int, dict[str, Any]]:
    """The first good row at or after ``HELD_LINE``: its line number and its fields."""
    with export.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if number < HELD_LINE:
                continue
            try:
                parse_json_line(raw.decode())
            except (RowRejected, UnicodeDecodeError):
                continue
            return number, json.loads(raw)
    raise AssertionError("no good row after the held line")


def _hold(blocker: psycopg.Connection[Any], table: str, row: dict[str, Any]) -> None:
    """Insert, uncommitted, what the import's ``COPY`` into ``table`` will collide with: the
    row's own user (the users' COPY waits on its key), or a user of the test's own with the
    row's card serial (the users' COPY goes through, the cards' waits)."""
    user_id, number = (
        (row["user_id"], row["person_number"]) if table == "legacy_users" else (HOLDER, HOLDER)
    )
    blocker.execute(
        "INSERT INTO legacy_users (user_id, person_number, name, birth_year, password_hash,"
        " status, failures, row_digest, imported_at, version)"
        " VALUES (%s, %s, 'Held', 1901, 'x', 'active', 0, '', now(), 1)",
        (user_id, number),
    )
    if table == "legacy_key_cards":
        blocker.execute(
            "INSERT INTO legacy_key_cards (serial, user_id, sealed_secret, used, remaining,"
            " status, issued_at, version) VALUES (%s, %s, '', '', 148, 'active', now(), 1)",
            (row["key_card"]["serial"], HOLDER),
        )


def _copy_waiting(admin: psycopg.Connection[Any], blocker: int, table: str) -> int | None:
    """The backend whose ``COPY`` into ``table`` waits for the blocker's transaction."""
    found = admin.execute(
        "SELECT waiting.pid FROM pg_locks waiting"
        " JOIN pg_locks held ON held.locktype = 'transactionid'"
        " AND held.transactionid = waiting.transactionid AND held.granted"
        " JOIN pg_stat_activity activity ON activity.pid = waiting.pid"
        " WHERE waiting.locktype = 'transactionid' AND NOT waiting.granted"
        " AND held.pid = %s AND activity.query LIKE %s",
        (blocker, f"COPY {table} %"),
    ).fetchone()
    return None if found is None else int(found[0])


def _backend_gone(admin: psycopg.Connection[Any], pid: int) -> bool | None:
    found = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return True if found is None else None


def _wait_for(condition: Callable[[], T | None], what: str) -> T:
    """Poll ``condition`` until it gives something; the pause between reads only spaces them."""
    deadline = time.monotonic() + DEADLINE_S
    while (value := condition()) is None:
        assert time.monotonic() < deadline, f"{what}: not in {DEADLINE_S} s"
        time.sleep(POLL_S)
    return value


@pytest.mark.parametrize("table", ["legacy_users", "legacy_key_cards"])
def test_a_kill_in_the_middle_of_a_copy_loses_and_duplicates_nothing(
    table: str, export: Path, kek: Path, reference: Reference
) -> None:
    held_line, held = _held_row(export)
    with postgres_schema() as url:  # skips, or fails when CI=true, without PostgreSQL
        engine = create_engine_for(url)
        migrate(engine)
        admin = psycopg.connect(_libpq(url), autocommit=True)
        blocker = psycopg.connect(_libpq(url))
        try:
            _hold(blocker, table, held)
            process = _importer(export, url, kek)

            def copy_waits() -> int | None:
                assert process.poll() is None, process.communicate()[1]
                return _copy_waiting(admin, blocker.info.backend_pid, table)

            copying = _wait_for(copy_waits, f"a COPY into {table} waiting for the held row")
            # In the middle of the batch with the held row: those before it are committed.
            committed = _committed_line(engine)
            assert committed is not None
            assert 0 < committed < held_line
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
            assert process.returncode == -signal.SIGKILL
            # Let the row go: the killed importer's backend goes on, finds its client gone at
            # the next message and rolls the batch back.
            blocker.rollback()
            _wait_for(lambda: _backend_gone(admin, copying), "the killed importer's backend")
            with engine.connect() as connection:
                run = connection.execute(select(ImportRun)).one()
                held_users = connection.scalar(
                    select(func.count()).where(LegacyUser.user_id == held["user_id"])
                )
            assert (run.line_number, run.status) == (committed, ImportStatus.RUNNING)
            assert (_count(engine), held_users) == (run.rows_imported, 0)  # none of the batch
            final = _importer(export, url, kek)
            out, err = final.communicate(timeout=DEADLINE_S)
            assert final.returncode == 0, err
            assert json.loads(out)["first_line"] == committed + 1
            with engine.connect() as connection:
                runs = [(r.status, r.rows_imported) for r in connection.execute(select(ImportRun))]
            assert runs == [(ImportStatus.COMPLETED, reference.imported)]  # counted once
            assert _count(engine) == reference.users
            assert _rejects(engine) == reference.rejects
            assert legacy_content_digest(engine, SecretBox.from_file(kek)) == reference.digest
        finally:
            blocker.close()
            admin.close()
            engine.dispose()
