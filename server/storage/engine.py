"""Engine and session factories for SQLite (WAL) and PostgreSQL, and programmatic migrations."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, QueuePool

from server.storage.errors import DatabaseUnavailable, UnsupportedDatabase

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_POOL_TIMEOUT_S = 10.0
# PostgreSQL errors that mean "not now" rather than "wrong": a lock not had within
# lock_timeout, a statement cancelled, no connection slot left, the server starting or
# stopping. (Class 08, the connection's own failures, counts too.)
_PG_UNAVAILABLE_STATES = frozenset({"55P03", "57014", "53300", "57P01", "57P02", "57P03"})
MIGRATION_LOCK_KEY = 0x616B6D69  # "akmi": one migration of a PostgreSQL database at a time
# An execution option: this connection's SQLite transactions begin IMMEDIATE.
_IMMEDIATE = "akkreditiv_sqlite_immediate"
# An execution option: this connection's transactions only read; on an immediate SQLite engine
# they begin with a deferred ``BEGIN`` and do not queue for the write lock.
_READ_ONLY = "akkreditiv_read_only"
# SQLite's ``synchronous`` settings a WAL database may run with (see ``create_engine_for``).
SQLITE_SYNCHRONOUS = frozenset({"full", "normal"})


def create_engine_for(
    url: str,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    pool_size: int = 5,
    pool_overflow: int = 10,
    pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S,
    lock_timeout_ms: int | None = None,
    echo: bool = False,
    connect_args: dict[str, Any] | None = None,
    sqlite_immediate: bool = False,
    sqlite_synchronous: str = "full",
) -> Engine:
    """An engine for a ``sqlite+pysqlite`` file or a ``postgresql+psycopg`` server.

    ``postgresql://`` is taken to mean psycopg 3; other drivers raise UnsupportedDatabase.
    ``sqlite_immediate`` makes every SQLite transaction take the write lock when it starts
    (waiting up to the busy timeout) instead of at its first write: what a server whose
    requests nearly all write wants, since a deferred transaction that reads and then writes
    fails at once with SQLITE_BUSY while another holds the lock. The engine's own connections
    then queue for the lock in the process (see ``_WriterQueue``) rather than in SQLite.

    What waits too long fails as ``DatabaseUnavailable``: SQLite's write lock not had within
    the busy timeout, no pooled connection free within ``pool_timeout_s``, a PostgreSQL lock
    not had within ``lock_timeout_ms`` (PostgreSQL's ``lock_timeout``; None waits for ever),
    and PostgreSQL out of reach.

    ``sqlite_synchronous`` is SQLite's ``synchronous`` in WAL mode: ``full`` (the default)
    makes every commit durable on disk before it returns (an ``fsync`` of the WAL, which the
    writer does while it holds the lock: on this kind of disk 1-2 ms, the most a write
    transaction costs); ``normal`` leaves the ``fsync`` to checkpoints. Either way the
    database stays consistent and a crashed process loses nothing; with ``normal`` a power
    loss or an operating system crash may undo the last commits (a login step, a counter
    moved on), which is why it is not the default.
    """
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous is one of {sorted(SQLITE_SYNCHRONOUS)}")
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    pool = {
        "poolclass": _Pool,
        "pool_size": pool_size,
        "max_overflow": pool_overflow,
        "pool_timeout": pool_timeout_s,
    }
    if backend == "sqlite":
        return _sqlite_engine(
            parsed,
            busy_timeout_ms,
            echo,
            connect_args or {},
            pool,
            immediate=sqlite_immediate,
            synchronous=sqlite_synchronous,
        )
    if backend == "postgresql":
        if parsed.drivername not in ("postgresql", "postgresql+psycopg"):
            raise UnsupportedDatabase(url, "PostgreSQL is used through psycopg 3")
        parsed = parsed.set(drivername="postgresql+psycopg")
        # pre_ping: a worker survives a PostgreSQL restart instead of failing on dead connections.
        engine = create_engine(
            parsed, pool_pre_ping=True, echo=echo, connect_args=connect_args or {}, **pool
        )
        event.listen(engine, "handle_error", _postgresql_unavailable)
        if lock_timeout_ms is not None:
            event.listen(engine, "connect", _lock_timeout(lock_timeout_ms))
        return engine
    raise UnsupportedDatabase(url, "only SQLite and PostgreSQL are supported")


class _Pool(QueuePool):
    """SQLAlchemy's queue pool, whose timeout (no connection came free in time: every one is
    busy with a request) is the storage layer's ``DatabaseUnavailable``."""

    def connect(self) -> PoolProxiedConnection:
        try:
            return super().connect()
        except PoolTimeout as exc:
            raise DatabaseUnavailable("no database connection came free in time") from exc


def _postgresql_unavailable(context: ExceptionContext) -> None:
    """PostgreSQL errors that mean the database cannot take the request now become
    ``DatabaseUnavailable`` (SQLAlchemy's ``handle_error`` hook, which raises it in their
    place). Not within the pool's liveness ping, which replaces a dead connection itself."""
    if context.is_pre_ping:
        return
    state = getattr(context.original_exception, "sqlstate", None)
    unreachable = state is None and isinstance(context.sqlalchemy_exception, OperationalError)
    if (
        state in _PG_UNAVAILABLE_STATES
        or (state or "").startswith("08")
        or unreachable
        or context.is_disconnect
    ):
        reason = f"PostgreSQL: {state or 'connection'}: {context.original_exception}"
        raise DatabaseUnavailable(reason.splitlines()[0]) from context.sqlalchemy_exception


def _lock_timeout(milliseconds: int) -> Any:
    """A ``connect`` listener: each new PostgreSQL connection waits at most ``milliseconds``
    for a lock (a row another transaction holds, an advisory lock), then fails (55P03)."""

    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True  # outside any transaction: for the session
        try:
            dbapi_connection.execute(f"SET lock_timeout = {int(milliseconds)}")
        finally:
            dbapi_connection.autocommit = autocommit

    return on_connect


def ping(engine: Engine) -> None:
    """A round trip to the database: raises when it cannot be reached."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects stay readable after commit (a service returns them).
    return sessionmaker(bind=engine, expire_on_commit=False)


def read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for work that only reads, on the engine's pool. On an immediate SQLite engine
    their transactions begin with a plain ``BEGIN`` outside the writer queue (in WAL mode a
    reader neither waits for the writer nor holds it up); on PostgreSQL they are ordinary
    transactions. Nothing read here may be written back: a write would take SQLite's lock
    without queueing."""
    return sessionmaker(bind=engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; running it again at that revision changes nothing.

    Processes may migrate one database at the same time (every worker of ``akkreditiv serve``
    does when it starts): one migrates while the others wait for it, then find nothing to do.
    The migration's transaction takes the database's lock first: an advisory lock on
    PostgreSQL, SQLite's write lock (``BEGIN IMMEDIATE``).
    """
    with engine.connect() as connection:
        connection.execution_options(**{_IMMEDIATE: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                # Another worker's migration may take longer than a request's lock_timeout.
                connection.execute(text("SET LOCAL lock_timeout = 0"))
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
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
    pool: dict[str, Any],
    *,
    immediate: bool = False,
    synchronous: str = "full",
) -> Engine:
    if url.get_driver_name() != "pysqlite":
        raise UnsupportedDatabase(url.render_as_string(), "SQLite is used through pysqlite")
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        # WAL and a shared schema need a file that every pooled connection opens.
        raise UnsupportedDatabase(url.render_as_string(), "SQLite needs a database file path")
    _create_private(Path(database))
    queue = _WriterQueue(database, busy_timeout_ms / 1000) if immediate else None
    if queue is not None:
        connect_args = {**connect_args, "factory": queue.connection_class}
    engine = create_engine(url, echo=echo, connect_args=connect_args, **pool)
    if queue is not None:
        event.listen(engine, "engine_disposed", lambda _engine: queue.close())

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin, so that SAVEPOINT and
        # transactional DDL work (SQLAlchemy's documented recipe for pysqlite).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            _ensure_wal(database, cursor)
            cursor.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if queue is None or connection.get_execution_options().get(_READ_ONLY, False):
            asked = connection.get_execution_options().get(_IMMEDIATE, False)
            _begin(connection, "BEGIN IMMEDIATE" if asked else "BEGIN")
            return
        driver = connection.connection.driver_connection
        if not isinstance(driver, queue.connection_class):  # pragma: no cover - set above
            raise TypeError("an immediate engine's connection must come from its factory")
        driver.enter_queue()
        try:
            _begin(connection, "BEGIN IMMEDIATE")
        except BaseException:
            driver.leave_queue()
            raise

    return engine


def _begin(connection: Connection, statement: str) -> None:
    """Begin a SQLite transaction. The write lock not had within the busy timeout (another
    writer held it all that time) is ``DatabaseUnavailable``: nothing was read or written yet,
    and the request may come again. A write that finds the lock taken later in a deferred
    transaction is a conflict instead (``conflicts.conflicts_as``)."""
    try:
        connection.exec_driver_sql(statement)
    except OperationalError as exc:
        code = getattr(exc.orig, "sqlite_errorcode", None)
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise DatabaseUnavailable(f"SQLite's write lock not had in time: {exc.orig}") from exc
        raise


def _create_private(database: Path) -> None:
    """Make the database file (0600) and its folder (0700) before SQLite opens it, if they are
    not there: SQLite would create the file with the umask's mode (0644 commonly), and it gives
    the -wal and -shm files it makes beside it the database file's mode, so those follow."""
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        handle = os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(handle, 0o600)  # the umask may only remove bits; make it exact
    finally:
        os.close(handle)


def _ensure_wal(database: str, cursor: sqlite3.Cursor) -> None:
    """Put the database file in WAL mode (it stays so: the mode is kept in the file).

    Processes opening a new file at once (the workers of ``akkreditiv serve`` on first start)
    each tried to switch it, and the switch, which needs the file to itself, failed in all but
    one with "database is locked" instead of waiting. So they take turns on an exclusive
    ``flock`` of a file beside the database, and only switch when the mode is not WAL yet."""
    handle = os.open(f"{database}-setup", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        mode = cursor.execute("PRAGMA journal_mode").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        os.close(handle)  # closing drops the lock


class _WriterQueue:
    """One write transaction at a time, queued for before ``BEGIN IMMEDIATE`` and left when the
    transaction ends: on a lock among the engine's threads, then on an exclusive ``flock`` of a
    file beside the database among processes (the workers of ``akkreditiv serve``).

    Without it, concurrent requests wait for SQLite's write lock in SQLite's busy handler,
    which sleeps and polls (1, 2, 5, 10 ... 100 ms): the lock sits idle while the next writer
    sleeps, and under load a request waited up to a second. A released lock here wakes the
    next writer at once. A thread that waits longer than the busy timeout for the lock fails
    (``DatabaseUnavailable``), as it would have in SQLite; the file lock waits for the
    transaction of another worker, which its own busy timeout bounds. Programs that do not
    queue here (the CLI on the same file) are still ordered by SQLite's lock and busy timeout.
    """

    def __init__(self, database: str, timeout_s: float) -> None:
        lock = threading.Lock()
        path = f"{database}-writers"
        handle: list[int] = []  # the lock file, opened at first use, closed on dispose

        def lock_file() -> int:
            if not handle:
                handle.append(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            return handle[0]

        def close() -> None:
            # Closing the file also drops a lock still held: a disposed engine queues no one.
            while handle:
                os.close(handle.pop())

        class QueuedConnection(sqlite3.Connection):
            """A pysqlite connection that leaves the queue when its transaction ends."""

            _queued = False

            def enter_queue(self) -> None:
                if not lock.acquire(timeout=timeout_s):
                    raise DatabaseUnavailable("the writer queue was not reached in time")
                try:
                    fcntl.flock(lock_file(), fcntl.LOCK_EX)
                except BaseException:
                    lock.release()
                    raise
                self._queued = True

            def leave_queue(self) -> None:
                if self._queued:
                    self._queued = False
                    try:
                        if handle:
                            fcntl.flock(handle[0], fcntl.LOCK_UN)
                    finally:
                        lock.release()

            def commit(self) -> None:
                try:
                    super().commit()
                finally:
                    if not self.in_transaction:
                        self.leave_queue()

            def rollback(self) -> None:
                try:
                    super().rollback()
                finally:
                    if not self.in_transaction:
                        self.leave_queue()

            def close(self) -> None:
                try:
                    super().close()
                finally:
                    self.leave_queue()

        self.connection_class = QueuedConnection
        self.close = close
