"""The migration wizard in the real Chromium: a whole move by keyboard alone in Danish, and
every page of the wizard, in both languages and in its error states, checked with axe."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpTokenState
from tests.browser import shots
from tests.unit.server.web.test_migrate_support import (
    NEW_PASSWORD,
    PASSWORD,
    Person,
    add_person,
    code_of,
)

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


@pytest.fixture(scope="module")
def web_server_env(roots_file: Path) -> dict[str, str]:
    return {TRUSTED_ROOTS_ENV: str(roots_file)}


def stock_token(web_server: WebServer) -> OtpTokenState:
    token = otp_token.new_state(Model.DISPLAY)
    with web_server.process.client() as api:
        answer = api.post(
            "/token-batches",
            content=pskc.write_pskc([token.pskc_key()]),
            headers={"content-type": "application/xml"},
        )
    assert answer.status_code == 201, answer.text
    return token


def key_number(page: Page) -> str:
    return page.locator(".migrate-index .code-block").inner_text().strip()


def submit(page: Page, button: str) -> None:
    """Tab to the button and press Enter; wait for the next page."""
    tab_to(page, button)
    with page.expect_navigation():
        activate(page)


def fill(page: Page, label: str, text: str) -> None:
    tab_to(page, label)
    type_into_focused(page, text)


def test_a_whole_move_by_keyboard_alone(
    page: Page, web_server: WebServer, seeding: TestClient
) -> None:
    person = add_person(seeding)
    token = stock_token(web_server)
    page.goto(f"{web_server.url}/migrate")
    assert_accessible(page, "start (da)")
    shots.save(page, "migrate-start-da")
    fill(page, "Bruger-id fra det gamle eID", person.user_id)
    submit(page, "Start skiftet")

    assert "Trin 2 af 6" in page.inner_text("main")
    assert_accessible(page, "prove (da)")
    shots.save(page, "migrate-prove-da")
    tab_to(page, "Adgangskode til det gamle eID")
    type_into_focused(page, "forkert kodeord")
    index = key_number(page)
    fill(page, f"Kode til nøglenummer {index}", person.code(index))
    submit(page, "Fortsæt")
    assert "Bruger-id, adgangskode eller kode er forkert" in page.inner_text("main")
    assert_accessible(page, "prove, wrong password (da)")
    # The user id is kept; the new key number is shown.
    fill(page, "Adgangskode til det gamle eID", PASSWORD)
    index = key_number(page)
    fill(page, f"Kode til nøglenummer {index}", person.code(index))
    submit(page, "Fortsæt")

    assert "Trin 3 af 6" in page.inner_text("main")
    assert_accessible(page, "confirm (da)")
    fill(page, "CPR-nummer", "010101-1234")
    submit(page, "Bekræft og fortsæt")
    assert "CPR-nummeret passer ikke" in page.inner_text("main")
    assert_accessible(page, "confirm, mismatch (da)")
    tab_to(page, "CPR-nummer")
    page.keyboard.press("Control+A")
    type_into_focused(page, person.person_number)
    submit(page, "Bekræft og fortsæt")

    assert "Trin 4 af 6" in page.inner_text("main")
    assert_accessible(page, "choose (da)")
    shots.save(page, "migrate-choose-da")
    submit(page, "Fortsæt")  # the proposal: a code display and a password

    assert "Trin 5 af 6" in page.inner_text("main")
    assert_accessible(page, "activate (da)")
    fill(page, "Serienummer", token.serial)
    fill(page, "Koden, der vises nu", code_of(token))
    fill(page, "Ny adgangskode", NEW_PASSWORD)
    submit(page, "Aktivér")

    assert "Trin 6 af 6" in page.inner_text("main")
    assert_accessible(page, "complete (da)")
    shots.save(page, "migrate-complete-da")
    submit(page, "Afslut skiftet")
    assert page.locator("h1").inner_text() == "Du har skiftet til det nye eID"
    assert_accessible(page, "done (da)")


@pytest.mark.parametrize("locale", ["en-GB", "da-DK"])
def test_every_page_and_its_error_state_is_accessible(
    page: Page, web_server: WebServer, seeding: TestClient, locale: str, roots_file: Path
) -> None:
    lang = locale[:2]
    person = add_person(seeding)
    token = stock_token(web_server)
    base = web_server.url
    page.goto(f"{base}/migrate")
    go(page, "button.button")  # an empty user id
    assert page.locator("#user_id[aria-invalid=true]").count() == 1
    assert_accessible(page, f"start, empty ({lang})")
    page.fill("#user_id", person.user_id)
    go(page, "button.button")
    flow = page.url.rsplit("/", 1)[1]

    # The resume link in a fresh browser, before the proof: the user id first.
    other = page.context.browser.new_context(locale=locale)  # type: ignore[union-attr]
    try:
        fresh = other.new_page()
        fresh.goto(f"{base}/migrate/{flow}")
        assert_accessible(fresh, f"resume ({lang})")
        go(fresh, "button.button")
        assert_accessible(fresh, f"resume, empty ({lang})")
    finally:
        other.close()

    prove(page, person)
    go(page, "main button.button")  # confirm without a CPR number
    assert_accessible(page, f"confirm, empty ({lang})")
    page.fill("#person_number", person.person_number)
    go(page, "main button.button")

    # Choose: nothing ticked is refused; then a security key as well as the proposal.
    for kind in ("code_display", "password"):
        page.uncheck(f"#kind-{kind}")
    go(page, "main button.button")
    assert page.locator(".error-summary").count() == 1
    assert_accessible(page, f"choose, none ({lang})")
    for kind in ("code_display", "fido2", "password"):
        page.check(f"#kind-{kind}")
    go(page, "main button.button")

    page.fill("#serial", "NO-SUCH-SERIAL")
    page.fill("#code", "123456")
    page.fill("#password", NEW_PASSWORD)
    go(page, "main button.button")
    assert page.locator("#serial[aria-invalid=true]").count() == 1
    assert_accessible(page, f"activate, unknown serial ({lang})")
    page.fill("#serial", token.serial)
    page.fill("#code", code_of(token))
    page.fill("#password", NEW_PASSWORD)
    go(page, "main button.button")

    assert page.locator("form[data-webauthn=create]").count() == 1
    assert_accessible(page, f"enrol ({lang})")
    shots.save(page, f"migrate-enrol-{lang}")
    go(page, "form[action$='/record'] button")
    assert page.locator(".error-summary").count() == 1
    assert_accessible(page, f"enrol, nothing set up ({lang})")
    # The security key, registered here through the browser's WebAuthn.
    cdp, authenticator = add_virtual_authenticator(page)
    trust_virtual_keys(page, roots_file)
    go(page, "form[data-webauthn=create] button")
    assert len(credentials(cdp, authenticator)) == 2  # the probe's and the registered one
    assert page.locator(".error-summary").count() == 0, page.inner_text("main")
    assert_accessible(page, f"complete ({lang})")
    assert ("Security key" if lang == "en" else "Sikkerhedsnøgle") in page.inner_text("main")
    go(page, "main button.button")
    assert page.locator(".notice--success").count() == 1
    assert_accessible(page, f"done ({lang})")

    # Moved already: told after a new proof.
    page.goto(f"{base}/migrate")
    page.fill("#user_id", person.user_id)
    go(page, "main button.button")
    prove(page, person)
    assert page.locator("h1").inner_text() == (
        "You have moved already" if lang == "en" else "Du har allerede skiftet"
    )
    assert_accessible(page, f"already moved ({lang})")


def go(page: Page, selector: str) -> None:
    """Click and wait for the page the click leads to."""
    with page.expect_navigation():
        page.click(selector)


def prove(page: Page, person: Person) -> None:
    page.fill("#password", PASSWORD)
    page.fill("#code", person.code(key_number(page)))
    go(page, "main button.button")
