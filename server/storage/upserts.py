"""``INSERT ... ON CONFLICT`` for both databases: the dialect's own insert, which has it."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.storage.errors import StorageError
from server.storage.tables import Base


def upsert_insert(session: Session, table: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """An insert into ``table`` that takes ``on_conflict_do_update``/``..._do_nothing``."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise StorageError(f"no upsert for database dialect {dialect!r}")
