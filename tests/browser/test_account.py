"""Self-service in the real Chromium: a citizen signs in through the login pages, adds a
security key (Chromium's virtual authenticator), blocks a lost code display and changes the
password by keyboard alone; every self-service page, in both languages and in error states,
is checked with axe."""

from __future__ import annotations

import itertools
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from devices.protocol.otp import totp
from server.domain.model import Level
from server.services.secretbox import SecretBox
from server.storage.repositories import IdentityRepository
from tests.browser import shots
from tests.unit.server.people import SEED, seed_person_with_code_display

from .axe import assert_accessible
from .conftest import WebServer
from .keyboard import activate, tab_to, type_into_focused
from .webauthn import (
    TRUSTED_ROOTS_ENV,
    add_virtual_authenticator,
    credentials,
    trust_virtual_keys,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test person's password
NEW_PASSWORD = "seven wobbly lanterns hum"  # noqa: S105
_months = itertools.count(1)


@pytest.fixture(scope="module")
def web_server_env(roots_file: Path) -> dict[str, str]:
    return {TRUSTED_ROOTS_ENV: str(roots_file)}


def add_person(web_server: WebServer, seeding: TestClient, *, high: bool = False) -> str:
    """A person with a code display (seed ``SEED``) and a password; their person number.
    With ``high`` their identity is High, as after an in-person proofing by two operators."""
    number = f"15{next(_months):02d}80-4321"
    services = seeding.app.state.services  # type: ignore[attr-defined]
    identity = seed_person_with_code_display(
        services.sessions, SecretBox.from_file(services.settings.kek_file), number
    )
    if high:
        with services.sessions() as session, session.begin():
            IdentityRepository(session).raise_assurance(identity, Level.HIGH)
    with web_server.process.client() as api:
        answer = api.put(f"/identities/{identity}/password", json={"password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return number


def submit(page: Page, button: str | re.Pattern[str]) -> None:
    """Tab to the button and press Enter; wait for the next page."""
    tab_to(page, button)
    with page.expect_navigation():
        activate(page)


def fill(page: Page, label: str, text: str) -> None:
    tab_to(page, label)
    type_into_focused(page, text)


def sign_in(page: Page, base: str, number: str) -> None:
    """Through the login pages: the person number, the password, then the code display."""
    page.goto(f"{base}/account")
    assert "/account/login" in page.url
    page.focus("#person_number")
    type_into_focused(page, number)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.focus("#method-password")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.focus("#password")
    type_into_focused(page, PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.focus("#method-code")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.focus("#code")
    type_into_focused(page, totp(SEED, time.time()))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{base}/account", page.url


def test_add_a_key_block_a_code_display_and_change_the_password_by_keyboard(
    page: Page, web_server: WebServer, seeding: TestClient, roots_file: Path
) -> None:
    number = add_person(web_server, seeding)
    base = web_server.url
    sign_in(page, base, number)
    assert_accessible(page, "overview (da)")
    shots.save(page, "account-overview-da")

    submit(page, "Tilføj et loginmiddel")
    assert_accessible(page, "add (da)")
    submit(page, "Tilføj en sikkerhedsnøgle")
    assert_accessible(page, "security key (da)")
    shots.save(page, "account-security-key-da")
    tab_to(page, "Tilføj sikkerhedsnøgle")
    # Attached after the last Tab: Chromium drops a virtual authenticator when any other
    # DevTools session of the page detaches, as tab_to's own session does.
    cdp, authenticator = add_virtual_authenticator(page)
    with page.expect_navigation():
        activate(page)  # the key answers; the script posts the form
    # The key's model is not trusted yet: refused, said at the button.
    assert page.locator("#register-key-error").count() == 1
    assert "Denne model af sikkerhedsnøgle godkendes ikke" in page.inner_text("main")
    assert_accessible(page, "security key, model refused (da)")
    tab_to(page, "Tilføj sikkerhedsnøgle")
    cdp, authenticator = add_virtual_authenticator(page)
    trust_virtual_keys(page, roots_file)
    probe = len(credentials(cdp, authenticator))
    with page.expect_navigation():
        activate(page)
    assert page.url == f"{base}/account"
    assert "Din sikkerhedsnøgle er tilføjet" in page.inner_text("main")
    assert len(credentials(cdp, authenticator)) == probe + 1
    assert "Sikkerhedsnøgle" in page.inner_text("table")

    submit(page, re.compile(r"^Spær \(Kodeviser 1000000001\)$"))
    assert_accessible(page, "block (da)")
    submit(page, "Spær det nu")  # no reason chosen
    assert page.locator(".error-summary").count() == 1
    assert_accessible(page, "block, no reason (da)")
    tab_to(page, "Det er mistet eller kan være stjålet")
    activate(page, "Space")
    submit(page, "Spær det nu")
    assert "1000000001 er spærret som mistet" in page.inner_text("main")
    assert "Spærret som mistet" in page.inner_text("table")

    submit(page, re.compile(r"^Skift adgangskode"))
    assert_accessible(page, "password (da)")
    fill(page, "Nuværende adgangskode", PASSWORD)
    fill(page, "Ny adgangskode", "for kort")
    submit(page, "Gem adgangskode")
    assert page.locator("#new_password[aria-invalid=true]").count() == 1
    assert_accessible(page, "password, too short (da)")
    fill(page, "Nuværende adgangskode", PASSWORD)
    fill(page, "Ny adgangskode", NEW_PASSWORD)
    submit(page, "Gem adgangskode")
    assert "Din adgangskode er gemt." in page.inner_text("main")


def go(page: Page, selector: str) -> None:
    with page.expect_navigation():
        page.click(selector)


@pytest.mark.parametrize("locale", ["en-GB", "da-DK"])
def test_every_account_page_and_its_error_states_are_accessible(
    page: Page, web_server: WebServer, seeding: TestClient, locale: str
) -> None:
    lang = locale[:2]
    number = add_person(web_server, seeding)
    base = web_server.url
    sign_in(page, base, number)
    assert page.locator("html").get_attribute("lang") == lang
    assert_accessible(page, f"overview ({lang})")
    shots.save(page, f"account-overview-{lang}")
    for path in ("add", "add/security-key", "add/smartcard", "password"):
        page.goto(f"{base}/account/{path}")
        assert_accessible(page, f"{path} ({lang})")
    for path in ("code-display", "audio-reader"):
        page.goto(f"{base}/account/add/{path}")
        assert_accessible(page, f"{path} ({lang})")
        go(page, "main form button.button")
        assert page.locator("#serial[aria-invalid=true]").count() == 1
        assert page.locator("#code[aria-invalid=true]").count() == 1
        assert_accessible(page, f"{path}, empty ({lang})")
    shots.save(page, f"account-audio-reader-{lang}")
    page.goto(f"{base}/account")
    go(page, "table a[href$='/block']")
    page.check("#reason-paused")
    go(page, "main form button.button")
    go(page, "table a[href$='/replace']")
    assert_accessible(page, f"replace ({lang})")
    page.fill("#serial", "NO-SUCH-SERIAL")
    go(page, "main form button.button")
    assert page.locator("#serial[aria-invalid=true]").count() == 1
    assert_accessible(page, f"replace, unknown serial ({lang})")
    page.goto(f"{base}/account/credentials/{uuid.uuid4()}/block")
    assert_accessible(page, f"not found ({lang})")


@pytest.mark.parametrize("locale", ["en-GB", "da-DK"])
def test_a_login_below_a_smartcards_level_is_shown_the_way_to_high(
    page: Page, web_server: WebServer, seeding: TestClient, locale: str
) -> None:
    """A person whose identity is High, signed in with a password and a code display
    (Substantial): the add page says a smartcard needs High, the smartcard page refuses and
    leads by keyboard to a login at High that comes back."""
    lang = locale[:2]
    number = add_person(web_server, seeding, high=True)
    base = web_server.url
    sign_in(page, base, number)
    page.goto(f"{base}/account/add")
    needs = (
        "Needs you to be logged in at level High."
        if lang == "en"
        else "Kræver et login på niveau Høj."
    )
    assert needs in page.inner_text("main")
    assert_accessible(page, f"add, below High ({lang})")

    answer = page.goto(f"{base}/account/add/smartcard")

    assert answer is not None
    assert answer.status == 403
    assert "piv enrol" not in page.inner_text("main")
    assert_accessible(page, f"smartcard, below High ({lang})")
    shots.save(page, f"account-level-{lang}")
    submit(page, "Log in at level High" if lang == "en" else "Log på igen på niveau Høj")
    assert "/account/login?level=high" in page.url, page.url
    page.focus("#person_number")
    type_into_focused(page, number)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator("#method-smartcard").count() == 1
