"""Fixtures for every server test: the databases (SQLite and PostgreSQL), settings with keys in
a temporary folder, and an HTTP client on the app built from them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.services.access import ApiKeys, Role
from server.settings import Settings
from tests.unit.server.storage.conftest import (  # noqa: F401 - fixtures shared by name
    database_url,
    empty_engine,
    engine,
    session,
    sessions,
)

ORIGIN = "http://localhost:8000"
# The default caller of the test client: a supervisor that is also the test service provider.
TEST_PROVIDER = "https://sp.example"


def make_key(settings: Settings, name: str, *roles: Role) -> dict[str, str]:
    """A new API key in the settings' key file, as request headers."""
    _, key = ApiKeys(settings.api_keys_file).add(name, roles)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:  # noqa: F811 - the fixture above
    return Settings(
        database_url=database_url,
        kek_file=tmp_path / "kek.bin",
        pseudonym_key_file=tmp_path / "pseudonym.key",
        signing_key_file=tmp_path / "signing.pem",
        rp_id="localhost",
        rp_origins=[ORIGIN],
        api_keys_file=tmp_path / "api-keys.json",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    headers = make_key(settings, TEST_PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(
        create_app(settings), raise_server_exceptions=False, headers=headers
    ) as test_client:
        yield test_client
