"""The operator console: signing in with an API key (session rotated, rate-limited, audited, a
provider key refused, a removed key ends the session), finding a person by CPR-nummer, the
person's page (every view audited with the operator as actor) and the actions each role may
take, refused by the server when the role may not (not only hidden), in both languages."""

from __future__ import annotations

import re
import uuid
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.domain.model import CredentialState, IdentityStatus, Level, ProofingChannel
from server.services.access import ApiKeys, Role
from server.settings import Settings
from server.storage.tables import AuditEntry, Credential, Identity, ProofingRecord
from server.web.browser import COOKIE
from server.web.console_access import SIGN_IN_MAX_FAILURES
from server.wiring import Services
from tests.unit.server.people import seed_person_with_code_display
from tests.unit.server.web.forms import csrf_of, lang_of, text_of

PERSON = "010190-1234"  # seed_person_with_code_display's person


# --- helpers shared by the console's test modules ----------------------------------------------


# The bank of the console tests: its operators' keys belong to it, and its customers are the
# people ``person`` makes (a bank operator reaches only the bank's own customers).
TEST_BANK = "test-bank"


def new_key(settings: Settings, name: str, *roles: Role, organisation: str | None = None) -> str:
    """A new API key (the key itself, as an operator pastes it), of ``organisation`` (a bank
    operator's key: of ``TEST_BANK`` unless told otherwise)."""
    if organisation is None and Role.OPERATOR_BANK in roles:
        organisation = TEST_BANK
    return ApiKeys(settings.api_keys_file).add(name, roles, organisation)[1]


def key_id_of(key: str) -> str:
    return key.split("_")[1]


def sign_in(browser: TestClient, key: str, next_path: str = "/console") -> Any:
    token = csrf_of(browser.get(f"/console/login?next={next_path}"))
    return browser.post(
        "/console/login",
        data={"csrf": token, "api_key": key, "next": next_path},
        follow_redirects=False,
    )


def signed_in(
    browser: TestClient,
    settings: Settings,
    name: str,
    *roles: Role,
    organisation: str | None = None,
) -> str:
    key = new_key(settings, name, *roles, organisation=organisation)
    answer = sign_in(browser, key)
    assert answer.status_code == 303, answer.text
    return key


def services_of(browser: TestClient) -> Services:
    services: Services = cast(FastAPI, browser.app).state.services
    return services


def audit(browser: TestClient, event: str) -> list[AuditEntry]:
    with services_of(browser).sessions() as session:
        query = select(AuditEntry).where(AuditEntry.event == event).order_by(AuditEntry.seq)
        return list(session.scalars(query))


def events(browser: TestClient) -> list[str]:
    """Every audit entry's event, oldest first."""
    with services_of(browser).sessions() as session:
        return list(session.scalars(select(AuditEntry.event).order_by(AuditEntry.seq)))


# The error of a channel not chosen (a supervisor chooses where the person is), per language.
CHANNEL_MISSING = {"da": "Vælg, hvor personen er.", "en": "Choose where the person is."}


def told_channel_missing(browser: TestClient, answer: Any, lang: str) -> None:
    """``answer`` is the form again (422) with the channel's error in the summary, linked to
    the channel group's first choice and told there, and the operator is still signed in."""
    assert answer.status_code == 422, answer.text
    assert f'<a href="#channel-bank">{CHANNEL_MISSING[lang]}</a>' in answer.text
    assert 'id="channel-bank" name="channel" value="bank" aria-invalid="true"' in answer.text
    assert 'aria-describedby="channel-bank-error"' in answer.text
    assert lang_of(answer) == lang
    assert 'action="/logout"' in answer.text  # the console's own page, signed in
    assert browser.get("/console", follow_redirects=False).status_code == 200


def post_form(browser: TestClient, page: str, target: str, **data: str) -> Any:
    """Open ``page`` and post a form (with the page's CSRF token) to ``target``."""
    token = csrf_of(browser.get(page))
    return browser.post(target, data={"csrf": token, **data}, follow_redirects=False)


def person(browser: TestClient) -> uuid.UUID:
    """A person with an active code display (``PERSON``), a customer of ``TEST_BANK``."""
    services = services_of(browser)
    identity_id = seed_person_with_code_display(services.sessions, services.secrets)
    with services.sessions.begin() as session:
        session.add(
            ProofingRecord(
                identity_id=identity_id,
                channel=ProofingChannel.BANK,
                document_kind="passport",
                operator_ids=["bank-op"],
                level=Level.SUBSTANTIAL,
                organisation=TEST_BANK,
            )
        )
    return identity_id


def credential_of(browser: TestClient, identity_id: uuid.UUID) -> Credential:
    with services_of(browser).sessions() as session:
        query = select(Credential).where(Credential.identity_id == identity_id)
        return next(iter(session.scalars(query.order_by(Credential.created_at))))


def status_of(browser: TestClient, identity_id: uuid.UUID) -> IdentityStatus:
    with services_of(browser).sessions() as session:
        identity = session.get(Identity, identity_id)
        assert identity is not None
        return identity.status


# --- signing in ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "words"), [("da", "Log på operatørkonsollen"), ("en", "Log in to the operator")]
)
def test_login_page_in_both_languages_takes_a_pasted_key(
    browser: TestClient, lang: str, words: str
) -> None:
    answer = browser.get("/console/login", headers={"accept-language": lang})
    assert answer.status_code == 200
    assert lang_of(answer) == lang
    assert words in text_of(answer)
    field = re.search(r"<input id=\"api_key\"[^>]*>", answer.text)
    assert field is not None
    assert 'type="password"' in field.group(0)
    assert 'autocomplete="off"' in field.group(0)
    assert "onpaste" not in answer.text.lower()


def test_console_pages_send_a_stranger_to_the_login(browser: TestClient) -> None:
    for path in ("/console", f"/console/people/{uuid.uuid4()}", "/console/enrol"):
        answer = browser.get(path, follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/login?next=/console")


def test_sign_in_rotates_the_session_and_is_audited(
    browser: TestClient, settings: Settings
) -> None:
    key = new_key(settings, "bank-op", Role.OPERATOR_BANK)
    browser.get("/console/login")
    before = browser.cookies.get(COOKIE)
    answer = sign_in(browser, f"  {key}\n", "/console/enrol")  # pasted with whitespace
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/enrol"
    assert browser.cookies.get(COOKIE) not in (None, before)
    home = browser.get("/console")
    assert "bank-op" in text_of(home)
    assert "Bankoperatør" in text_of(home)
    [entry] = audit(browser, "console.sign_in")
    assert entry.actor == "operator_bank:bank-op@test-bank"
    assert entry.details == {"result": "ok", "purpose": "sign_in"}


def test_sign_in_refuses_a_foreign_next_path(browser: TestClient, settings: Settings) -> None:
    answer = sign_in(browser, new_key(settings, "op", Role.OPERATOR_BANK), "https://evil.example/")
    assert answer.headers["location"] == "/console"


def test_a_wrong_key_is_told_at_the_field_counted_and_audited(
    browser: TestClient, settings: Settings
) -> None:
    wrong = "akk_0000abcd_" + "x" * 43
    answer = sign_in(browser, wrong)
    assert answer.status_code == 401
    assert 'aria-invalid="true"' in answer.text
    assert "API-nøglen blev ikke genkendt" in text_of(answer)
    [entry] = audit(browser, "console.sign_in")
    assert entry.actor == "source:testclient"
    assert entry.details["result"] == "failed"
    assert wrong not in str(entry.details)


def test_failed_sign_ins_lock_out_the_source_address(
    browser: TestClient, settings: Settings
) -> None:
    key = new_key(settings, "bank-op", Role.OPERATOR_BANK)
    for _ in range(SIGN_IN_MAX_FAILURES):
        assert sign_in(browser, "akk_nonsense").status_code == 401
    # Locked: even the right key is refused now, with a message that says to wait.
    answer = sign_in(browser, key)
    assert answer.status_code == 429
    assert "Vent 15 minutter" in text_of(answer)
    assert audit(browser, "console.sign_in")[-1].details["result"] == "throttled"
    assert "bank-op" not in text_of(browser.get("/console"))


def test_a_provider_key_is_refused_with_a_clear_message(
    browser: TestClient, settings: Settings
) -> None:
    key = new_key(settings, "https://sp.example", Role.PROVIDER)
    answer = sign_in(browser, key)
    assert answer.status_code == 403
    assert "tjenesteudbyder" in text_of(answer)
    assert browser.get("/console", follow_redirects=False).status_code == 303
    assert audit(browser, "console.sign_in")[-1].details["result"] == "refused"


def test_removing_the_key_ends_the_console_session(browser: TestClient, settings: Settings) -> None:
    key = signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assert browser.get("/console", follow_redirects=False).status_code == 200
    assert ApiKeys(settings.api_keys_file).remove(key_id_of(key))
    answer = browser.get("/console", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login")


def test_sign_out_ends_the_console_session(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assert post_form(browser, "/console", "/logout").status_code == 303
    assert browser.get("/console", follow_redirects=False).status_code == 303


def test_a_console_form_without_its_csrf_token_is_refused(
    browser: TestClient, settings: Settings
) -> None:
    key = new_key(settings, "bank-op", Role.OPERATOR_BANK)
    browser.get("/console/login")
    answer = browser.post("/console/login", data={"api_key": key}, follow_redirects=False)
    assert answer.status_code == 403
    assert browser.get("/console", follow_redirects=False).status_code == 303
    signed_in(browser, settings, "bank-op-2", Role.OPERATOR_BANK)
    identity_id = person(browser)
    credential = credential_of(browser, identity_id)
    path = f"/console/people/{identity_id}/credentials/{credential.id}/block"
    answer = browser.post(path, data={"csrf": "forged"}, follow_redirects=False)
    assert answer.status_code == 403
    assert credential_of(browser, identity_id).state is CredentialState.ACTIVE


# --- finding a person --------------------------------------------------------------------------


def test_search_finds_the_person_and_is_audited(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    identity_id = person(browser)
    answer = post_form(browser, "/console", "/console/search", person_number="0101901234")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/people/{identity_id}"
    [entry] = audit(browser, "console.person_searched")
    assert (entry.actor, entry.subject) == ("operator_bank:bank-op@test-bank", str(identity_id))


def test_search_does_not_tell_another_banks_operator_who_exists(
    browser: TestClient, settings: Settings
) -> None:
    person(browser)  # a customer of TEST_BANK
    signed_in(browser, settings, "other-op", Role.OPERATOR_BANK, organisation="other-bank")
    known = post_form(browser, "/console", "/console/search", person_number="0101901234")
    nobody = post_form(browser, "/console", "/console/search", person_number="0202022222")
    assert known.status_code == nobody.status_code == 404
    assert "Ingen person med CPR-nummer 010190-****" in text_of(known)
    assert [entry.details["result"] for entry in audit(browser, "console.person_searched")] == [
        "not_found",
        "not_found",
    ]


@pytest.mark.parametrize(
    ("lang", "typed", "status", "words"),
    [
        ("da", "020202-2222", 404, "Ingen person med CPR-nummer 020202-****"),
        ("en", "020202-2222", 404, "Nobody with CPR number 020202-****"),
        ("da", "12", 422, "Skriv et CPR-nummer med 10 cifre"),
        ("en", "12", 422, "Enter a CPR number of 10 digits"),
    ],
)
def test_search_tells_what_went_wrong(
    browser: TestClient, settings: Settings, lang: str, typed: str, status: int, words: str
) -> None:
    browser.headers["accept-language"] = lang  # as a browser sends it with every request
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    answer = post_form(browser, "/console", "/console/search", person_number=typed)
    assert answer.status_code == status
    assert lang_of(answer) == lang
    assert words in text_of(answer)
    assert 'href="#person_number"' in answer.text  # the error summary leads to the field
    assert 'aria-describedby="person_number-hint person_number-error"' in answer.text


# --- the person's page -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "words"),
    [("da", "Kodeviser 1000000001 Aktiv"), ("en", "Code display 1000000001 Active")],
)
def test_person_page_shows_masked_details_and_is_audited(
    browser: TestClient, settings: Settings, lang: str, words: str
) -> None:
    browser.headers["accept-language"] = lang  # as a browser sends it with every request
    signed_in(browser, settings, "centre-op", Role.OPERATOR_CENTRE)
    identity_id = person(browser)
    answer = browser.get(f"/console/people/{identity_id}")
    assert answer.status_code == 200
    text = text_of(answer)
    assert "Test Person" in text
    assert "010190-****" in text
    assert PERSON not in text
    assert words in text
    [entry] = audit(browser, "identity.viewed")
    assert (entry.actor, entry.subject) == ("operator_centre:centre-op", str(identity_id))
    browser.get(f"/console/people/{identity_id}")
    assert len(audit(browser, "identity.viewed")) == 2  # every view


def test_an_unknown_person_is_a_404_page(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assert browser.get(f"/console/people/{uuid.uuid4()}").status_code == 404


def test_a_refused_action_says_why_on_the_person_page(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    identity_id = person(browser)
    page = f"/console/people/{identity_id}"
    # A second code display is over the kind's limit.
    answer = post_form(browser, page, f"{page}/credentials", kind="code_display")
    assert answer.status_code == 409
    assert "højeste antal" in text_of(answer)
    for sent in ({}, {"kind": "magic"}):  # none chosen, or one the form does not offer
        answer = post_form(browser, page, f"{page}/credentials", **sent)
        assert answer.status_code == 422
        assert 'href="#kind-code_display"' in answer.text


def test_an_operator_orders_and_replaces(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    identity_id = person(browser)
    page = f"/console/people/{identity_id}"
    assert post_form(browser, page, f"{page}/credentials", kind="fido2").status_code == 303
    old = credential_of(browser, identity_id)
    replace = f"{page}/credentials/{old.id}/replace"
    answer = post_form(browser, replace, replace, reason="the display was stolen")
    assert answer.status_code == 303
    with services_of(browser).sessions() as session:
        states = sorted(
            (c.kind.value, c.state.value)
            for c in session.scalars(
                select(Credential).where(Credential.identity_id == identity_id)
            )
        )
    assert states == [
        ("code_display", "ordered"),
        ("code_display", "replaced"),
        ("fido2", "ordered"),
    ]


def test_a_credential_of_another_person_is_not_reached_through_this_page(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    services = services_of(browser)
    first = person(browser)
    other = seed_person_with_code_display(services.sessions, services.secrets, "020202-2222")
    theirs = credential_of(browser, other)
    page = f"/console/people/{first}"
    answer = post_form(browser, page, f"{page}/credentials/{theirs.id}/block")
    assert answer.status_code == 404
    assert credential_of(browser, other).state is CredentialState.ACTIVE


def test_an_operator_suspends_and_resumes_but_cannot_close(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    identity_id = person(browser)
    page = f"/console/people/{identity_id}"
    shown = browser.get(page)
    assert 'value="close"' not in shown.text
    assert f'href="{page}/suspend"' in shown.text
    suspended = post_form(browser, page, f"{page}/status", action="suspend", reason="fraud")
    assert suspended.status_code == 303
    assert status_of(browser, identity_id) is IdentityStatus.SUSPENDED
    assert post_form(browser, page, f"{page}/status", action="resume").status_code == 303
    assert status_of(browser, identity_id) is IdentityStatus.ACTIVE
    forged = post_form(browser, page, f"{page}/status", action="close", confirm_close="yes")
    assert forged.status_code == 403
    assert status_of(browser, identity_id) is IdentityStatus.ACTIVE


def test_a_supervisor_closes_after_confirming(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    identity_id = person(browser)
    page = f"/console/people/{identity_id}"
    assert 'value="close"' in browser.get(page).text
    unconfirmed = post_form(browser, page, f"{page}/status", action="close")
    assert unconfirmed.status_code == 422
    assert 'href="#confirm_close-yes"' in unconfirmed.text
    assert status_of(browser, identity_id) is IdentityStatus.ACTIVE
    answer = post_form(browser, page, f"{page}/status", action="close", confirm_close="yes")
    assert answer.status_code == 303
    assert status_of(browser, identity_id) is IdentityStatus.CLOSED
    assert credential_of(browser, identity_id).state is CredentialState.REVOKED
    assert audit(browser, "identity.closed")[-1].actor == "supervisor:boss"


def test_an_operator_lifts_throttles_with_a_reason(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    identity_id = person(browser)
    page = f"/console/people/{identity_id}"
    assert f'action="{page}/throttles"' in browser.get(page).text
    missing = post_form(browser, page, f"{page}/throttles", reason=" ")
    assert missing.status_code == 422
    assert 'href="#lift-reason"' in missing.text
    lifted = post_form(browser, page, f"{page}/throttles", reason="at the desk, passport seen")
    assert lifted.status_code == 303
    with services_of(browser).sessions() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.event == "throttles.lifted")
        ).one()
        assert entry.details["reason"] == "at the desk, passport seen"
        assert "bank-op" in entry.actor
