"""The application shell on both databases: health, OpenAPI, problem+json, security headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.unit.server.storage.databases import postgres_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    def build(url: str) -> Iterator[TestClient]:
        settings = Settings(
            database_url=url,
            kek_file=tmp_path / "kek.bin",
            pseudonym_key_file=tmp_path / "pseudonym.key",
            signing_key_file=tmp_path / "signing.pem",
        )
        with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
            yield test_client

    if request.param == "sqlite":
        yield from build(f"sqlite+pysqlite:///{tmp_path / 'app.db'}")
    else:
        with postgres_schema() as url:
            yield from build(url)


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
