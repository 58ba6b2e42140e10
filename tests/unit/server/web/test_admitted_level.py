"""Attacks on raising a person's identity (issue 15, continued): a credential counts toward a
level only up to the level at which it was admitted. A smartcard that a Substantial login of a
Substantial identity enrolled (a phished session can do that) must not log in at High alone
once the person is proofed High at a bank or a citizen service centre; an operator admits it
at the desk with the person present, and then it does."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from devices.protocol.piv import Slot
from devices.tokens.piv import PivSession
from server.domain.model import CredentialKind
from server.services.access import Role
from server.settings import Settings
from server.storage.tables import Credential
from tests.unit.server.conftest import ORIGIN, TEST_PROVIDER, make_key
from tests.unit.server.people import PERSON_STORED, assert_problem, second_operator_approves
from tests.unit.server.test_keycard_api import activate, issue
from tests.unit.server.test_piv_api import (
    complete_with_code,
    identified_login,
    keyless,
    new_card,
    piv_login,
)
from tests.unit.server.web.forms import csrf_of, text_of
from tests.unit.server.web.test_account import Person, code_of, shown_enrolment, sign_in
from tests.unit.server.web.test_account_levels import log_in_with_card
from tests.unit.server.web.test_console import new_key, post_form
from tests.unit.server.web.test_console import sign_in as console_sign_in


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The shared settings, with the PIV CA's files in the test's folder."""
    return settings.model_copy(
        update={
            "piv_ca_key_file": tmp_path / "piv" / "ca-key.pem",
            "piv_ca_cert_file": tmp_path / "piv" / "ca.pem",
        }
    )


@pytest.fixture
def api_key(settings: Settings) -> dict[str, str]:
    return make_key(settings, "operator", Role.SUPERVISOR)


@pytest.fixture
def operator_api(browser: TestClient, api_key: dict[str, str]) -> TestClient:
    """The app as an operator's system calls it, with the person at the desk."""
    return TestClient(browser.app, headers=api_key, raise_server_exceptions=False)


@pytest.fixture
def provider(browser: TestClient, settings: Settings) -> TestClient:
    """The service provider that asks for logins at High."""
    headers = make_key(settings, TEST_PROVIDER, Role.PROVIDER)
    return TestClient(browser.app, headers=headers, raise_server_exceptions=False)


@pytest.fixture
def person(browser: TestClient, api_key: dict[str, str]) -> Person:
    """The test citizen (password and code display): identity assurance Substantial."""
    return Person(browser, api_key)


@pytest.fixture
def card(tmp_path: Path) -> PivSession:
    folder = tmp_path / "cards"
    folder.mkdir()
    return new_card(folder)


def enrol_on_own_page(browser: TestClient, card: PivSession) -> dict[str, Any]:
    """The citizen's own enrolment from the smartcard page (the card program completes it
    with the page's code, and puts the certificate on the card); the new credential."""
    state_id, code = shown_enrolment(browser.get("/account/add/smartcard"))
    with keyless(browser) as program:
        done = complete_with_code(program, state_id, code, card)
    assert done.status_code == 201, done.text
    der = base64.b64decode(done.json()["certificate"])
    card.put_certificate(Slot.AUTHENTICATION, x509.load_der_x509_certificate(der))
    credential: dict[str, Any] = done.json()["credential"]
    return credential


def proofed_high(operator_api: TestClient, person: Person) -> None:
    """The person proofed in person at a citizen service centre by two operators."""
    proofed = operator_api.post(
        f"/identities/{person.identity_id}/proofing",
        json={
            "channel": "service_centre",
            "document_kind": "passport",
            "operator_ids": ["operator", "op-2"],
        },
    )
    assert proofed.status_code == 200, proofed.text
    approved = second_operator_approves(operator_api, {"id": str(person.identity_id)})
    assert approved["identity_assurance"] == "high"


def card_login(provider: TestClient, card: PivSession) -> tuple[str, Any]:
    """A login at High with the card alone: the transaction and its complete's answer."""
    transaction = identified_login(provider, PERSON_STORED, "high")
    signed = piv_login(provider, transaction, card)
    assert signed.status_code == 200, signed.text
    return transaction, provider.post(f"/authentications/{transaction}/complete")


# --- the attack ---------------------------------------------------------------------------------


def test_a_card_enrolled_at_substantial_does_not_log_in_at_high_after_proofing(
    browser: TestClient,
    person: Person,
    operator_api: TestClient,
    provider: TestClient,
    card: PivSession,
) -> None:
    """The phisher's run: a Substantial session of a Substantial identity enrols the phisher's
    own attested card (allowed: the identity is Substantial), and waits for the person to be
    proofed High. The card alone is then a Substantial login, never a High one."""
    sign_in(browser)  # password and code display: Substantial
    enrolled = enrol_on_own_page(browser, card)
    assert enrolled["admitted_level"] == "substantial"
    proofed_high(operator_api, person)

    _, refused = card_login(provider, card)

    body = assert_problem(refused, 403, "step-up-required")
    assert (body["achieved"], body["required"]) == ("substantial", "high")


def test_an_operator_admits_the_card_in_person_and_it_logs_in_at_high(
    browser: TestClient,
    person: Person,
    operator_api: TestClient,
    provider: TestClient,
    card: PivSession,
) -> None:
    sign_in(browser)
    enrolled = enrol_on_own_page(browser, card)
    proofed_high(operator_api, person)

    admitted = operator_api.post(f"/credentials/{enrolled['id']}/admit")

    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["admitted_level"] == "high"
    _, done = card_login(provider, card)
    assert done.status_code == 200, done.text
    assert done.json()["level"] == "high"
    (entry,) = person.audit("credential.admitted")
    assert entry.actor == "supervisor:operator"
    assert entry.details == {
        "credential_id": enrolled["id"],
        "identity_id": str(person.identity_id),
        "kind": "piv",
        "from": "substantial",
        "to": "high",
    }


def test_a_card_the_person_enrols_at_high_counts_at_high(
    browser: TestClient,
    person: Person,
    operator_api: TestClient,
    provider: TestClient,
    card: PivSession,
    tmp_path: Path,
) -> None:
    """Once admitted at High, the card logs the person in at High, and a second card the
    person enrols with that login is admitted at High too: nothing more at the desk."""
    sign_in(browser)
    first = enrol_on_own_page(browser, card)
    proofed_high(operator_api, person)
    assert operator_api.post(f"/credentials/{first['id']}/admit").status_code == 200
    log_in_with_card(browser, "?level=high&next=/account", card)
    second = new_card(tmp_path / "cards")

    enrolled = enrol_on_own_page(browser, second)

    assert enrolled["admitted_level"] == "high"
    _, done = card_login(provider, second)
    assert done.status_code == 200, done.text
    assert done.json()["level"] == "high"


def test_a_credential_from_before_admitted_levels_counts_as_before(
    browser: TestClient,
    person: Person,
    operator_api: TestClient,
    provider: TestClient,
    card: PivSession,
) -> None:
    """A row written before admitted levels were recorded holds none: it is not capped."""
    sign_in(browser)
    enrolled = enrol_on_own_page(browser, card)
    with person.sessions() as session, session.begin():
        row = session.get(Credential, uuid.UUID(enrolled["id"]))
        assert row is not None
        assert row.kind is CredentialKind.PIV
        row.public_data = {k: v for k, v in row.public_data.items() if k != "admitted_level"}
    proofed_high(operator_api, person)

    _, done = card_login(provider, card)

    assert done.status_code == 200, done.text
    assert done.json()["level"] == "high"


# --- every credential records the level it is admitted at ---------------------------------------


def test_what_the_person_and_operators_add_records_its_admitted_level(
    browser: TestClient, person: Person, operator_api: TestClient
) -> None:
    """A password an operator sets, a key card an operator activates: the identity's
    assurance then (Substantial). A code display the person adds with their own login: the
    lower of that login and the identity's assurance. Audited with who added it."""
    sign_in(browser)
    seeded = next(c for c in person.credentials() if c.serial == "1000000001")
    # A new code display takes the seeded one's place (one code display per person).
    revoked = operator_api.post(f"/credentials/{seeded.id}/state", json={"state": "revoked"})
    assert revoked.status_code == 200, revoked.text
    token = person.import_token()
    form = browser.get("/account/add/code-display")
    posted = browser.post(
        "/account/add/code-display",
        data={"csrf": csrf_of(form), "serial": token.serial, "code": code_of(token)},
        follow_redirects=False,
    )
    assert posted.status_code == 303, text_of(posted)
    credential, codes = issue(operator_api, str(person.identity_id))
    card = activate(operator_api, credential["id"], codes)

    assert card["admitted_level"] == "substantial"
    levels = {
        (c.kind.value, c.serial): c.public_data.get("admitted_level") for c in person.credentials()
    }
    assert levels[("code_display", token.serial)] == "substantial"
    assert levels[("password", None)] == "substantial"  # set through the operators' API
    assert levels[("code_display", "1000000001")] is None  # seeded as a row from before
    activated = {
        entry.details["kind"]: (entry.details["admitted_level"], entry.details["added_by"])
        for entry in person.audit("credential.activated")
    }
    assert activated == {
        "code_display": ("substantial", "login:substantial"),
        "key_card": ("substantial", "in_person"),
    }
    (password,) = person.audit("password.set")
    assert password.details["added_by"] == "in_person"


# --- the admission in person ---------------------------------------------------------------------


def test_only_an_operator_of_the_persons_own_bank_admits(
    browser: TestClient, person: Person, settings: Settings, provider: TestClient, card: PivSession
) -> None:
    sign_in(browser)
    enrolled = enrol_on_own_page(browser, card)
    other_bank = make_key(settings, "bank-op", Role.OPERATOR_BANK)
    path = f"/credentials/{enrolled['id']}/admit"

    assert_problem(browser.post(path, headers=other_bank), 404, "credential-not-found")
    assert_problem(provider.post(path), 403)
    assert_problem(keyless(browser).post(path), 401)
    assert not person.audit("credential.admitted")


def test_only_an_active_credential_is_admitted(
    browser: TestClient, person: Person, operator_api: TestClient, card: PivSession
) -> None:
    sign_in(browser)
    enrolled = enrol_on_own_page(browser, card)
    blocked = operator_api.post(f"/credentials/{enrolled['id']}/state", json={"state": "blocked"})
    assert blocked.status_code == 200, blocked.text

    refused = operator_api.post(f"/credentials/{enrolled['id']}/admit")

    assert_problem(refused, 409, "invalid-transition")
    assert not person.audit("credential.admitted")


# --- the pages ----------------------------------------------------------------------------------


def test_the_account_page_says_what_the_card_counts_up_to(
    browser: TestClient, person: Person, operator_api: TestClient, card: PivSession
) -> None:
    sign_in(browser)
    enrolled = enrol_on_own_page(browser, card)
    assert "Tæller op til" not in text_of(browser.get("/account"))  # nothing held back yet
    proofed_high(operator_api, person)

    text = text_of(browser.get("/account"))

    assert text.count("Tæller op til niveau Betydelig") == 1  # the card; never the password
    assert operator_api.post(f"/credentials/{enrolled['id']}/admit").status_code == 200
    assert "Tæller op til" not in text_of(browser.get("/account"))


def test_the_console_admits_a_card_with_the_person_at_the_desk(
    browser: TestClient,
    person: Person,
    operator_api: TestClient,
    card: PivSession,
    settings: Settings,
) -> None:
    """The person's page shows what each credential counts up to, and the button where it is
    held back; the operator's press admits it, audited with the operator."""
    sign_in(browser)
    enrolled = enrol_on_own_page(browser, card)
    proofed_high(operator_api, person)
    desk = TestClient(browser.app, base_url=ORIGIN, raise_server_exceptions=False)
    signed = console_sign_in(desk, new_key(settings, "centre-op", Role.OPERATOR_CENTRE))
    assert signed.status_code == 303, signed.text
    page = f"/console/people/{person.identity_id}"

    shown = desk.get(page)
    text = text_of(shown)
    assert "Tæller op til" in text
    assert "Ikke registreret (ingen grænse)" in text  # the seeded code display
    admit_path = f"{page}/credentials/{enrolled['id']}/admit"
    assert shown.text.count('/admit"') == 1
    assert f'action="{admit_path}"' in shown.text

    answer = post_form(desk, page, admit_path)

    assert answer.status_code == 303, text_of(answer)
    after = desk.get(page)
    assert "Loginmidlet er godkendt ved skranken." in text_of(after)
    assert '/admit"' not in after.text
    (entry,) = person.audit("credential.admitted")
    assert entry.actor.startswith("operator_centre:centre-op")
    assert (entry.details["from"], entry.details["to"]) == ("substantial", "high")
