"""The application shell on both databases: health, OpenAPI, problem+json, security headers."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import extract_parameters
from fastapi.testclient import TestClient

from server.app import create_app
from server.services.passwords import ARGON2ID_RFC9106_LOW_MEMORY, argon2id_parameters
from server.settings import Settings
from tests.unit.server.conftest import BOTH_DATABASES, SQLITE_ONLY

pytestmark = SQLITE_ONLY  # and BOTH_DATABASES where marked (see the conftest)


@BOTH_DATABASES
def test_health_reports_the_database_after_migrating(client: TestClient) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.json()["database"] in {"sqlite", "postgresql"}


def test_openapi_document_describes_the_api(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["info"]["title"] == "akkreditiv"
    assert "/health" in document["paths"]


def test_unknown_path_answers_problem_json(client: TestClient) -> None:
    answer = client.get("/no/such/thing")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"] == "urn:akkreditiv:problem:not-found"
    assert body["status"] == 404


def test_wrong_method_answers_problem_json(client: TestClient) -> None:
    answer = client.post("/health")
    assert answer.status_code == 405
    assert answer.json()["type"].endswith("method-not-allowed")


def test_every_answer_carries_security_headers(client: TestClient) -> None:
    for answer in (client.get("/health"), client.get("/missing")):
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"


def settings_in(folder: Path, database_url: str) -> Settings:
    """Settings from the environment, except for where the database and the keys are."""
    folder.mkdir()
    return Settings(
        database_url=database_url,
        kek_file=folder / "kek.bin",
        pseudonym_key_file=folder / "pseudonym.key",
        signing_key_file=folder / "signing.pem",
        api_keys_file=folder / "api-keys.json",
    )


def test_default_settings_hash_passwords_at_the_rfc9106_cost(
    settings: Settings, tmp_path: Path
) -> None:
    # The other server tests hash cheaply (conftest); production keeps the default cost.
    services = create_app(settings_in(tmp_path / "prod", settings.database_url)).state.services
    assert extract_parameters(services.password_decoy) == ARGON2ID_RFC9106_LOW_MEMORY
    hashed = services.passwords.hash_password("correct horse battery staple")
    assert extract_parameters(hashed) == ARGON2ID_RFC9106_LOW_MEMORY


def test_password_hash_cost_follows_the_environment(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AKKREDITIV_PASSWORD_HASH_TIME_COST", "2")
    monkeypatch.setenv("AKKREDITIV_PASSWORD_HASH_MEMORY_KIB", "64")
    monkeypatch.setenv("AKKREDITIV_PASSWORD_HASH_PARALLELISM", "2")
    services = create_app(settings_in(tmp_path / "env", settings.database_url)).state.services
    assert extract_parameters(services.password_decoy) == argon2id_parameters(2, 64, 2)


@pytest.mark.parametrize(("time_cost", "memory_kib", "parallelism"), [(0, 64, 1), (1, 15, 2)])
def test_argon2id_parameters_below_the_minimum_are_refused(
    time_cost: int, memory_kib: int, parallelism: int
) -> None:
    with pytest.raises(ValueError, match="Argon2id needs"):
        argon2id_parameters(time_cost, memory_kib, parallelism)
