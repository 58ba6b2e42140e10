"""Attacks on self-service (issue 15): a credential that can give level High (a smartcard, a
security key) is added only by a login at High, or by an operator with the person present. A
session a phished Substantial login opened (password and code display) must not mint High for
a person whose identity is High; it is refused, audited, and told how to log in at High."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fido2.webauthn import CredentialCreationOptions

from devices.tokens.fido import FidoSession
from devices.tokens.piv import PivSession
from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap2 import AlwaysPresent, load_authenticator, new_fido_state
from server.domain.model import CredentialState
from server.services.access import Role
from server.settings import Settings
from tests.unit.server.conftest import ORIGIN, make_key
from tests.unit.server.people import second_operator_approves
from tests.unit.server.test_fido_api import as_json
from tests.unit.server.test_piv_api import (
    card_body,
    complete_with_code,
    enrol_card,
    keyless,
    new_card,
)
from tests.unit.server.web.forms import csrf_of, login_of, self_service_login, text_of
from tests.unit.server.web.test_account import Person, shown_enrolment, sign_in
from tests.unit.server.web.test_login import pairing_of

PIN = "4711"
STEP_UP_CARD = "/account/login?level=high&amp;next=/account/add/smartcard"
STEP_UP_KEY = "/account/login?level=high&amp;next=/account/add/security-key"


@pytest.fixture
def sim_home(tmp_path: Path) -> Path:
    return tmp_path / "sim"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, sim_home: Path) -> Settings:
    """The shared settings, with the PIV CA's files in the test's folder and the simulated
    security keys' attestation root trusted."""
    root = tmp_path / "sim-root.pem"
    root.write_bytes(Manufacturer.load_or_create(sim_home).root_pem())
    return settings.model_copy(
        update={
            "piv_ca_key_file": tmp_path / "piv" / "ca-key.pem",
            "piv_ca_cert_file": tmp_path / "piv" / "ca.pem",
            "fido_trusted_roots": [root],
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
def person(browser: TestClient, api_key: dict[str, str], operator_api: TestClient) -> Person:
    """The test citizen (password and code display), proofed in person at a citizen service
    centre and approved by a second operator: identity assurance High."""
    person = Person(browser, api_key)
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
    return person


@pytest.fixture
def card(tmp_path: Path) -> PivSession:
    folder = tmp_path / "cards"
    folder.mkdir()
    return new_card(folder)


@pytest.fixture
def card_in_person(operator_api: TestClient, person: Person, card: PivSession) -> PivSession:
    """A smartcard an operator enrolled with the person present (the in-person path)."""
    enrol_card(operator_api, str(person.identity_id), card)
    return card


def security_key(tmp_path: Path, sim_home: Path, name: str = "key") -> FidoSession:
    """A simulated security key with a PIN: it verifies the user, so it can give High."""
    path = tmp_path / f"{name}.json"
    new_fido_state(path, manufacturer_home=sim_home)
    key = FidoSession(InProcessCtapDevice(load_authenticator(path, AlwaysPresent())))
    key.set_pin(PIN)
    return key


def register_on_page(browser: TestClient, key: FidoSession) -> tuple[Any, Any]:
    """What the security key page's script does: create() with the page's options (when the
    page shows any) and the key's answer posted back with the page's form. The form page and
    the answer to the post."""
    form = browser.get("/account/add/security-key")
    found = re.search(
        r'<script type="application/json" class="webauthn-options">(.*?)</script>', form.text
    )
    answer = "{}"
    if found is not None:
        options = CredentialCreationOptions.from_dict(json.loads(found.group(1))).public_key
        answer = json.dumps(as_json(key.make_credential(options, origin=ORIGIN, pin=PIN)))
    posted = browser.post(
        "/account/add/security-key",
        data={"csrf": csrf_of(form), "credential": answer},
        follow_redirects=False,
    )
    return form, posted


def log_in_with_card(browser: TestClient, query: str, card: PivSession) -> Any:
    """The self-service sign-in at ``/account/login{query}`` (a login at level High) with the
    smartcard: the person number, then the card signing in the card program with the page's
    pairing code; the answer is the page the login leads back to."""
    transaction = login_of(self_service_login(browser, "010190-1234", query))
    base = f"/login/{transaction}"
    shown = browser.get(f"{base}/smartcard")
    code = pairing_of(shown)
    with keyless(browser) as program:
        begun = program.post(f"/authentications/{transaction}/piv/begin", json={"pairing": code})
        assert begun.status_code == 200, begun.text
        challenge = base64.b64decode(begun.json()["challenge"])
        signed = program.post(
            f"/authentications/{transaction}/piv",
            json={**card_body(card, transaction, challenge), "pairing": code},
        )
        assert signed.status_code == 200, signed.text
    return browser.post(f"{base}/smartcard", data={"csrf": csrf_of(shown)}, follow_redirects=True)


def refusals(person: Person) -> list[dict[str, Any]]:
    return [dict(entry.details) for entry in person.audit("credential.addition_refused")]


def admitted(person: Person) -> dict[str, str]:
    """The level each active security key and smartcard was admitted at, by kind."""
    return {
        c.kind.value: c.public_data["admitted_level"]
        for c in person.credentials()
        if c.state is CredentialState.ACTIVE and c.kind.value in ("fido2", "piv")
    }


def kinds(person: Person) -> list[str]:
    return sorted(c.kind.value for c in person.credentials() if c.state is CredentialState.ACTIVE)


# --- the attack: a Substantial session of a High identity -------------------------------------


def test_a_substantial_login_cannot_enrol_a_smartcard_for_a_high_identity(
    browser: TestClient, person: Person
) -> None:
    sign_in(browser)  # password and code display: Substantial

    answer = browser.get("/account/add/smartcard")

    assert answer.status_code == 403, text_of(answer)
    assert "piv enrol" not in answer.text
    assert not person.audit("piv.enrolment_begun")
    text = text_of(answer)
    assert "niveau Høj" in text
    assert "niveau Betydelig" in text
    # The way forward: log in at High and come back here, or go to a citizen service centre.
    assert f'href="{STEP_UP_CARD}"' in answer.text
    assert "borgerservice" in text
    assert refusals(person) == [
        {
            "identity_id": str(person.identity_id),
            "kind": "piv",
            "required_level": "high",
            "login_level": "substantial",
        }
    ]
    (entry,) = person.audit("credential.addition_refused")
    assert entry.actor == f"citizen:{person.identity_id}"


def test_a_substantial_login_cannot_register_a_security_key_for_a_high_identity(
    browser: TestClient, person: Person, tmp_path: Path, sim_home: Path
) -> None:
    """The whole attack, as the phisher's browser would run it: the key page's options, a key
    that verifies its PIN (``fido2_uv``, one of the two authenticators of a High login), and
    the answer posted back. Nothing of it is accepted."""
    sign_in(browser)

    form, posted = register_on_page(browser, security_key(tmp_path, sim_home))

    assert form.status_code == 403, text_of(form)
    assert "webauthn-options" not in form.text
    assert f'href="{STEP_UP_KEY}"' in form.text
    assert not person.audit("fido2.registration_begun")
    assert posted.status_code == 403
    assert kinds(person) == ["code_display", "password"]
    assert [r["kind"] for r in refusals(person)] == ["fido2", "fido2"]


def test_the_add_page_says_which_credentials_need_a_login_at_high(
    browser: TestClient, person: Person
) -> None:
    sign_in(browser)

    text = text_of(browser.get("/account/add"))

    assert text.count("Kræver et login på niveau Høj") == 2


def test_codes_and_the_password_need_no_more_than_substantial(
    browser: TestClient, person: Person
) -> None:
    """A code display or a password reaches Substantial at most: a Substantial login adds or
    changes them, whatever the identity's level."""
    sign_in(browser)

    assert browser.get("/account/add/code-display").status_code == 200
    assert browser.get("/account/password").status_code == 200
    assert not refusals(person)


# --- the way forward: a login at High, or an operator ------------------------------------------


def test_the_step_up_link_logs_in_at_high_and_the_smartcard_is_enrolled(
    browser: TestClient, person: Person, card_in_person: PivSession, tmp_path: Path
) -> None:
    sign_in(browser)
    refused = browser.get("/account/add/smartcard")
    assert refused.status_code == 403

    page = browser.get("/account/login?level=high&next=/account/add/smartcard")
    assert "Trin 1 af 3" in text_of(page)
    back = log_in_with_card(browser, "?level=high&next=/account/add/smartcard", card_in_person)

    assert str(back.url).endswith("/account/add/smartcard"), back.url
    state_id, code = shown_enrolment(back)
    second = new_card(tmp_path / "cards")
    with keyless(browser) as program:
        done = complete_with_code(program, state_id, code, second)
    assert done.status_code == 201, done.text
    assert kinds(person) == ["code_display", "password", "piv", "piv"]
    # The operator's enrolment of the first card, then the citizen's own at High.
    begun = person.audit("piv.enrolment_begun")
    assert [e.details["added_by"] for e in begun] == ["in_person", "login:high"]
    assert begun[1].actor == f"citizen:{person.identity_id}"


def test_a_high_login_registers_a_security_key(
    browser: TestClient,
    person: Person,
    card_in_person: PivSession,
    tmp_path: Path,
    sim_home: Path,
) -> None:
    log_in_with_card(browser, "?level=high&next=/account/add/security-key", card_in_person)

    form, posted = register_on_page(browser, security_key(tmp_path, sim_home))

    assert form.status_code == 200, text_of(form)
    assert posted.status_code == 303, text_of(posted)
    assert posted.headers["location"] == "/account"
    assert kinds(person) == ["code_display", "fido2", "password", "piv"]
    assert not refusals(person)
    # Admitted at the login's level, High: it counts toward High from the start.
    assert admitted(person) == {"fido2": "high", "piv": "high"}


def test_signed_in_at_high_the_step_up_link_goes_straight_back(
    browser: TestClient, person: Person, card_in_person: PivSession
) -> None:
    log_in_with_card(browser, "?level=high&next=/account", card_in_person)

    again = browser.get(
        "/account/login?level=high&next=/account/add/smartcard", follow_redirects=False
    )

    assert again.status_code == 303
    assert again.headers["location"] == "/account/add/smartcard"


def test_an_operator_enrols_a_card_and_a_key_with_the_person_present(
    operator_api: TestClient, person: Person, card: PivSession, tmp_path: Path, sim_home: Path
) -> None:
    """No citizen's session at all: the operator's key and the person at the desk."""
    identity = str(person.identity_id)
    enrol_card(operator_api, identity, card)
    begun = operator_api.post(
        f"/identities/{identity}/fido2/register/begin", json={"user_verification": "required"}
    )
    assert begun.status_code == 201, begun.text
    options = CredentialCreationOptions.from_dict(begun.json()["options"]).public_key
    made = security_key(tmp_path, sim_home).make_credential(options, origin=ORIGIN, pin=PIN)
    done = operator_api.post(
        f"/fido2/registrations/{begun.json()['state_id']}/complete",
        json={"response": as_json(made)},
    )

    assert done.status_code == 201, done.text
    assert kinds(person) == ["code_display", "fido2", "password", "piv"]
    assert [e.details["added_by"] for e in person.audit("piv.enrolment_begun")] == ["in_person"]
    assert [e.details["added_by"] for e in person.audit("fido2.registration_begun")] == [
        "in_person"
    ]
    assert not refusals(person)
    # In person: admitted at the identity's assurance.
    assert admitted(person) == {"fido2": "high", "piv": "high"}


def test_the_refusal_speaks_english_too(browser: TestClient, person: Person) -> None:
    sign_in(browser)
    browser.post(
        "/lang",
        data={"csrf": csrf_of(browser.get("/account")), "lang": "en", "next": "/account"},
    )

    text = text_of(browser.get("/account/add/smartcard"))

    assert "you must be logged in at level High" in text
    assert "You are logged in at level Substantial" in text
    assert "Log in at level High" in text
