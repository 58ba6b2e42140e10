"""The login pages in the real Chromium, by keyboard alone: a password + code login that
steps up to the provider's level (Danish, with a wrong password on the way), the citizen's
sign-in to self-service (Danish), and a login with a security key registered through
Chromium's virtual authenticator (English). axe checks every page in both languages and an
error state.

The virtual authenticator's attestation is trusted the way a real key model's would be: its
certificate (self-signed, made by Chromium) is written to the file that
``AKKREDITIV_FIDO_TRUSTED_ROOTS`` names before the registration completes; the service reads
that file on each request, and unattested keys stay refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.browser import shots
from tests.browser.axe import assert_accessible
from tests.browser.conftest import WebServer
from tests.browser.keyboard import activate, tab_to, type_into_focused
from tests.browser.webauthn import (
    TRUSTED_ROOTS_ENV,
    add_virtual_authenticator,
    credentials,
    trust_attestation,
    unb64,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test password


@pytest.fixture(scope="module")
def web_server_env(roots_file: Path) -> dict[str, str]:
    return {TRUSTED_ROOTS_ENV: str(roots_file)}


@pytest.fixture(scope="module")
def api(web_server: WebServer) -> Iterator[httpx.Client]:
    with web_server.process.client() as client:
        yield client


def enrol(api: httpx.Client, number: str, name: str) -> str:
    answer = api.post(
        "/identities",
        json={
            "person_number": number,
            "name": name,
            "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
        },
    )
    assert answer.status_code == 201, answer.text
    identity = str(answer.json()["id"])
    answer = api.put(f"/identities/{identity}/password", json={"password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return identity


def give_token(api: httpx.Client, identity: str) -> bytes:
    """An HOTP token (the code kind every OTP field accepts), activated; its secret."""
    from devices.protocol import pskc
    from devices.protocol.otp import hotp
    from firmware_sim.tokens import otp_token

    token = otp_token.new_state(otp_token.Model.USB, otp_token.Algorithm.HOTP)
    imported = api.post(
        "/token-batches",
        content=pskc.write_pskc([token.pskc_key()]),
        headers={"content-type": "application/xml"},
    )
    assert imported.status_code == 201, imported.text
    assigned = api.post(f"/identities/{identity}/tokens", json={"serial": token.serial})
    assert assigned.status_code == 200, assigned.text
    activated = api.post(
        f"/credentials/{assigned.json()['id']}/activate", json={"code": hotp(token.secret, 0)}
    )
    assert activated.status_code == 200, activated.text
    return bytes(token.secret)


def begin(api: httpx.Client, level: str, return_url: str | None = None) -> str:
    body: dict[str, Any] = {"min_level": level}
    if return_url is not None:
        body["return_url"] = return_url
    answer = api.post("/authentications", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["login_url"])


def check(page: Page, where: str, shot: str | None = None) -> None:
    assert_accessible(page, where)
    if shot is not None:
        shots.save(page, shot)


def submit(page: Page) -> None:
    """Enter on the focused field or button, and wait for the page it leads to."""
    with page.expect_navigation():
        activate(page)


def press_continue(page: Page, label: str) -> None:
    tab_to(page, label)
    submit(page)


def test_password_then_code_by_keyboard_steps_up_and_returns(
    page: Page, web_server: WebServer, api: httpx.Client
) -> None:
    from devices.protocol.otp import hotp

    identity = enrol(api, "0101901234", "Karen Keyboard")
    secret = give_token(api, identity)
    back = f"{web_server.url}/help"
    login = begin(api, "substantial", back)
    transaction = login.rsplit("/", 1)[1]

    page.goto(web_server.url + login)
    assert page.locator("h1").inner_text() == "Log på"
    check(page, "login start, da", "login-start-da")
    tab_to(page, "CPR-nummer")
    type_into_focused(page, "010190-1234")
    submit(page)  # Enter in the field submits
    page.wait_for_url(re.compile(r"/choose$"))
    check(page, "login choice, da", "login-choose-da")
    press_continue(page, "Fortsæt")  # the first credential, password, is chosen already
    page.wait_for_url(re.compile(r"/password$"))
    check(page, "login password, da", "login-password-da")

    tab_to(page, "Adgangskode")
    type_into_focused(page, "not the password")
    submit(page)
    assert page.title().startswith("Fejl:")
    assert page.locator("#password-error").is_visible()
    assert page.evaluate("document.activeElement.id") == "error-summary"
    check(page, "login password, da, wrong password")

    tab_to(page, "Adgangskode")
    page.keyboard.press("Control+A")
    type_into_focused(page, PASSWORD)
    submit(page)
    page.wait_for_url(re.compile(r"/choose$"))
    assert "kræver niveau Betydelig" in page.locator("main").inner_text()
    check(page, "login step-up choice, da", "login-step-up-da")
    press_continue(page, "Fortsæt")  # the code is first now: the password is used
    page.wait_for_url(re.compile(r"/code$"))
    check(page, "login code, da", "login-code-da")
    tab_to(page, "Kode")
    type_into_focused(page, hotp(secret, 1))
    submit(page)
    page.wait_for_url(re.compile(r"/help\?transaction="))
    assert page.url == f"{back}?transaction={transaction}"

    completed = api.post(f"/authentications/{transaction}/complete")
    assert completed.status_code == 200, completed.text
    assert completed.json()["level"] == "substantial"


def test_self_service_sign_in_by_keyboard(
    page: Page, web_server: WebServer, api: httpx.Client
) -> None:
    """/account/login asks for the CPR-nummer and then begins a login of its own at level
    substantial; the same pages lead back to the account, signed in."""
    from devices.protocol.otp import hotp

    identity = enrol(api, "0505601234", "Selma Selvbetjening")
    secret = give_token(api, identity)
    page.goto(web_server.url + "/account/login")
    assert "akkreditivs selvbetjening" in page.locator("main").inner_text()
    check(page, "self-service login start, da")
    tab_to(page, "CPR-nummer")
    type_into_focused(page, "050560-1234")
    submit(page)
    page.wait_for_url(re.compile(r"/choose$"))
    press_continue(page, "Fortsæt")
    page.wait_for_url(re.compile(r"/password$"))
    tab_to(page, "Adgangskode")
    type_into_focused(page, PASSWORD)
    submit(page)
    page.wait_for_url(re.compile(r"/choose$"))
    press_continue(page, "Fortsæt")
    page.wait_for_url(re.compile(r"/code$"))
    tab_to(page, "Kode")
    type_into_focused(page, hotp(secret, 1))
    submit(page)
    page.wait_for_url(f"{web_server.url}/account")
    assert page.locator("h1").inner_text() == "Dine loginmidler"
    assert "Selma Selvbetjening" in page.locator("main").inner_text()


CREATE = """async (options) => {
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey);
    publicKey.attestation = "direct";
    const credential = await navigator.credentials.create({publicKey});
    return credential.toJSON();
}"""


def register_key(page: Page, api: httpx.Client, identity: str, roots_file: Path) -> None:
    """Register the page's virtual key as an account page would: the service's creation
    options, the browser's ``navigator.credentials.create`` (attestation "direct"), the
    service's check. The attestation certificate becomes a trusted root first."""
    begun = api.post(f"/identities/{identity}/fido2/register/begin", json={})
    assert begun.status_code == 201, begun.text
    created: dict[str, Any] = page.evaluate(CREATE, begun.json()["options"])
    attestation = trust_attestation(roots_file, created["response"]["attestationObject"])
    assert attestation["fmt"] == "packed", attestation["fmt"]
    response = {
        "id": created["id"],
        "rawId": created["rawId"],
        "type": created["type"],
        "response": {
            "clientDataJSON": created["response"]["clientDataJSON"],
            "attestationObject": created["response"]["attestationObject"],
        },
        "clientExtensionResults": created.get("clientExtensionResults", {}),
    }
    done = api.post(
        f"/fido2/registrations/{begun.json()['state_id']}/complete", json={"response": response}
    )
    assert done.status_code == 201, done.text


@pytest.mark.parametrize("locale", ["en-GB"])
def test_security_key_login_by_keyboard(
    page: Page, web_server: WebServer, api: httpx.Client, roots_file: Path
) -> None:
    identity = enrol(api, "0202801234", "Kim Key")
    login = begin(api, "substantial")
    transaction = login.rsplit("/", 1)[1]
    page.goto(web_server.url + login)
    # The key, registered here, stays with the page (its DevTools session, which tab_to
    # shares) through the login's pages until it is used on the security key page.
    cdp, authenticator = add_virtual_authenticator(page)
    register_key(page, api, identity, roots_file)
    (key,) = credentials(cdp, authenticator)
    assert page.locator("h1").inner_text() == "Log in"
    check(page, "login start, en", "login-start-en")
    tab_to(page, "CPR number")
    type_into_focused(page, "0202801234")
    submit(page)
    page.wait_for_url(re.compile(r"/choose$"))
    check(page, "login choice, en", "login-choose-en")
    tab_to(page, "Password")  # the radio group: arrows move the choice
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.value") == "security-key"
    press_continue(page, "Continue")
    page.wait_for_url(re.compile(r"/security-key$"))
    check(page, "login security key, en", "login-security-key-en")
    tab_to(page, "Use my security key")
    activate(page)
    page.wait_for_url(re.compile(r"/done$"))
    (used,) = credentials(cdp, authenticator)
    assert used["credentialId"] == key["credentialId"]
    assert used["signCount"] > key["signCount"]  # this key signed the login
    assert page.locator("h1").inner_text() == "You are logged in"
    check(page, "login done, en")

    completed = api.post(f"/authentications/{transaction}/complete")
    assert completed.status_code == 200, completed.text
    assert completed.json()["level"] == "substantial"
    claims = json.loads(unb64(completed.json()["assertion"].split(".")[1]))
    assert claims["amr"] == ["fido2_uv"]


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_every_login_page_is_accessible(
    page: Page, web_server: WebServer, api: httpx.Client, locale: str
) -> None:
    """The pages the walks above do not pass through, in each language, with an error
    state each (the smartcard's "not yet", an empty code, another browser's login), and the
    "you are logged in" page of a login without a return URL."""
    lang = locale[:2]
    number = {"da": "0606501234", "en": "0707501234"}[lang]
    enrol(api, number, "Alma Axe")
    page.goto(web_server.url + begin(api, "low"))
    page.fill("#person_number", number)
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/choose$"))
    page.goto(page.url.rsplit("/", 1)[0] + "/password")
    page.fill("#password", PASSWORD)
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/done$"))
    assert (
        page.locator("h1").inner_text()
        == {"da": "Du er logget på", "en": "You are logged in"}[lang]
    )
    check(page, f"login done, {lang}", f"login-done-{lang}")

    login = begin(api, "high")
    page.goto(web_server.url + login)
    page.fill("#person_number", "3112991234")
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/choose$"))
    base = page.url.rsplit("/", 1)[0]
    for method in ("password", "code", "key-card", "security-key", "smartcard"):
        page.goto(f"{base}/{method}")
        check(page, f"login {method}, {lang}", f"login-{method}-{lang}")
    page.goto(f"{base}/smartcard")
    page.locator("main form button.button").first.click()
    page.wait_for_load_state()
    assert page.locator("#error-summary").is_visible()
    check(page, f"login smartcard not yet, {lang}")
    page.goto(f"{base}/key-card")
    page.locator("main form button.button").first.click()
    page.wait_for_load_state()
    assert page.locator("#code-error").is_visible()
    check(page, f"login key card, empty code, {lang}")
    page.goto(f"{base}/security-key")
    # A key that refuses (as when the person cancels): the page says so and stays usable.
    page.evaluate(
        "() => { navigator.credentials.get = () => Promise.reject(new Error('cancelled')); }"
    )
    page.locator("#security-key-button").click()
    status = page.locator(".webauthn-status")
    status.wait_for(state="visible")
    assert status.inner_text() != ""
    check(page, f"login security key, key did not answer, {lang}")
    other = page.context.browser
    assert other is not None
    elsewhere = other.new_context(locale=locale).new_page()
    try:
        elsewhere.goto(base)
        assert "/login/" in elsewhere.url
        check(elsewhere, f"login claimed by another browser, {lang}")
    finally:
        elsewhere.context.close()
