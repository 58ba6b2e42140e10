"""Engine factory, SQLite pragmas, and the Alembic migrations on both backends."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import stat
import threading
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from server.domain.model import Level
from server.settings import Settings
from server.storage import migration_tables, oidc_tables, web_tables  # noqa: F401 - register their tables
from server.storage.engine import (
    MIGRATIONS,
    create_engine_for,
    current_revision,
    migrate,
    read_session_factory,
    session_factory,
)
from server.storage.errors import DatabaseUnavailable, UnsupportedDatabase
from server.storage.repositories import IdentityRepository
from server.storage.tables import Base, Identity
from server.wiring import engine_for
from tests.unit.server.storage.databases import POSTGRES_URL, postgres_schema

TABLES = {
    "identities",
    "proofing_records",
    "credentials",
    "audit_entries",
    "audit_heads",
    "auth_transactions",
    "rate_limits",
    "throttles",
    "legacy_users",
    "legacy_key_cards",
    "legacy_code_tokens",
    "import_runs",
    "import_rejects",
    "migration_waves",
    "migration_invitations",
    "migration_flows",
    "migration_events",
    "web_sessions",
    "pending_proofings",
    "desk_logins",
    "maintenance_leases",
    "key_fingerprints",
    "oidc_clients",
    "oidc_requests",
    "oidc_codes",
    "oidc_tokens",
    "oidc_assertion_ids",
    "oidc_sso_sessions",
}
# The files of a SQLite database: the file itself, its write-ahead log and shared memory, and
# the two lock files beside it (WAL setup, the writer queue).
FILES = ("", "-wal", "-shm", "-setup", "-writers")
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _schema(engine: Engine) -> dict[str, list[str]]:
    inspector = inspect(engine)
    return {
        table: sorted(column["name"] for column in inspector.get_columns(table))
        for table in inspector.get_table_names()
    }


def test_migrate_creates_schema_on_empty_database(empty_engine: Engine) -> None:
    assert _schema(empty_engine) == {}
    assert current_revision(empty_engine) is None

    migrate(empty_engine)

    assert set(_schema(empty_engine)) == TABLES | {"alembic_version"}
    assert current_revision(empty_engine) == HEAD


def test_migrate_is_noop_when_already_at_head(engine: Engine) -> None:
    with session_factory(engine).begin() as session:
        IdentityRepository(session).add(
            Identity(person_number="0101901234", name="A", identity_assurance=Level.LOW)
        )
    before = _schema(engine)

    migrate(engine)

    assert _schema(engine) == before
    assert current_revision(engine) == HEAD
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM identities")) == 1


def test_migrations_match_table_definitions(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


@pytest.mark.parametrize(
    ("column", "value"), [("status", "frozen"), ("identity_assurance", "very_high")]
)
def test_schema_rejects_unknown_enum_value_when_written_directly(
    engine: Engine, column: str, value: str
) -> None:
    values = {"status": "active", "identity_assurance": "low", column: value}
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO identities (id, person_number, name, status, identity_assurance,"
                " created_at) VALUES (:id, '1', 'n', :status, :identity_assurance, :at)"
            ),
            {"id": uuid.uuid4().hex, "at": dt.datetime.now(dt.UTC), **values},
        )


def test_sqlite_journal_mode_is_wal_when_connected(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite+pysqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    engine.dispose()


def test_sqlite_busy_timeout_follows_settings_when_built_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AKKREDITIV_DATABASE_URL", f"sqlite+pysqlite:///{tmp_path / 's.db'}")
    monkeypatch.setenv("AKKREDITIV_SQLITE_BUSY_TIMEOUT_MS", "1234")
    engine = engine_for(Settings())
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    engine.dispose()


def test_sqlite_parent_directory_is_created_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "var" / "nested" / "akkreditiv.db"
    engine = create_engine_for(f"sqlite+pysqlite:///{path}")
    migrate(engine)
    engine.dispose()
    assert path.is_file()


def test_a_new_sqlite_database_and_its_wal_are_private(tmp_path: Path) -> None:
    """The database, its -wal and -shm files are 0600 and a folder made for it 0700, whatever
    the umask lets through (SQLite gives the -wal and -shm the database file's mode)."""
    path = tmp_path / "var" / "akkreditiv.db"
    previous = os.umask(0o022)
    try:
        engine = create_engine_for(f"sqlite+pysqlite:///{path}", sqlite_immediate=True)
        migrate(engine)
        with session_factory(engine).begin() as session:
            IdentityRepository(session).add(
                Identity(
                    person_number="010190-1234", name="A", identity_assurance=Level.SUBSTANTIAL
                )
            )
        made = {name: stat.S_IMODE(Path(f"{path}{name}").stat().st_mode) for name in FILES}
        engine.dispose()
    finally:
        os.umask(previous)
    assert made == dict.fromkeys(FILES, 0o600)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_postgresql_url_without_driver_uses_psycopg() -> None:
    engine = create_engine_for("postgresql://postgres@127.0.0.1:5432/test")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://u@h/db",
        "postgresql+psycopg2://u@h/db",
        "sqlite+pysqlite://",
        "sqlite+pysqlite:///:memory:",
        "not a url",
    ],
)
def test_create_engine_raises_unsupported_database_when_url_is_unsupported(url: str) -> None:
    with pytest.raises(UnsupportedDatabase):
        create_engine_for(url)


def test_committed_data_survives_restart_when_new_engine_opens_same_database(
    database_url: str,
) -> None:
    first = create_engine_for(database_url)
    migrate(first)
    with session_factory(first).begin() as session:
        identity_id = (
            IdentityRepository(session)
            .add(Identity(person_number="42", name="B", identity_assurance=Level.HIGH))
            .id
        )
    # A session that never commits stands for a worker killed mid-flow.
    dying = session_factory(first)()
    IdentityRepository(dying).add(
        Identity(person_number="43", name="C", identity_assurance=Level.LOW)
    )
    dying.flush()
    dying.close()
    first.dispose()

    second = create_engine_for(database_url)
    migrate(second)
    with session_factory(second)() as session:
        repository = IdentityRepository(session)
        assert repository.get(identity_id).name == "B"
        assert repository.by_person_number("42").identity_assurance is Level.HIGH
        assert session.scalar(text("SELECT count(*) FROM identities")) == 1
    second.dispose()


def test_engine_reconnects_when_postgresql_ends_its_connections() -> None:
    with postgres_schema() as url:
        engine = create_engine_for(url)
        migrate(engine)
        sessions = session_factory(engine)
        with sessions() as session:
            session.execute(text("SELECT 1"))  # a pooled connection now exists
            application = session.execute(text("SHOW application_name")).scalar()
        # What a PostgreSQL restart does to the pool: every server-side connection ends.
        killer = create_engine_for(POSTGRES_URL)
        with killer.begin() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": application},
            ).scalar()
        killer.dispose()
        assert ended

        with sessions.begin() as session:
            IdentityRepository(session).add(
                Identity(person_number="7", name="D", identity_assurance=Level.LOW)
            )
        with sessions() as session:
            assert IdentityRepository(session).by_person_number("7").name == "D"
        engine.dispose()


# --- the writer queue of an immediate SQLite engine --------------------------------------------


def _immediate(tmp_path: Path, busy_timeout_ms: int = 5000) -> Engine:
    engine = create_engine_for(
        f"sqlite+pysqlite:///{tmp_path / 'queue.db'}",
        sqlite_immediate=True,
        busy_timeout_ms=busy_timeout_ms,
    )
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE tally (n INTEGER NOT NULL)"))
        connection.execute(text("INSERT INTO tally VALUES (0)"))
    return engine


def test_immediate_writers_from_many_threads_all_commit_and_lose_no_update(
    tmp_path: Path,
) -> None:
    engine = _immediate(tmp_path)
    sessions = session_factory(engine)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(25):
                with sessions.begin() as session:
                    n = session.execute(text("SELECT n FROM tally")).scalar_one()
                    session.execute(text("UPDATE tally SET n = :n"), {"n": n + 1})
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM tally")).scalar_one() == 150
    engine.dispose()


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_immediate_writer_holds_the_queue_until_its_transaction_ends(
    tmp_path: Path, end: str
) -> None:
    # A busy timeout of 0: a writer that finds the queue taken fails at once, as SQLite would.
    engine = _immediate(tmp_path, busy_timeout_ms=0)
    sessions = session_factory(engine)
    holder = sessions()
    holder.execute(text("UPDATE tally SET n = n + 1"))
    with sessions() as other, pytest.raises(DatabaseUnavailable) as busy:
        other.execute(text("SELECT n FROM tally"))
    assert "writer queue" in str(busy.value)
    # Other processes (workers) queue on the lock file beside the database.
    with (tmp_path / "queue.db-writers").open("rb") as other_process:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other_process, fcntl.LOCK_EX | fcntl.LOCK_NB)
        getattr(holder, end)()
        fcntl.flock(other_process, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other_process, fcntl.LOCK_UN)
    with sessions.begin() as session:
        expected = 1 if end == "commit" else 0
        assert session.execute(text("SELECT n FROM tally")).scalar_one() == expected
    holder.close()
    engine.dispose()


def test_a_read_session_reads_while_a_writer_holds_the_queue(tmp_path: Path) -> None:
    # A busy timeout of 0: a session that queued for the writer would fail at once.
    engine = _immediate(tmp_path, busy_timeout_ms=0)
    holder = session_factory(engine)()
    holder.execute(text("UPDATE tally SET n = n + 1"))
    with read_session_factory(engine)() as reader:
        # WAL: the reader sees what was committed before, and holds nothing up.
        assert reader.execute(text("SELECT n FROM tally")).scalar_one() == 0
        holder.commit()
    with read_session_factory(engine)() as reader:
        assert reader.execute(text("SELECT n FROM tally")).scalar_one() == 1
    holder.close()
    engine.dispose()
