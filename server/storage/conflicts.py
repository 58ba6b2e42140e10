"""Write conflicts as the storage layer's ``StaleWrite``: another writer changed the row, or
won the database's write lock, since this transaction read it."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from server.storage.errors import StaleWrite

# PostgreSQL serialization_failure and deadlock_detected: the other writer won; retry.
_PG_CONFLICT_STATES = frozenset({"40001", "40P01"})


def _is_write_conflict(exc: OperationalError) -> bool:
    orig = exc.orig
    # In WAL mode a transaction that read an older snapshot may not write after another
    # connection committed (BUSY_SNAPSHOT): SQLite's form of "someone changed it since you
    # read it". A reading transaction that wants to write while another holds the write lock
    # gets plain BUSY at once, without waiting: it must restart just the same.
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_BUSY_SNAPSHOT)
    return getattr(orig, "sqlstate", None) in _PG_CONFLICT_STATES


@contextmanager
def conflicts_as(kind: str, key: uuid.UUID | str | int | None) -> Iterator[None]:
    try:
        yield
    except StaleDataError as exc:
        raise StaleWrite(kind, key) from exc
    except OperationalError as exc:
        if _is_write_conflict(exc):
            raise StaleWrite(kind, key) from exc
        raise


def violates(exc: IntegrityError, constraint: str, sqlite_message: str) -> bool:
    """Whether ``exc`` broke ``constraint``: PostgreSQL names the violated constraint; SQLite
    only says what kind and which columns (``sqlite_message`` is looked for in its text)."""
    name = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    if name is not None:
        return bool(name == constraint)
    return sqlite_message in str(exc.orig)
