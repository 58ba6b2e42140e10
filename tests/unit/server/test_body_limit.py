"""Request bodies are bounded (``server.body_limit``): over the limit, declared or streamed, a
request is answered 413 before anything of it is used; a browser's form gets a page. What a
body does to the memory of a running service is measured against ``akkreditiv serve``
(``tests/integration/test_serve_load.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.app import create_app
from server.settings import Settings
from server.storage.tables import AuditEntry, AuthTransaction
from tests.unit.server.conftest import ORIGIN, SQLITE_ONLY, TEST_PROVIDER, make_key
from tests.unit.server.web.forms import lang_of, text_of

pytestmark = SQLITE_ONLY

LIMIT = 64 * 1024


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The service with a body limit of 64 KiB, and the test provider's key."""
    from server.services.access import Role

    limited = settings.model_copy(update={"max_body_bytes": LIMIT})
    headers = make_key(limited, TEST_PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(
        create_app(limited), base_url=ORIGIN, raise_server_exceptions=False, headers=headers
    ) as test_client:
        yield test_client


def _json_of(size: int) -> bytes:
    """A JSON body of ``size`` bytes that a route would take: a login at level low."""
    head = b'{"min_level": "low", "nonce": "'
    return head + b"n" * (size - len(head) - 2) + b'"}'


def _chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    """``body`` sent in pieces, without a Content-Length (chunked)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _written(client: TestClient) -> tuple[int, int]:
    """How many logins and audit entries there are."""
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        logins = session.scalar(select(func.count()).select_from(AuthTransaction))
        entries = session.scalar(select(func.count()).select_from(AuditEntry))
    return int(logins or 0), int(entries or 0)


def _assert_refused(answer: object) -> None:
    assert answer.status_code == 413  # type: ignore[attr-defined]
    assert answer.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body = answer.json()  # type: ignore[attr-defined]
    assert body["type"] == "urn:akkreditiv:problem:request-too-large"
    assert body["detail"] == f"the request body may be at most {LIMIT} bytes"
    assert "script-src 'self'" in answer.headers["content-security-policy"]  # type: ignore[attr-defined]


def test_a_body_within_the_limit_is_read(client: TestClient) -> None:
    nonce = _json_of(LIMIT)
    answer = client.post(
        "/authentications", content=nonce, headers={"content-type": "application/json"}
    )
    # Read and checked: a nonce of 255 characters at most (422), never a 413.
    assert answer.status_code == 422, answer.text
    small = client.post("/authentications", json={"min_level": "low"})
    assert small.status_code == 201, small.text


def test_a_declared_length_over_the_limit_is_refused_unread(client: TestClient) -> None:
    before = _written(client)
    answer = client.post(
        "/authentications",
        content=_json_of(LIMIT + 1),
        headers={"content-type": "application/json"},
    )
    _assert_refused(answer)
    assert _written(client) == before


def test_a_streamed_body_is_counted_and_refused_at_the_limit(client: TestClient) -> None:
    before = _written(client)
    answer = client.post(
        "/authentications",
        content=_chunks(_json_of(4 * LIMIT)),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in answer.request.headers
    _assert_refused(answer)
    assert _written(client) == before


def test_a_streamed_form_over_the_limit_gets_a_page_in_the_browsers_language(
    client: TestClient,
) -> None:
    answer = client.post(
        "/lang",
        content=_chunks(b"lang=en&next=" + b"x" * (2 * LIMIT)),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "accept": "text/html,application/xhtml+xml",
            "accept-language": "da",
        },
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("text/html")
    assert lang_of(answer) == "da"
    assert "for stort til, at vi kunne tage imod det" in text_of(answer)
    assert "script-src 'self'" in answer.headers["content-security-policy"]


def test_a_token_batch_may_be_larger(client: TestClient) -> None:
    """A PSKC document of many tokens passes the general limit; the route bounds it itself."""
    document = b"<KeyContainer>" + b" " * (4 * LIMIT) + b"</KeyContainer>"
    answer = client.post(
        "/token-batches", content=document, headers={"content-type": "application/xml"}
    )
    assert answer.status_code == 400, answer.text  # read, and not a PSKC document
    assert answer.json()["type"].endswith("invalid-token-batch")


def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AKKREDITIV_MAX_BODY_BYTES", "2048")
    assert Settings().max_body_bytes == 2048
    monkeypatch.delenv("AKKREDITIV_MAX_BODY_BYTES")
    assert Settings().max_body_bytes == 1024 * 1024


def test_a_form_field_over_the_pages_limit_is_refused_as_too_large(settings: Settings) -> None:
    """Under the body limit, a page's form is still bounded: 64 fields of 64 KiB at most."""
    with TestClient(create_app(settings), base_url=ORIGIN) as browser:
        answer = browser.post(
            "/lang",
            data={"lang": "en", "next": "/" + "x" * (64 * 1024)},
            headers={"accept": "text/html"},
        )
    assert answer.status_code == 413
    assert "for stort til, at vi kunne tage imod det" in text_of(answer)
