"""Database fixtures (SQLite and PostgreSQL) for every server test."""

from tests.unit.server.storage.conftest import (  # noqa: F401 - fixtures shared by name
    database_url,
    empty_engine,
    engine,
    session,
    sessions,
)
