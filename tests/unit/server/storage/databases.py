"""Throwaway databases for storage tests: a SQLite file, or a fresh PostgreSQL schema."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
import pytest
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get(
    "AKKREDITIV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def postgres_unavailable(reason: str) -> None:
    """Skip on a developer machine; fail in CI, where a missing PostgreSQL is a broken setup."""
    message = f"PostgreSQL at {POSTGRES_URL} is not reachable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: PostgreSQL is required)", pytrace=False)
    pytest.skip(message)


def _libpq_dsn() -> str:
    return make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL whose connections see only a new, empty schema; dropped afterwards."""
    schema = f"akk_test_{uuid.uuid4().hex[:16]}"
    try:
        admin = psycopg.connect(_libpq_dsn(), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        postgres_unavailable(str(exc).strip())
        raise  # unreachable: postgres_unavailable always leaves
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            options = quote(f"-csearch_path={schema}")
            yield f"{POSTGRES_URL}?options={options}&application_name={schema}"
        finally:
            # Connections a test left open would block DROP SCHEMA; end them first.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (schema,),
            )
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
