"""Overload answers 503 with Retry-After, never 500, and leaves nothing half-written: SQLite's
write lock held by another connection (or the service's own writer queue taken) past the
busy timeout, a PostgreSQL lock held past ``lock_timeout``, no pooled connection free in time.
Each is made for real: another connection holds what the request needs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from server.app import create_app
from server.services.access import Role
from server.settings import Settings
from server.storage.tables import AuditEntry, AuthTransaction
from server.storage.web_tables import WebSession
from tests.unit.server.conftest import ORIGIN, TEST_PROVIDER, make_key
from tests.unit.server.web.forms import lang_of, text_of

SQLITE = pytest.mark.databases("sqlite")
POSTGRESQL = pytest.mark.databases("postgresql")
WAIT_MS = 200  # how long a request waits for the database here


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "sqlite_busy_timeout_ms": WAIT_MS,
            "database_lock_timeout_ms": WAIT_MS,
            "database_pool_timeout_s": WAIT_MS / 1000,
        }
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    headers = make_key(settings, TEST_PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(
        create_app(settings), base_url=ORIGIN, raise_server_exceptions=False, headers=headers
    ) as test_client:
        yield test_client


def _rows(client: TestClient) -> dict[str, int]:
    """How many logins, audit entries and browser sessions there are."""
    counted: dict[str, int] = {}
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        for table in (AuthTransaction, AuditEntry, WebSession):
            found = session.scalar(select(func.count()).select_from(table))
            counted[table.__tablename__] = int(found or 0)
    return counted


def _assert_unavailable(answer: Any) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "2"
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"] == "urn:akkreditiv:problem:temporarily-unavailable"
    assert body["retry_after"] == 2


@contextmanager
def sqlite_write_lock(settings: Settings) -> Iterator[None]:
    """Another program's connection holding the database's write lock (BEGIN IMMEDIATE)."""
    holder = sqlite3.connect(make_url(settings.database_url).database or "", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


@SQLITE
def test_a_write_that_waits_out_sqlites_lock_answers_503_and_writes_nothing(
    client: TestClient, settings: Settings
) -> None:
    before = _rows(client)
    with sqlite_write_lock(settings):
        answer = client.post("/authentications", json={"min_level": "low"})
    _assert_unavailable(answer)
    assert _rows(client) == before
    assert client.post("/authentications", json={"min_level": "low"}).status_code == 201


@SQLITE
def test_a_page_that_waits_out_sqlites_lock_is_a_page_that_says_so(
    client: TestClient, settings: Settings
) -> None:
    login = client.post("/authentications", json={"min_level": "low"}).json()["id"]
    before = _rows(client)
    with sqlite_write_lock(settings):
        # Opening a login's page claims the login for this browser: a write.
        answer = client.get(f"/login/{login}", headers={"accept": "text/html"})
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "2"
    assert lang_of(answer) == "da"
    assert "Der er travlt hos os lige nu" in text_of(answer)
    assert _rows(client) == before
    claimed = client.get(f"/login/{login}", headers={"accept": "text/html"})
    assert claimed.status_code == 200


@SQLITE
def test_a_request_that_waits_out_the_writer_queue_answers_503(client: TestClient) -> None:
    """The service's own writers queue in the process before SQLite: one that waits there
    past the busy timeout is refused the same way ('database is locked (writer queue)' was a
    500)."""
    before = _rows(client)
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.sessions() as holder:
        holder.execute(text("SELECT 1"))  # begins: takes the queue and the write lock
        answer = client.post("/authentications", json={"min_level": "low"})
        holder.rollback()
    _assert_unavailable(answer)
    assert _rows(client) == before


@POSTGRESQL
def test_a_write_that_waits_out_a_postgresql_lock_answers_503_and_writes_nothing(
    client: TestClient,
) -> None:
    """Beginning a login writes its row and then appends to the audit log, whose head another
    transaction holds: after lock_timeout the request is refused, the row rolled back."""
    before = _rows(client)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as holder:
        holder.execute(text("SELECT seq FROM audit_heads FOR UPDATE"))  # every chain
        answer = client.post("/authentications", json={"min_level": "low"})
        holder.rollback()
    _assert_unavailable(answer)
    assert _rows(client) == before
    assert client.post("/authentications", json={"min_level": "low"}).status_code == 201


@POSTGRESQL
def test_no_free_connection_in_time_answers_503(settings: Settings) -> None:
    small = settings.model_copy(update={"database_pool_size": 1, "database_pool_overflow": 0})
    headers = make_key(small, TEST_PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(
        create_app(small), base_url=ORIGIN, raise_server_exceptions=False, headers=headers
    ) as client:
        before = _rows(client)
        with client.app.state.engine.connect() as holder:  # type: ignore[attr-defined]
            holder.execute(text("SELECT 1"))  # the pool's one connection, in use
            answer = client.post("/authentications", json={"min_level": "low"})
        _assert_unavailable(answer)
        assert _rows(client) == before


def test_the_waits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AKKREDITIV_DATABASE_LOCK_TIMEOUT_MS", "750")
    monkeypatch.setenv("AKKREDITIV_DATABASE_POOL_TIMEOUT_S", "2.5")
    monkeypatch.setenv("AKKREDITIV_DATABASE_POOL_OVERFLOW", "3")
    settings = Settings()
    assert settings.database_lock_timeout_ms == 750
    assert settings.database_pool_timeout_s == 2.5
    assert settings.database_pool_overflow == 3
