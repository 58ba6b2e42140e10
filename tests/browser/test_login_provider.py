"""A service provider's login across origins, in the real Chromium under the pages' CSP: the
provider (tests/browser/provider.py, another port, so another origin) begins the login, the
person logs in by keyboard, and the browser comes back to the provider's return URL, where the
provider completes the login with its own key and verifies the assertion. The person may also
cancel and go back: the provider is told ``error=access_denied`` and the login is closed.
Every page names the provider by its display name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.browser.axe import assert_accessible
from tests.browser.conftest import PageFactory, WebServer
from tests.browser.keyboard import activate, tab_to, type_into_focused
from tests.browser.provider import Provider, running_provider

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test password
SHOWN_AS = "Testkommunen"


@pytest.fixture(scope="module")
def api(web_server: WebServer) -> Iterator[httpx.Client]:
    with web_server.process.client() as client:
        yield client


@pytest.fixture(scope="module")
def provider(web_server: WebServer) -> Iterator[Provider]:
    keys_file = Path(web_server.process.env["AKKREDITIV_API_KEYS_FILE"])
    with running_provider(web_server.url, keys_file, display_name=SHOWN_AS) as running:
        yield running


def enrol(api: httpx.Client, number: str, name: str) -> tuple[str, bytes]:
    """A person with a password and an activated HOTP token; the identity and its secret."""
    from tests.browser.test_login import enrol as enrol_person
    from tests.browser.test_login import give_token

    identity = enrol_person(api, number, name)
    return identity, give_token(api, identity)


def submit(page: Page) -> None:
    with page.expect_navigation():
        activate(page)


def blocked_forms(page: Page) -> list[str]:
    """Chromium's console reports of navigations the CSP refused, from now on."""
    refused: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    page.on("console", note)
    return refused


def log_in_by_keyboard(page: Page, number: str, secret: bytes) -> None:
    """Person number, password, then a code (the login asks for level substantial)."""
    from devices.protocol.otp import hotp

    tab_to(page, "CPR-nummer")
    type_into_focused(page, number)
    submit(page)
    page.wait_for_url(re.compile(r"/choose$"))
    tab_to(page, "Fortsæt")
    submit(page)
    page.wait_for_url(re.compile(r"/password$"))
    tab_to(page, "Adgangskode")
    type_into_focused(page, PASSWORD)
    submit(page)
    page.wait_for_url(re.compile(r"/choose$"))
    tab_to(page, "Fortsæt")
    submit(page)
    page.wait_for_url(re.compile(r"/code$"))
    tab_to(page, "Kode")
    type_into_focused(page, hotp(secret, 1))
    activate(page)  # the last step: the browser goes on to the provider, another origin


def test_the_browser_returns_to_the_provider_which_completes_the_login(
    page: Page, web_server: WebServer, api: httpx.Client, provider: Provider
) -> None:
    _, secret = enrol(api, "1111901234", "Paula Provider")
    transaction = provider.begin("substantial", nonce="provider-session-1")
    refused = blocked_forms(page)
    page.goto(f"{web_server.url}/login/{transaction}")
    assert f"{SHOWN_AS} beder dig logge på" in page.locator("main").inner_text()
    assert provider.id not in page.locator("main").inner_text()

    log_in_by_keyboard(page, "111190-1234", secret)

    page.wait_for_url(f"{provider.return_url}?transaction={transaction}")
    assert page.locator("h1").inner_text() == "Welcome back"
    assert refused == []
    callback = provider.last()
    assert callback.query == {"transaction": transaction}
    assert callback.complete_status == 200
    assert callback.claims is not None
    assert callback.claims["aud"] == provider.id
    assert callback.claims["txn"] == transaction
    assert callback.claims["loa"] == "substantial"
    assert callback.claims["nonce"] == "provider-session-1"


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_without_script_the_done_page_links_back_to_the_provider(
    new_page: PageFactory, web_server: WebServer, api: httpx.Client, provider: Provider, locale: str
) -> None:
    """Without the page's script the page stays, says where it goes and links there (a link
    is no form: the CSP's form-action does not govern it); by keyboard the link gets to the
    provider. (The browser runs script, for axe; the service's own script is left out.)"""
    from devices.protocol.otp import hotp

    lang = locale[:2]
    number = {"da": "1212901234", "en": "1301901234"}[lang]
    _, secret = enrol(api, number, "Nils Noscript")
    transaction = provider.begin("substantial")
    page = new_page(locale=locale)
    page.route(
        "**/static/app.js", lambda route: route.fulfill(body="", content_type="text/javascript")
    )
    page.goto(f"{web_server.url}/login/{transaction}")
    page.fill("#person_number", number)
    page.locator("main form button[type=submit]").first.click()
    page.goto(f"{web_server.url}/login/{transaction}/password")
    page.fill("#password", PASSWORD)
    page.locator("main form button[type=submit]").first.click()
    page.goto(f"{web_server.url}/login/{transaction}/code")
    page.fill("#code", hotp(secret, 1))
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/done$"))
    heading = {"da": "Du er logget på", "en": "You are logged in"}[lang]
    assert page.locator("h1").inner_text() == heading
    assert_accessible(page, f"login done, back to the provider, {lang}")
    label = {"da": f"Fortsæt til {SHOWN_AS}", "en": f"Continue to {SHOWN_AS}"}[lang]
    tab_to(page, label)
    with page.expect_navigation():
        activate(page)
    page.wait_for_url(f"{provider.return_url}?transaction={transaction}")
    assert provider.last().claims is not None


def test_cancel_goes_back_to_the_provider_and_closes_the_login(
    page: Page, web_server: WebServer, api: httpx.Client, provider: Provider
) -> None:
    """ "Afbryd og gå tilbage til ..." on a login page: the provider's return URL is told
    ``error=access_denied`` with the login's id, and the login cannot be completed any more."""
    enrol(api, "1401901234", "Carla Cancel")
    transaction = provider.begin("substantial")
    page.goto(f"{web_server.url}/login/{transaction}")
    tab_to(page, "CPR-nummer")
    type_into_focused(page, "140190-1234")
    submit(page)
    page.wait_for_url(re.compile(r"/choose$"))
    assert_accessible(page, "login choice with the way back to the provider, da")
    tab_to(page, f"Afbryd og gå tilbage til {SHOWN_AS}")
    activate(page)
    page.wait_for_url(f"{provider.return_url}?error=access_denied&transaction={transaction}")
    callback = provider.last()
    assert callback.query == {"error": "access_denied", "transaction": transaction}
    assert callback.complete_status == 409  # the login is closed
    # And its pages say so (the browser that cancelled it going back, say).
    page.goto(f"{web_server.url}/login/{transaction}/choose")
    assert page.locator("h1").inner_text() == "Login er afsluttet"
    assert_accessible(page, "a cancelled login, da")


def test_every_login_page_names_the_provider_and_offers_the_way_back(
    page: Page, web_server: WebServer, provider: Provider
) -> None:
    transaction = provider.begin("high")
    page.goto(f"{web_server.url}/login/{transaction}")
    page.fill("#person_number", "3112991234")
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/choose$"))
    base = f"{web_server.url}/login/{transaction}"
    for path in ("", "/choose", "/password", "/code", "/key-card", "/security-key", "/smartcard"):
        page.goto(base + path)
        text = page.locator("main").inner_text()
        assert f"{SHOWN_AS} beder dig logge på" in text, path
        cancel = page.get_by_role("button", name=f"Afbryd og gå tilbage til {SHOWN_AS}")
        assert cancel.count() == 1, path
