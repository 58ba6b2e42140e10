"""The operator console in the real Chromium: operator tasks by keyboard alone (sign in, find
a person, block a credential through its confirmation with a reason; enrol with the channel
left out, then chosen), and axe on every console page in Danish and English, with error states
(a wrong key, a person not found, a form with errors, a confirmation without its reason), the
proofing form included, and a colleague approving a High proofing from their own console."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpGenerator
from server.services.access import ApiKeys, Role

from . import shots
from .axe import assert_accessible
from .conftest import PageFactory, WebServer
from .keyboard import activate, tab_to, type_into_focused

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.integration

PERSON = "120380-4455"
# The page of a High proofing waiting for a second operator.
_PROOFING = re.compile(r".*/console/proofings/[0-9a-f-]{36}$")


@dataclass(frozen=True)
class Desk:
    """What the tests need from the running service: operator keys and a person whose code
    display is active."""

    url: str
    bank_key: str
    centre_key: str
    colleague_key: str  # another operator of the centre: approves the centre's High proofings
    supervisor_key: str  # chooses the channel: the bank or the citizen service centre
    identity_id: str
    serial: str


@pytest.fixture(scope="module")
def desk(web_server: WebServer) -> Desk:
    keys = ApiKeys(web_server.folder / "service" / "api-keys.json")
    bank_key = keys.add("bank-op", [Role.OPERATOR_BANK])[1]
    centre_key = keys.add("centre-op", [Role.OPERATOR_CENTRE], "centre-1")[1]
    colleague_key = keys.add("centre-op-2", [Role.OPERATOR_CENTRE], "centre-1")[1]
    supervisor_key = keys.add("boss", [Role.SUPERVISOR])[1]
    token = otp_token.new_state(Model.DISPLAY)
    with web_server.process.client() as api:
        identity = _ok(
            api.post(
                "/identities",
                json={
                    "person_number": PERSON,
                    "name": "Inger Christensen",
                    # Proofed at the bank: a bank operator reaches only the bank's customers.
                    "proofing": {
                        "channel": "bank",
                        "document_kind": "passport",
                        "operator_ids": ["bank-op"],
                    },
                },
                headers={"Authorization": f"Bearer {bank_key}"},
            )
        )
        _ok(
            api.post(
                "/token-batches",
                content=pskc.write_pskc([token.pskc_key()]),
                headers={"content-type": "application/xml"},
            )
        )
        assigned = _ok(
            api.post(f"/identities/{identity['id']}/tokens", json={"serial": token.serial})
        )
        code = OtpGenerator(token, lambda _: None).totp_now()
        _ok(api.post(f"/credentials/{assigned['id']}/activate", json={"code": code}))
    return Desk(
        web_server.url,
        bank_key,
        centre_key,
        colleague_key,
        supervisor_key,
        str(identity["id"]),
        token.serial,
    )


def _ok(answer: httpx.Response) -> dict[str, str]:
    assert answer.is_success, answer.text
    body: dict[str, str] = answer.json()
    return body


def _submit(page: Page, label: str) -> None:
    """Tab to the button and press Enter, then wait for the next page."""
    tab_to(page, label)
    with page.expect_navigation():
        activate(page)


def test_an_operator_blocks_a_credential_by_keyboard_alone(page: Page, desk: Desk) -> None:
    page.goto(f"{desk.url}/console")
    assert page.url.startswith(f"{desk.url}/console/login")
    tab_to(page, "API-nøgle")
    type_into_focused(page, desk.bank_key)
    _submit(page, "Log på")
    assert page.url == f"{desk.url}/console"

    tab_to(page, "CPR-nummer")
    type_into_focused(page, PERSON)
    _submit(page, "Find person")
    assert page.url == f"{desk.url}/console/people/{desk.identity_id}"
    assert page.locator("h1").inner_text() == "Inger Christensen"

    # Blocking leads to its confirmation: the credential, what will happen, and a reason.
    _submit(page, f"Spær Kodeviser {desk.serial}")
    confirmation = page.url
    assert page.locator("h1").inner_text() == "Spær loginmidlet"
    assert desk.serial in page.locator("main").inner_text()
    assert "Spærringen er endelig" in page.locator("main").inner_text()
    assert_accessible(page, "console block confirmation, da")
    _submit(page, "Spær loginmidlet")  # no reason yet: nothing is blocked
    assert page.url == confirmation
    assert page.evaluate("document.activeElement.id") == "error-summary"
    assert page.locator("#reason[aria-invalid=true]").count() == 1
    assert_accessible(page, "console block confirmation, da, no reason")
    tab_to(page, "Begrundelse")
    type_into_focused(page, "Personen ringede: kodeviseren er stjålet")
    _submit(page, "Spær loginmidlet")
    assert page.url == f"{desk.url}/console/people/{desk.identity_id}"
    assert page.get_by_role("status").first.inner_text() == "Loginmidlet er spærret."
    row = page.get_by_role("row", name=re.compile(f"Kodeviser {desk.serial}"))
    assert "Spærret" in row.inner_text()
    assert_accessible(page, "console person, da, after blocking")


def _choose(page: Page, label: str) -> None:
    """Tab to a radio button or checkbox and tick it with Space."""
    tab_to(page, label)
    activate(page, "Space")


def test_a_channel_not_chosen_is_told_and_mended_by_keyboard_alone(page: Page, desk: Desk) -> None:
    """A supervisor enrols a person without saying where the person is: the form comes back
    with the error summary focused, what was typed kept, and the channel chosen from the
    summary's link; then the person is enrolled."""
    page.goto(f"{desk.url}/console/login")
    tab_to(page, "API-nøgle")
    type_into_focused(page, desk.supervisor_key)
    _submit(page, "Log på")
    tab_to(page, "Opret en person")
    with page.expect_navigation():
        activate(page)
    assert page.url == f"{desk.url}/console/enrol"
    tab_to(page, "Fulde navn")
    type_into_focused(page, "Klaus Rifbjerg")
    tab_to(page, "CPR-nummer")
    type_into_focused(page, "150531-0000")
    _choose(page, "Pas")  # the channel's group is passed, nothing chosen
    _choose(page, "Betydelig (du godkender alene)")
    _submit(page, "Opret person")

    assert page.url == f"{desk.url}/console/enrol"
    assert page.title().startswith("Fejl:")
    assert page.evaluate("document.activeElement.id") == "error-summary"
    summary = page.locator("#error-summary")
    assert summary.get_by_role("link").all_inner_texts() == ["Vælg, hvor personen er."]
    assert page.locator("#channel-bank-error").is_visible()
    assert page.locator("#name").input_value() == "Klaus Rifbjerg"
    assert page.locator("#person_number").input_value() == "150531-0000"
    assert page.locator("#document_kind-passport").is_checked()
    assert page.locator("#level-substantial").is_checked()
    assert_accessible(page, "console enrol, da, channel not chosen")

    # The summary's link takes the focus to the group; the arrow keys choose within it.
    tab_to(page, "Vælg, hvor personen er.")
    activate(page)
    assert page.evaluate("document.activeElement.id") == "channel-bank"
    page.keyboard.press("ArrowDown")
    assert page.locator("#channel-service_centre").is_checked()
    _submit(page, "Opret person")
    assert re.fullmatch(rf"{re.escape(desk.url)}/console/people/[0-9a-f-]{{36}}", page.url)
    assert page.get_by_role("status").first.inner_text() == "Personen er oprettet."


@pytest.mark.parametrize(
    ("locale", "texts"),
    [
        (
            "da-DK",
            {
                "key": "API-nøgle",
                "sign_in": "Log på",
                "number": "CPR-nummer",
                "find": "Find person",
                "enrol": "Opret person",
                "suspend": "Suspendér identiteten",
                "level_high": "Høj (to operatører godkender)",
                "prove": "Registrér identitetssikring",
                "approve_high": "Dig og en anden operatør (niveau Høj)",
                "waiting": "Se identitetssikringer, der venter på godkendelse",
                "approve": "Godkend med min nøgle",
                "checked_myself": "Jeg har selv set personen og kontrolleret legitimationen",
            },
        ),
        (
            "en-GB",
            {
                "key": "API key",
                "sign_in": "Log in",
                "number": "CPR number",
                "find": "Find person",
                "enrol": "Enrol person",
                "suspend": "Suspend the identity",
                "level_high": "High (two operators approve)",
                "prove": "Record the proofing",
                "approve_high": "You and a second operator (High)",
                "waiting": "See the identity proofings waiting for approval",
                "approve": "Approve with my key",
                "checked_myself": "I have seen the person and checked the document myself",
            },
        ),
    ],
)
def test_every_console_page_passes_axe(
    new_page: PageFactory, desk: Desk, locale: str, texts: dict[str, str]
) -> None:
    lang = locale[:2]
    page = new_page(locale=locale)
    page.goto(f"{desk.url}/console/login")
    assert page.locator("html").get_attribute("lang") == lang
    assert_accessible(page, f"console login, {lang}")
    shots.save(page, f"console-login-{lang}")

    # A wrong key: the error state of the sign-in.
    page.get_by_label(texts["key"]).fill("akk_not-a-key")
    page.get_by_role("button", name=texts["sign_in"]).click()
    assert page.locator("#error-summary").is_visible()
    assert_accessible(page, f"console login, {lang}, wrong key")

    page.get_by_label(texts["key"]).fill(desk.centre_key)
    page.get_by_role("button", name=texts["sign_in"]).click()
    page.wait_for_url(f"{desk.url}/console")
    assert_accessible(page, f"console home, {lang}")
    shots.save(page, f"console-home-{lang}")

    page.get_by_label(texts["number"]).fill("010101-0101")
    page.get_by_role("button", name=texts["find"]).click()
    assert page.locator("#person_number-error").is_visible()
    assert_accessible(page, f"console search, {lang}, not found")

    person = f"{desk.url}/console/people/{desk.identity_id}"
    page.goto(person)
    assert_accessible(page, f"console person, {lang}")
    shots.save(page, f"console-person-{lang}")

    # Suspending asks first: its confirmation, sent without a reason (its error state).
    page.get_by_role("link", name=texts["suspend"]).click()
    page.wait_for_url(f"{person}/suspend")
    assert_accessible(page, f"console suspend confirmation, {lang}")
    page.get_by_role("button", name=texts["suspend"]).click()
    assert page.locator("#reason[aria-invalid=true]").is_visible()
    assert_accessible(page, f"console suspend confirmation, {lang}, no reason")
    page.goto(person)

    # The proofing form on the person's page: sent empty (its error state), then High, which
    # waits for a second operator.
    page.get_by_role("button", name=texts["prove"]).click()
    assert page.locator("#error-summary").is_visible()
    assert page.locator("#level-substantial-error").is_visible()
    assert_accessible(page, f"console proofing, {lang}, errors")
    page.locator("#document_kind-passport").check()
    page.get_by_label(texts["approve_high"]).check()
    page.get_by_role("button", name=texts["prove"]).click()
    page.wait_for_url(_PROOFING)
    assert_accessible(page, f"console proofing waiting for a second operator, {lang}")
    shots.save(page, f"console-proofing-second-{lang}")
    waiting = page.url

    page.goto(f"{desk.url}/console/enrol")
    assert_accessible(page, f"console enrol, {lang}")
    page.get_by_role("button", name=texts["enrol"]).click()
    assert page.locator("#error-summary").is_visible()
    assert_accessible(page, f"console enrol, {lang}, errors")

    page.get_by_label(texts["number"]).fill(f"0{'1' if lang == 'da' else '2'}0203-1234")
    page.get_by_label(texts["level_high"]).check()
    page.locator("#name").fill("Tove Ditlevsen")
    page.locator("#document_kind-passport").check()
    page.get_by_role("button", name=texts["enrol"]).click()
    page.wait_for_url(_PROOFING)
    assert_accessible(page, f"console enrolment waiting for a second operator, {lang}")
    shots.save(page, f"console-second-operator-{lang}")
    page.goto(f"{desk.url}/console/proofings")
    assert_accessible(page, f"console proofings waiting, own, {lang}")

    page.goto(f"{desk.url}/console/migrations")
    assert_accessible(page, f"console migration start, {lang}")
    page.locator("#user_id").fill("nem-unknown-1")
    page.locator("#document_kind-passport").check()
    page.locator("form[action='/console/migrations'] button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/console/migrations/[0-9a-f-]{36}$"))
    assert_accessible(page, f"console migration flow, {lang}")
    shots.save(page, f"console-migration-{lang}")

    # A colleague of the centre, at their own desk: the proofings waiting for them, one of
    # them opened, approved without the confirmation (its error state), then approved.
    colleague = new_page(locale=locale)
    colleague.goto(f"{desk.url}/console/login")
    colleague.get_by_label(texts["key"]).fill(desk.colleague_key)
    colleague.get_by_role("button", name=texts["sign_in"]).click()
    colleague.wait_for_url(f"{desk.url}/console")
    assert_accessible(colleague, f"console home with proofings waiting, {lang}")
    colleague.get_by_role("link", name=texts["waiting"]).click()
    colleague.wait_for_url(f"{desk.url}/console/proofings")
    assert_accessible(colleague, f"console proofings waiting, {lang}")
    shots.save(colleague, f"console-proofings-{lang}")
    colleague.goto(waiting)
    assert_accessible(colleague, f"console proofing to approve, {lang}")
    shots.save(colleague, f"console-proofing-approve-{lang}")
    colleague.get_by_role("button", name=texts["approve"]).click()
    assert colleague.locator("#error-summary").is_visible()
    assert_accessible(colleague, f"console proofing to approve, {lang}, not confirmed")
    colleague.get_by_label(texts["checked_myself"]).check()
    colleague.get_by_role("button", name=texts["approve"]).click()
    colleague.wait_for_url(f"{desk.url}/console/people/{desk.identity_id}")


@pytest.mark.parametrize(
    ("locale", "texts"),
    [
        (
            "da-DK",
            {
                "start": "Start login ved skranken",
                "here": "Åbn login på denne skærm",
                "named": "(ved skranken) beder dig logge på",
            },
        ),
        (
            "en-GB",
            {
                "start": "Start a login at the desk",
                "here": "Open the login on this screen",
                "named": "(at the desk) asks you to log in",
            },
        ),
    ],
)
def test_the_desk_login_pages_pass_axe(
    new_page: PageFactory, desk: Desk, locale: str, texts: dict[str, str]
) -> None:
    """A bank operator begins a login at the desk (a person enrolled elsewhere becomes the
    bank's customer by completing it): its console page, and the login's first page on the
    operator's screen, which names the bank's desk."""
    lang = locale[:2]
    page = new_page(locale=locale)
    page.goto(f"{desk.url}/console/login")
    page.locator("#api_key").fill(desk.bank_key)
    page.locator("form[action='/console/login'] button[type=submit]").click()
    page.wait_for_url(f"{desk.url}/console")
    page.get_by_role("button", name=texts["start"]).click()
    page.wait_for_url(re.compile(r".*/console/desk-logins/[0-9a-f-]{36}$"))
    assert_accessible(page, f"console desk login, {lang}")
    shots.save(page, f"console-desk-login-{lang}")
    page.get_by_role("link", name=texts["here"]).click()
    page.wait_for_url(re.compile(r".*/login/[0-9a-f-]{36}$"))
    assert texts["named"] in page.locator("main").inner_text()
    assert_accessible(page, f"login at the desk, {lang}")
