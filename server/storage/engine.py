"""Engine and session factories for SQLite (WAL) and PostgreSQL, and programmatic migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from server.settings import Settings
from server.storage.errors import UnsupportedDatabase

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_BUSY_TIMEOUT_MS = 5000


def create_engine_for(
    url: str,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    pool_size: int = 5,
    echo: bool = False,
    connect_args: dict[str, Any] | None = None,
    sqlite_immediate: bool = False,
) -> Engine:
    """An engine for a ``sqlite+pysqlite`` file or a ``postgresql+psycopg`` server.

    ``postgresql://`` is taken to mean psycopg 3; other drivers raise UnsupportedDatabase.
    ``sqlite_immediate`` makes every SQLite transaction take the write lock when it starts
    (waiting up to the busy timeout) instead of at its first write: what a server whose
    requests nearly all write wants, since a deferred transaction that reads and then writes
    fails at once with SQLITE_BUSY while another holds the lock.
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(
            parsed, busy_timeout_ms, echo, connect_args or {}, immediate=sqlite_immediate
        )
    if backend == "postgresql":
        if parsed.drivername not in ("postgresql", "postgresql+psycopg"):
            raise UnsupportedDatabase(url, "PostgreSQL is used through psycopg 3")
        parsed = parsed.set(drivername="postgresql+psycopg")
        # pre_ping: a worker survives a PostgreSQL restart instead of failing on dead connections.
        return create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=pool_size,
            echo=echo,
            connect_args=connect_args or {},
        )
    raise UnsupportedDatabase(url, "only SQLite and PostgreSQL are supported")


def create_engine_from_settings(settings: Settings) -> Engine:
    return create_engine_for(
        settings.database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.database_pool_size,
        echo=settings.database_echo,
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects stay readable after commit (a service returns them).
    return sessionmaker(bind=engine, expire_on_commit=False)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; running it again at that revision changes nothing."""
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise UnsupportedDatabase(url, "not a database URL") from exc


def _sqlite_engine(
    url: URL,
    busy_timeout_ms: int,
    echo: bool,
    connect_args: dict[str, Any],
    *,
    immediate: bool = False,
) -> Engine:
    if url.get_driver_name() != "pysqlite":
        raise UnsupportedDatabase(url.render_as_string(), "SQLite is used through pysqlite")
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        # WAL and a shared schema need a file that every pooled connection opens.
        raise UnsupportedDatabase(url.render_as_string(), "SQLite needs a database file path")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin, so that SAVEPOINT and
        # transactional DDL work (SQLAlchemy's documented recipe for pysqlite).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
