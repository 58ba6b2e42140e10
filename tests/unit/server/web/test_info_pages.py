"""The pages every visitor has besides the tasks: help with the eID support's contact details,
the accessibility statement with what such a statement must hold, the API's reference, and
the site's icon."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.unit.server.conftest import ORIGIN
from tests.unit.server.web.forms import text_of

PHONE = "+45 70 00 00 00"
EMAIL = "hjaelp@eid.example"


@pytest.fixture
def configured(settings: Settings) -> Iterator[TestClient]:
    """A browser on a service whose support has a phone number and an address."""
    with_support = settings.model_copy(update={"support_phone": PHONE, "support_email": EMAIL})
    with TestClient(
        create_app(with_support), base_url=ORIGIN, raise_server_exceptions=False
    ) as client:
        yield client


def main_of(html: str) -> str:
    return html.split("<main", 1)[1].split("</main>", 1)[0]


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("da", ("Få hjælp", "borgerservicecenter", "Ring til eID-support")),
        ("en", ("Get help", "citizen service centre", "Call the eID support")),
    ],
)
def test_help_says_how_to_reach_people(
    configured: TestClient, lang: str, words: tuple[str, ...]
) -> None:
    answer = configured.get("/help", headers={"accept-language": lang})
    text = text_of(answer)
    for word in words:
        assert word in text
    assert f'href="tel:+4570000000">{PHONE}</a>' in answer.text
    assert f'href="mailto:{EMAIL}">{EMAIL}</a>' in answer.text
    # Why a password or code that looks right can be refused, suspension among the reasons.
    assert ("suspenderet" if lang == "da" else "suspended") in text


def test_help_without_a_configured_support_still_names_the_citizen_service_centre(
    browser: TestClient,
) -> None:
    answer = browser.get("/help")
    assert "borgerservicecenter" in text_of(answer)
    assert "tel:" not in answer.text
    assert "mailto:" not in answer.text


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        (
            "da",
            (
                "Overholdelsesstatus",
                "overholder delvist",
                "7. december 2026",
                "Fortæl os om et problem",
                "Digitaliseringsstyrelsen",
                "piletasterne",
            ),
        ),
        (
            "en",
            (
                "Compliance status",
                "partially comply",
                "7 December 2026",
                "Tell us about a problem",
                "Digitaliseringsstyrelsen",
                "arrow keys",
            ),
        ),
    ],
)
def test_the_accessibility_statement_holds_what_a_statement_must(
    configured: TestClient, lang: str, words: tuple[str, ...]
) -> None:
    answer = configured.get("/accessibility", headers={"accept-language": lang})
    text = text_of(answer)
    for word in words:
        assert word in text
    main = main_of(answer.text)
    assert EMAIL in main  # where to send feedback
    assert 'href="https://digst.dk/' in main  # the complaint route
    # The spoken guidance has an accessible name.
    assert '<audio controls preload="none"' in main
    assert 'aria-labelledby="audio-title"' in main


def test_the_api_reference_is_a_page_of_our_own_over_the_openapi_document(
    browser: TestClient,
) -> None:
    """FastAPI's Swagger UI and ReDoc load their scripts from a CDN, which the pages' CSP
    refuses: they were blank pages."""
    answer = browser.get("/docs", headers={"accept-language": "en"})
    assert answer.status_code == 200
    assert "cdn.jsdelivr.net" not in answer.text
    assert re.findall(r'<script src="([^"]+)"', answer.text) == ["/static/app.js"]
    assert '<a href="/openapi.json"' in answer.text
    text = text_of(SimpleNamespace(text=answer.text.replace("<wbr>", "")))
    assert "POST /authentications" in text
    assert "POST /migrations/{flow_id}/activate" in text
    moved = browser.get("/redoc", follow_redirects=False)
    assert (moved.status_code, moved.headers["location"]) == (301, "/docs")
    assert browser.get("/docs/oauth2-redirect").status_code == 404
    document = browser.get("/openapi.json").json()
    assert not any(path in document["paths"] for path in ("/docs", "/redoc", "/favicon.ico"))


def test_the_site_has_an_icon(browser: TestClient) -> None:
    answer = browser.get("/favicon.ico")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/x-icon"
    assert answer.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert '<link rel="icon" href="/favicon.ico"' in browser.get("/").text
