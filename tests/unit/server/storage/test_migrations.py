"""Migration 0002 (the audit chain's head) on SQLite and PostgreSQL: it starts the head at the
last entry already stored, the trigger moves it with every insert, and it downgrades cleanly."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from server.storage.engine import MIGRATIONS, _alembic_config, current_revision, migrate
from server.storage.tables import AuditEntry

AT = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[4]


def _insert_entry(engine: Engine, seq: int) -> str:
    digest = f"{seq:064x}"
    with engine.begin() as connection:
        connection.execute(
            AuditEntry.__table__.insert(),
            {
                "seq": seq,
                "at": AT,
                "event": "e",
                "actor": "system",
                "subject": "-",
                "details": {},
                "prev_hash": f"{seq - 1:064x}",
                "hash": digest,
            },
        )
    return digest


def _head(engine: Engine) -> Any:
    with engine.connect() as connection:
        return tuple(connection.execute(text("SELECT seq, hash FROM audit_head")).one())


def test_audit_head_starts_at_the_last_stored_entry_and_follows_inserts(
    empty_engine: Engine,
) -> None:
    migrate(empty_engine, "0001")
    _insert_entry(empty_engine, 1)
    second = _insert_entry(empty_engine, 2)

    migrate(empty_engine, "0002")

    assert _head(empty_engine) == (2, second)
    third = _insert_entry(empty_engine, 3)
    assert _head(empty_engine) == (3, third)


def test_audit_head_downgrades_to_plain_entries_and_upgrades_again(empty_engine: Engine) -> None:
    migrate(empty_engine, "0002")
    _insert_entry(empty_engine, 1)
    with empty_engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0001")
    assert current_revision(empty_engine) == "0001"
    assert "audit_head" not in inspect(empty_engine).get_table_names()
    last = _insert_entry(empty_engine, 2)  # no trigger left behind to fail the insert

    migrate(empty_engine, "0002")

    assert _head(empty_engine) == (2, last)


def test_processes_migrating_one_empty_database_at_once_all_succeed(
    database_url: str, empty_engine: Engine
) -> None:
    # As the workers of ``akkreditiv serve --workers N`` do when they start: each is ready
    # (imports done, engine made), then all are told to go together.
    script = (
        "import sys\n"
        "from server.storage.engine import create_engine_for, migrate\n"
        "engine = create_engine_for(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "migrate(engine)\n"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "ready\n"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    errors = [worker.communicate(timeout=120)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0, 0], errors
    assert current_revision(empty_engine) == ScriptDirectory(str(MIGRATIONS)).get_current_head()
