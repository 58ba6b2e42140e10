"""Fixtures for every server test: the databases (SQLite and PostgreSQL), settings with keys in
a temporary folder, and an HTTP client on the app built from them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.unit.server.storage.conftest import (  # noqa: F401 - fixtures shared by name
    database_url,
    empty_engine,
    engine,
    session,
    sessions,
)

ORIGIN = "http://localhost:8000"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:  # noqa: F811 - the fixture above
    return Settings(
        database_url=database_url,
        kek_file=tmp_path / "kek.bin",
        pseudonym_key_file=tmp_path / "pseudonym.key",
        signing_key_file=tmp_path / "signing.pem",
        rp_id="localhost",
        rp_origins=[ORIGIN],
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client
