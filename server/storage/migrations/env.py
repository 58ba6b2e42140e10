"""Alembic environment: runs on the connection that ``server.storage.engine.migrate`` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from server.storage import (
    migration_tables,  # noqa: F401 - its tables join Base.metadata
    oidc_tables,  # noqa: F401 - its tables join Base.metadata
    web_tables,  # noqa: F401 - its tables join Base.metadata
)
from server.storage.tables import Base


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through server.storage.engine.migrate(engine)")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
