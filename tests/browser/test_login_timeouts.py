"""Time limits of a login's pages in the real Chromium, on services started with short ones
(``AKKREDITIV_TRANSACTION_LIFETIME_S``, ``AKKREDITIV_SESSION_IDLE_S``,
``AKKREDITIV_TIMEOUT_WARNING_S``): the dialog warns before whichever of the login and the
browser session ends first, more time keeps what was typed, the dialog says when the time is
up and holds back the form (nothing typed is lost), and the way to start again takes the
person back to the provider, which is told ``error=login_expired``. Every wait is Playwright's
own wait for the dialog to appear or change, never a sleep.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.axe import assert_accessible
from tests.browser.conftest import WebServer
from tests.browser.keyboard import activate, tab_to, type_into_focused
from tests.browser.provider import Provider, running_provider
from tests.integration.server_process import start_server

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.integration

SHOWN_AS = "Testkommunen"
LOGIN_S, WARN_S = 10, 4  # the login ends 10 s after it began; the dialog comes 4 s before
# Long enough for the dialog's next state to come (a state lasts WARN_S), short of forever.
NEXT_STATE_MS = (LOGIN_S + 4) * 1000

TEXTS = {
    "da": {
        "login_warning": "lukker dit login kl.",
        "session_warning": "lukker siden kl.",
        "extend": "Giv mig mere tid",
        "login_extend": "Jeg har brug for mere tid",
        "time_up": "Tiden er gået",
        "login_up": f"Tiden til dit login hos {SHOWN_AS} er gået",
        "session_up": "fordi der ikke er sket noget på den",
        "session_page": "Der skete ikke noget på siden i for lang tid",
        "restart": f"Gå tilbage til {SHOWN_AS}, og start forfra",
        "number": "CPR-nummer",
    },
    "en": {
        "login_warning": "your login closes at",
        "session_warning": "this page will close at",
        "extend": "Give me more time",
        "login_extend": "I need more time",
        "time_up": "Time is up",
        "login_up": f"The time for your login to {SHOWN_AS} is up",
        "session_up": "because nothing happened on it",
        "session_page": "Nothing happened on the page for too long",
        "restart": f"Go back to {SHOWN_AS} and start again",
        "number": "CPR number",
    },
}


@pytest.fixture(scope="module")
def web_server_env() -> dict[str, str]:
    """The login's own time runs out first (the session lasts a minute)."""
    return {
        "AKKREDITIV_TRANSACTION_LIFETIME_S": str(LOGIN_S),
        "AKKREDITIV_SESSION_IDLE_S": "60",
        "AKKREDITIV_TIMEOUT_WARNING_S": str(WARN_S),
    }


@pytest.fixture(scope="module")
def provider(web_server: WebServer) -> Iterator[Provider]:
    keys_file = Path(web_server.process.env["AKKREDITIV_API_KEYS_FILE"])
    with running_provider(web_server.url, keys_file, display_name=SHOWN_AS) as running:
        yield running


@pytest.fixture(scope="module")
def session_first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, Provider]]:
    """A service whose browser sessions end (10 s without a request) before its logins (a
    minute), with its provider."""
    folder = tmp_path_factory.mktemp("session-first")
    process = start_server(
        folder / "service",
        f"sqlite+pysqlite:///{folder / 'akkreditiv.db'}",
        provider="https://sp.example",
        extra_env={
            "AKKREDITIV_TRANSACTION_LIFETIME_S": "60",
            "AKKREDITIV_SESSION_IDLE_S": str(LOGIN_S),
            "AKKREDITIV_TIMEOUT_WARNING_S": str(WARN_S),
        },
    )
    port = process.url.rsplit(":", 1)[1]
    server = WebServer(f"http://localhost:{port}", process, folder)
    try:
        keys_file = Path(process.env["AKKREDITIV_API_KEYS_FILE"])
        with running_provider(server.url, keys_file, display_name=SHOWN_AS) as provider:
            yield server, provider
    finally:
        process.stop()


def dialog_says(page: Page, text: str) -> None:
    """Wait until the time-limit dialog is shown and its text holds ``text``."""
    dialog = page.locator("#session-warning")
    dialog.wait_for(state="visible", timeout=NEXT_STATE_MS)
    page.wait_for_function(
        "(text) => document.getElementById('session-warning').innerText.includes(text)",
        arg=text,
        timeout=NEXT_STATE_MS,
    )


def focused_name(page: Page) -> str:
    return str(page.evaluate("document.activeElement.textContent.trim()"))


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_the_login_warns_gives_more_time_and_says_when_time_is_up(
    page: Page, web_server: WebServer, provider: Provider, locale: str
) -> None:
    lang = locale[:2]
    says = TEXTS[lang]
    transaction = provider.begin("substantial")
    page.goto(f"{web_server.url}/login/{transaction}")
    tab_to(page, says["number"])
    type_into_focused(page, "010190-1234")

    # Before the login's end: the dialog, its button focused.
    dialog_says(page, says["login_warning"])
    assert page.locator("#session-warning-title").inner_text() != says["time_up"]
    assert focused_name(page) == says["extend"]
    assert_accessible(page, f"login page, time-limit warning, {lang}")
    activate(page)  # more time, asked in the background
    page.locator("#session-warning").wait_for(state="hidden")
    assert page.input_value("#person_number") == "010190-1234"  # nothing typed is lost
    assert page.url.endswith(f"/login/{transaction}")

    # The login's new end comes: the warning, then the time is up.
    dialog_says(page, says["login_warning"])
    dialog_says(page, says["login_up"])
    assert page.locator("#session-warning-title").inner_text() == says["time_up"]
    assert not page.get_by_role("button", name=says["extend"]).is_visible()
    assert not page.get_by_role("button", name=says["login_extend"]).is_visible()
    assert focused_name(page) == says["restart"]
    assert_accessible(page, f"login page, time is up, {lang}")

    # A submit now is held back: the page and what was typed stay, the dialog has focus.
    page.focus("#person_number")
    page.keyboard.press("Enter")
    assert page.url.endswith(f"/login/{transaction}")
    assert page.input_value("#person_number") == "010190-1234"
    assert focused_name(page) == says["restart"]

    # Without the dialog (a page loaded now), the same: what happened and the way back.
    other = page.context.new_page()
    other.goto(f"{web_server.url}/login/{transaction}")
    assert other.locator("h1").inner_text() == says["time_up"]
    assert says["login_up"] in other.locator("main").inner_text()
    assert_accessible(other, f"expired login page, {lang}")
    other.close()

    activate(page)  # the restart link, focused: back to the provider, which starts again
    page.wait_for_url(f"{provider.return_url}?error=login_expired&transaction={transaction}")
    callback = provider.last()
    assert callback.query == {"error": "login_expired", "transaction": transaction}
    assert callback.complete_status == 410  # expired: nothing to complete


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_the_session_ending_first_is_warned_of_and_explained(
    page: Page, session_first: tuple[WebServer, Provider], locale: str
) -> None:
    """The browser session ends before the login: the dialog warns of the session, says
    when its time is up, and after that the login's page (in a fresh load, which gets a new
    session) says what happened and leads back to the provider."""
    server, provider = session_first
    lang = locale[:2]
    says = TEXTS[lang]
    transaction = provider.begin("substantial")
    page.goto(f"{server.url}/login/{transaction}")
    dialog_says(page, says["session_warning"])
    assert_accessible(page, f"login page, session warning, {lang}")
    activate(page)  # more time for the session
    page.locator("#session-warning").wait_for(state="hidden")
    dialog_says(page, says["session_warning"])
    dialog_says(page, says["session_up"])
    assert page.locator("#session-warning-title").inner_text() == says["time_up"]
    assert_accessible(page, f"login page, session time is up, {lang}")

    page.reload()
    assert page.locator("h1").inner_text() == says["time_up"]
    assert says["session_page"] in page.locator("main").inner_text()
    assert_accessible(page, f"login page after the session ended, {lang}")
    tab_to(page, says["restart"])
    activate(page)
    page.wait_for_url(re.compile(re.escape(provider.return_url) + r"\?error=login_expired"))
    assert provider.last().query == {"error": "login_expired", "transaction": transaction}
