"""The application shell on both databases: health, OpenAPI, problem+json, security headers."""

from __future__ import annotations

from fastapi.testclient import TestClient


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
