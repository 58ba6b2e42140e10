"""Anonymous requests write nothing until they carry something: opening the pages anyone can
open (the front page, help, the accessibility statement, the self-service sign-in, the
migration's and the console's first pages) adds no row to any table: no login, no audit
entry, no browser session. Their forms still carry a CSRF token bound to the browser, so a
form from another browser (or a login forced on this one from elsewhere) is refused."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from server.services.access import Role
from server.settings import Settings
from server.storage import migration_tables  # noqa: F401 - registers its tables
from server.storage.tables import AuthTransaction, Base
from server.storage.web_tables import WebSession
from server.web.browser import COOKIE
from tests.unit.server.conftest import make_key
from tests.unit.server.web.forms import csrf_of, text_of

OPEN_TO_ANYONE = (
    "/",
    "/help",
    "/accessibility",
    "/account/login",
    "/account/login?level=high&next=/account/add/smartcard",
    "/migrate",
    "/console/login",
)


def rows(browser: TestClient) -> dict[str, int]:
    """How many rows every table holds."""
    counted: dict[str, int] = {}
    with browser.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        for table in Base.metadata.sorted_tables:
            counted[table.name] = int(session.scalar(select(func.count()).select_from(table)) or 0)
    return counted


@pytest.mark.parametrize("path", OPEN_TO_ANYONE)
def test_opening_a_page_writes_nothing(browser: TestClient, path: str) -> None:
    before = rows(browser)
    first = browser.get(path)
    again = browser.get(path)  # the same browser, now with its cookie
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert rows(browser) == before
    # The page's forms can still be sent: their CSRF token is this browser's.
    assert csrf_of(again) == csrf_of(first)
    assert browser.cookies.get(COOKIE)


def test_a_form_of_another_browser_is_refused_without_a_session(browser: TestClient) -> None:
    """Login CSRF: a page's token works only with the cookie of the browser it was made for."""
    token = csrf_of(browser.get("/account/login"))
    browser.cookies.clear()
    browser.get("/")
    before = rows(browser)
    answer = browser.post("/account/login", data={"csrf": token, "person_number": "010190-1234"})
    assert answer.status_code == 403
    assert rows(browser) == before


def test_a_language_choice_needs_no_session(browser: TestClient) -> None:
    token = csrf_of(browser.get("/"))
    before = rows(browser)
    answer = browser.post("/lang", data={"csrf": token, "lang": "en", "next": "/help"})
    assert answer.status_code == 200
    assert "Accessibility statement" in answer.text or 'lang="en"' in answer.text
    assert rows(browser) == before


def test_the_self_service_login_is_begun_when_the_number_is_sent(browser: TestClient) -> None:
    page = browser.get("/account/login?next=/account/add")
    before = rows(browser)
    wrong = browser.post(
        "/account/login?next=/account/add", data={"csrf": csrf_of(page), "person_number": "12"}
    )
    assert wrong.status_code == 400
    assert 'href="#person_number"' in wrong.text
    assert rows(browser) == before  # a number that is not one begins nothing
    sent = browser.post(
        "/account/login?next=/account/add",
        data={"csrf": csrf_of(page), "person_number": "010190-1234"},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    transaction = sent.headers["location"].split("/")[2]
    assert sent.headers["location"] == f"/login/{transaction}/choose"
    after = rows(browser)
    assert after["auth_transactions"] == before["auth_transactions"] + 1
    assert after["web_sessions"] == before["web_sessions"] + 1  # it keeps the login
    with browser.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        login = session.get(AuthTransaction, uuid.UUID(transaction))
        assert login is not None
        assert login.state == "identified"
        assert login.browser_binding is not None
    assert browser.get(f"/login/{transaction}/choose").status_code == 200


def test_a_login_of_a_session_that_ended_and_was_swept_stays_closed_to_it(
    browser: TestClient, settings: Settings
) -> None:
    """The browser that opened a login keeps a session; once that session has ended and its
    row is gone (swept), the same cookie is told its session ended, and cannot go on."""
    key = make_key(settings, "https://sp.example", Role.PROVIDER)
    transaction = browser.post("/authentications", json={"min_level": "low"}, headers=key)
    login = transaction.json()["id"]
    opened = browser.get(f"/login/{login}")
    assert opened.status_code == 200
    assert rows(browser)["web_sessions"] == 1  # opening a login keeps the session
    with browser.app.state.services.sessions() as session, session.begin():  # type: ignore[attr-defined]
        session.execute(delete(WebSession))
    again = browser.get(f"/login/{login}")
    assert again.status_code == 410
    assert "Der skete ikke noget på siden i for lang tid" in text_of(again)
