"""The console's actions that take something away (block or replace a credential, suspend the
identity): each leads to a page of its own that names what it acts on, says what will happen,
and asks a reason; nothing happens until that page is sent with a reason, which goes into the
audit entry the action writes. A missing reason is an error at its field, the text typed kept.
Resuming and admitting stay one click."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient

from server.domain.model import CredentialKind, CredentialState, IdentityStatus
from server.services.access import Role
from server.settings import Settings
from server.storage.tables import Credential
from tests.unit.server.people import seed_person_with_code_display
from tests.unit.server.web.forms import csrf_of, lang_of, text_of
from tests.unit.server.web.test_console import (
    audit,
    credential_of,
    person,
    post_form,
    services_of,
    signed_in,
    status_of,
)

REASON = "The person called: the display was stolen"


def _page(identity_id: uuid.UUID) -> str:
    return f"/console/people/{identity_id}"


def _credential_path(identity_id: uuid.UUID, credential_id: uuid.UUID, action: str) -> str:
    return f"{_page(identity_id)}/credentials/{credential_id}/{action}"


def _status(identity_id: uuid.UUID) -> tuple[str, str]:
    """Where the identity's status changes, and the suspension's confirmation."""
    return f"{_page(identity_id)}/status", f"{_page(identity_id)}/suspend"


def _field(answer: object, field_id: str) -> str:
    found = re.search(rf'<input id="{field_id}"[^>]*>', answer.text)  # type: ignore[attr-defined]
    assert found is not None, f"no field {field_id}"
    return found.group(0)


def _fido2_key(browser: TestClient, identity_id: uuid.UUID) -> uuid.UUID:
    """An active security key of the person, as its registration leaves it."""
    key_id = uuid.uuid4()
    with services_of(browser).sessions.begin() as session:
        session.add(
            Credential(
                id=key_id,
                identity_id=identity_id,
                kind=CredentialKind.FIDO2,
                state=CredentialState.ACTIVE,
                serial="fido2:" + "ab" * 32,
                public_data={},
            )
        )
    return key_id


@pytest.fixture
def identity_id(browser: TestClient, settings: Settings) -> uuid.UUID:
    """A bank operator signed in, and a customer of the bank with an active code display."""
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    return person(browser)


def _state(browser: TestClient, credential_id: uuid.UUID) -> CredentialState:
    with services_of(browser).sessions() as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        return credential.state


# --- the person's page leads to the confirmation, it does not act -----------------------------


def test_the_person_page_links_to_each_confirmation_and_holds_no_one_click_form(
    browser: TestClient, identity_id: uuid.UUID
) -> None:
    credential = credential_of(browser, identity_id)
    shown = browser.get(_page(identity_id)).text
    for action in ("block", "replace"):
        path = _credential_path(identity_id, credential.id, action)
        assert f'href="{path}"' in shown
        assert f'action="{path}"' not in shown
    assert f'href="{_page(identity_id)}/suspend"' in shown
    assert 'value="suspend"' not in shown


@pytest.mark.parametrize("action", ["block", "replace"])
def test_a_credential_action_is_not_taken_without_a_reason(
    browser: TestClient, identity_id: uuid.UUID, action: str
) -> None:
    credential = credential_of(browser, identity_id)
    path = _credential_path(identity_id, credential.id, action)
    # What the one-click form sent before: the CSRF token alone.
    one_click = post_form(browser, _page(identity_id), path)
    blank = post_form(browser, path, path, reason="  \t ")
    short = post_form(browser, path, path, reason="ok")
    for answer in (one_click, blank, short):
        assert answer.status_code == 422
        assert 'href="#reason"' in answer.text  # the error summary leads to the field
        assert 'aria-invalid="true"' in _field(answer, "reason")
        assert "<title>Fejl:" in answer.text
    assert 'value="ok"' in _field(short, "reason")  # what was typed is kept
    assert _state(browser, credential.id) is CredentialState.ACTIVE
    assert audit(browser, "credential.state_changed") == []
    assert audit(browser, "credential.replaced") == []


def test_a_block_with_its_reason_is_taken_and_the_reason_audited(
    browser: TestClient, identity_id: uuid.UUID
) -> None:
    credential = credential_of(browser, identity_id)
    path = _credential_path(identity_id, credential.id, "block")
    answer = post_form(browser, path, path, reason=f"  {REASON}\n")
    assert answer.status_code == 303
    assert answer.headers["location"] == _page(identity_id)
    assert _state(browser, credential.id) is CredentialState.BLOCKED
    assert "Loginmidlet er spærret." in text_of(browser.get(_page(identity_id)))
    [change] = audit(browser, "credential.state_changed")
    assert change.actor == "operator_bank:bank-op@test-bank"
    assert change.details["credential_id"] == str(credential.id)
    assert (change.details["from"], change.details["to"]) == ("active", "blocked")
    assert change.details["reason"] == REASON


def test_a_replacement_with_its_reason_is_taken_and_the_reason_audited(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "centre-op", Role.OPERATOR_CENTRE)
    identity_id = person(browser)
    old = credential_of(browser, identity_id)
    path = _credential_path(identity_id, old.id, "replace")
    assert post_form(browser, path, path, reason=REASON).status_code == 303
    assert _state(browser, old.id) is CredentialState.REPLACED
    [replaced] = audit(browser, "credential.replaced")
    assert replaced.details["credential_id"] == str(old.id)
    assert replaced.details["reason"] == REASON
    [change] = audit(browser, "credential.state_changed")
    assert (change.details["to"], change.details["reason"]) == ("replaced", REASON)
    [ordered] = audit(browser, "credential.ordered")
    assert ordered.details["kind"] == "code_display"


def test_suspending_is_not_taken_without_a_reason(
    browser: TestClient, identity_id: uuid.UUID
) -> None:
    status, confirm = _status(identity_id)
    one_click = post_form(browser, _page(identity_id), status, action="suspend")
    short = post_form(browser, confirm, status, action="suspend", reason="x")
    for answer in (one_click, short):
        assert answer.status_code == 422
        assert 'href="#reason"' in answer.text
        assert f'action="{status}"' in answer.text  # the confirmation page again
    assert 'value="x"' in _field(short, "reason")
    assert status_of(browser, identity_id) is IdentityStatus.ACTIVE
    assert audit(browser, "identity.suspended") == []


def test_suspending_with_a_reason_is_audited_and_resuming_stays_one_click(
    browser: TestClient, identity_id: uuid.UUID
) -> None:
    status, confirm = _status(identity_id)
    answer = post_form(browser, confirm, status, action="suspend", reason=REASON)
    assert answer.status_code == 303
    assert status_of(browser, identity_id) is IdentityStatus.SUSPENDED
    [entry] = audit(browser, "identity.suspended")
    assert entry.actor == "operator_bank:bank-op@test-bank"
    assert (entry.details["identity_id"], entry.details["reason"]) == (str(identity_id), REASON)
    # Giving back asks nothing: the person's page resumes at one click.
    shown = browser.get(_page(identity_id))
    assert 'value="resume"' in shown.text
    assert post_form(browser, _page(identity_id), status, action="resume").status_code == 303
    assert status_of(browser, identity_id) is IdentityStatus.ACTIVE
    assert "reason" not in audit(browser, "identity.resumed")[0].details


def test_a_forged_confirmation_without_the_csrf_token_changes_nothing(
    browser: TestClient, identity_id: uuid.UUID
) -> None:
    credential = credential_of(browser, identity_id)
    path = _credential_path(identity_id, credential.id, "block")
    forged = browser.post(path, data={"csrf": "forged", "reason": REASON}, follow_redirects=False)
    assert forged.status_code == 403
    status, _ = _status(identity_id)
    forged = browser.post(status, data={"csrf": "forged", "action": "suspend", "reason": REASON})
    assert forged.status_code == 403
    assert _state(browser, credential.id) is CredentialState.ACTIVE
    assert status_of(browser, identity_id) is IdentityStatus.ACTIVE


# --- what each confirmation says ------------------------------------------------------------

KEY_SERIAL = "fido2:" + "ab" * 32
# How the pages show that key (credential_display: the first 8 hex digits, in fours), as the
# citizen's account page shows it too.
KEY_SHOWN = "abab abab"
# What each confirmation (of a code display, of a security key, or of the person) says, in
# each language, and what it must not say.
CONFIRMATIONS = [
    (
        "block",
        "da",
        ["Spær loginmidlet", "Kodeviser", "1000000001", "Spærringen er endelig", "kan aldrig"],
        [],
    ),
    (
        "block",
        "en",
        ["Block the credential", "Code display", "Blocking is final", "can never be unblocked"],
        [],
    ),
    ("block-key", "da", ["Sikkerhedsnøgle", KEY_SHOWN, "Det kan låses op igen"], ["endelig"]),
    ("block-key", "en", ["Security key", KEY_SHOWN, "It can be unblocked later"], ["final"]),
    (
        "replace",
        "da",
        ["Erstat loginmidlet", "holder op med at virke med det samme", "Der bestilles et nyt"],
        [],
    ),
    (
        "replace",
        "en",
        ["Replace the credential", "stops working at once", "A new one of the same kind"],
        [],
    ),
    ("suspend", "da", ["Suspendér identiteten", "Alle personens login afvises", "indtil"], []),
    ("suspend", "en", ["Suspend the identity", "Every login of the person is refused"], []),
]


@pytest.mark.parametrize(("what", "lang", "said", "unsaid"), CONFIRMATIONS)
def test_each_confirmation_names_what_it_acts_on_and_says_what_will_happen(
    browser: TestClient,
    settings: Settings,
    what: str,
    lang: str,
    said: list[str],
    unsaid: list[str],
) -> None:
    browser.headers["accept-language"] = lang  # as a browser sends it with every request
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    identity_id = person(browser)
    display = credential_of(browser, identity_id).id
    key = _fido2_key(browser, identity_id)
    path = {
        "block": _credential_path(identity_id, display, "block"),
        "block-key": _credential_path(identity_id, key, "block"),
        "replace": _credential_path(identity_id, display, "replace"),
        "suspend": _status(identity_id)[1],
    }[what]
    answer = browser.get(path)
    assert answer.status_code == 200
    assert lang_of(answer) == lang
    text = text_of(answer)
    for words in (*said, "Test Person", "010190-****"):
        assert words in text
    for words in unsaid:
        assert words not in text
    assert 'aria-required="true"' in _field(answer, "reason")
    assert f'href="{_page(identity_id)}"' in answer.text  # the way back without acting
    assert csrf_of(answer)
    # Showing it did nothing.
    assert {_state(browser, display), _state(browser, key)} == {CredentialState.ACTIVE}
    assert status_of(browser, identity_id) is IdentityStatus.ACTIVE


# --- what cannot be confirmed -----------------------------------------------------------------


def test_no_confirmation_is_shown_for_what_cannot_be_done(
    browser: TestClient, identity_id: uuid.UUID
) -> None:
    services = services_of(browser)
    credential = credential_of(browser, identity_id)
    path = _credential_path(identity_id, credential.id, "block")
    assert post_form(browser, path, path, reason=REASON).status_code == 303
    # Blocked already: no second block (a blocked code display is replaced instead).
    assert browser.get(path).status_code == 409
    assert browser.get(_credential_path(identity_id, credential.id, "replace")).status_code == 200
    # Someone else's credential is not reached through this person's page.
    other = seed_person_with_code_display(services.sessions, services.secrets, "020202-2222")
    theirs = credential_of(browser, other)
    assert browser.get(_credential_path(identity_id, theirs.id, "block")).status_code == 404
    assert browser.get(_credential_path(identity_id, uuid.uuid4(), "block")).status_code == 404
    assert browser.get(_credential_path(identity_id, credential.id, "revoke")).status_code == 404
    # A suspended person is not suspended again.
    status, confirm = _status(identity_id)
    assert post_form(browser, confirm, status, action="suspend", reason=REASON).status_code == 303
    assert browser.get(confirm).status_code == 409
