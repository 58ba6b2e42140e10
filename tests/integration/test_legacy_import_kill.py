"""Killing the importer at any moment loses nothing and duplicates nothing: ``akkreditiv legacy
import`` runs as its own process and is SIGKILLed at several points of a 30,000-row export,
then run again; the result equals one clean import, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from server.services.migration.generator import generate
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
