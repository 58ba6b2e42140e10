"""Fixtures for every server test: the databases (SQLite and PostgreSQL), settings with keys in
a temporary folder, and an HTTP client on the app built from them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from firmware_sim.tokens.piv_attestation import PivManufacturer
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
# Argon2id at its smallest cost: each app hashes a decoy password when built, and many tests
# set passwords; at the production cost (test_app checks it) that was a third of these tests'
# time. What is hashed, verified and refused is the same at any cost.
CHEAP_PASSWORD_HASHING: dict[str, Any] = {
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 8,
    "password_hash_parallelism": 1,
}

# Every server test that takes ``database_url`` runs on SQLite and on PostgreSQL, unless a
# ``databases`` mark names fewer. The API tests are marked SQLITE_ONLY as a module and
# BOTH_DATABASES where a case reaches what PostgreSQL does differently: unique constraints,
# counters under row locks, JSON columns, transactions rolled back, migrating an existing
# database, and odd strings (NUL characters, over-long values) reaching a column. Request
# validation, routing and problem documents are the same on both; the storage, service and
# legacy tests run everything on both.
SQLITE_ONLY = pytest.mark.databases("sqlite")
BOTH_DATABASES = pytest.mark.databases("sqlite", "postgresql")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (visibly, in the summary) the database variants a ``databases`` mark leaves
    out; the closest mark wins, so a test's own mark overrides its module's."""
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        mark = item.get_closest_marker("databases")
        callspec = getattr(item, "callspec", None)
        database = callspec.params.get("database_url") if callspec is not None else None
        if mark is not None and database is not None and database not in mark.args:
            left_out.append(item)
        else:
            kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def make_key(settings: Settings, name: str, *roles: Role) -> dict[str, str]:
    """A new API key in the settings' key file, as request headers."""
    _, key = ApiKeys(settings.api_keys_file).add(name, roles)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def id_token_rsa_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA key file for every test's service: making a 2048-bit key takes a sixth of a
    second, which each of the many apps the tests build would pay again (the file is only
    read once made; tests/unit/server/test_wiring.py checks that a service makes its own)."""
    from server.services.tokens_jwt import RsaSigner

    path = tmp_path_factory.mktemp("id-token-rsa") / "id-token-rsa.pem"
    RsaSigner.from_file(path, create=True)
    return path


@pytest.fixture
def settings(
    database_url: str,  # noqa: F811 - the fixture above
    tmp_path: Path,
    id_token_rsa_key: Path,
) -> Settings:
    return Settings(
        database_url=database_url,
        kek_file=tmp_path / "kek.bin",
        pseudonym_key_file=tmp_path / "pseudonym.key",
        signing_key_file=tmp_path / "signing.pem",
        id_token_rsa_key_file=id_token_rsa_key,
        rp_id="localhost",
        rp_origins=[ORIGIN],
        api_keys_file=tmp_path / "api-keys.json",
        piv_attestation_roots=[simulated_card_vendor(tmp_path)],
        **CHEAP_PASSWORD_HASHING,
    )


def simulated_card_vendor(folder: Path) -> Path:
    """The simulated PIV cards' attestation root as a PEM file, for a service to trust."""
    path = folder / "piv-attestation-root.pem"
    path.write_bytes(PivManufacturer.load_or_create().root_pem())
    return path


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    headers = make_key(settings, TEST_PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(
        create_app(settings), raise_server_exceptions=False, headers=headers
    ) as test_client:
        yield test_client
