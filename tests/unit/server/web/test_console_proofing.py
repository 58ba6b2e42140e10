"""Recording another identity proofing of an enrolled person from the console's person page:
on the operator's own channel only, High only after a second operator of the channel approves
with their own key (here: typed at the first operator's desk; from their own console in
test_console_approvals), and the raised assurance shown on the page afterwards."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.domain.model import Level
from server.services.access import Role
from server.settings import Settings
from server.storage.tables import Identity, ProofingRecord
from tests.unit.server.web.forms import lang_of, text_of
from tests.unit.server.web.test_console import (
    audit,
    events,
    new_key,
    person,
    post_form,
    services_of,
    signed_in,
    told_channel_missing,
)

_ASSURANCE = re.compile(r"(?:Identitetssikringsniveau|Identity assurance)</dt><dd>([^<]+)</dd>")


def records(browser: TestClient, identity_id: uuid.UUID) -> list[ProofingRecord]:
    with services_of(browser).sessions() as session:
        query = select(ProofingRecord).where(ProofingRecord.identity_id == identity_id)
        return list(session.scalars(query.order_by(ProofingRecord.created_at)))


def assurance(browser: TestClient, identity_id: uuid.UUID) -> Level:
    with services_of(browser).sessions() as session:
        identity = session.get(Identity, identity_id)
        assert identity is not None
        return identity.identity_assurance


def shown_assurance(browser: TestClient, identity_id: uuid.UUID) -> str:
    found = _ASSURANCE.search(browser.get(f"/console/people/{identity_id}").text)
    assert found is not None, "the person page shows no identity assurance"
    return found.group(1)


def prove(browser: TestClient, identity_id: uuid.UUID, **data: str) -> Any:
    page = f"/console/people/{identity_id}"
    fields = {"document_kind": "passport", "level": "substantial", **data}
    return post_form(browser, page, f"{page}/proofing", **fields)


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("da", ("Registrér en ny identitetssikring", "Hvem godkender identitetssikringen?")),
        ("en", ("Record a new identity proofing", "Who approves the proofing?")),
    ],
)
def test_the_person_page_offers_proofing_in_both_languages(
    browser: TestClient, settings: Settings, lang: str, words: tuple[str, ...]
) -> None:
    identity_id = person(browser)
    browser.headers["accept-language"] = lang  # as a browser sends it with every request
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    answer = browser.get(f"/console/people/{identity_id}")
    assert answer.status_code == 200
    assert lang_of(answer) == lang
    for word in words:
        assert word in text_of(answer)
    assert f'action="/console/people/{identity_id}/proofing"' in answer.text
    # Every document kind the service knows, in a group with its legend.
    for kind in ("passport", "driving_licence", "national_id_card", "passport_chip"):
        assert f'name="document_kind" value="{kind}"' in answer.text
    assert 'name="channel"' not in answer.text  # a bank operator has one channel


def test_a_bank_operator_records_substantial_on_the_bank_channel(
    browser: TestClient, settings: Settings
) -> None:
    identity_id = person(browser)
    before = len(records(browser, identity_id))
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    answer = prove(browser, identity_id, document_kind="driving_licence")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/people/{identity_id}"
    added = records(browser, identity_id)[before:]
    assert [(r.channel.value, r.document_kind, r.operator_ids) for r in added] == [
        ("bank", "driving_licence", ["bank-op"])
    ]
    [entry] = audit(browser, "identity.proofed")
    assert entry.actor == "operator_bank:bank-op@test-bank"
    shown = browser.get(f"/console/people/{identity_id}")
    assert "Identitetssikringen er registreret." in text_of(shown)
    # The table names every record's channel, document, operators, level and time.
    assert "Kørekort" in text_of(shown)
    assert "bank-op" in text_of(shown)
    assert "<time datetime=" in shown.text
    assert "<caption>" in shown.text


def test_a_bank_operator_cannot_record_service_centre_proofing(
    browser: TestClient, settings: Settings
) -> None:
    identity_id = person(browser)
    before = len(records(browser, identity_id))
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assert prove(browser, identity_id, channel="service_centre").status_code == 403
    assert prove(browser, identity_id, channel="service_centre", level="high").status_code == 403
    assert len(records(browser, identity_id)) == before
    assert audit(browser, "identity.proofed") == []


def waiting_page(answer: Any) -> str:
    """The page a High proofing was sent to: its own, waiting for a second operator."""
    assert answer.status_code == 303, answer.text
    location = str(answer.headers["location"])
    assert re.fullmatch(r"/console/proofings/[0-9a-f-]{36}", location), location
    return location


def test_high_needs_a_second_operator_and_then_shows_high(
    browser: TestClient, settings: Settings
) -> None:
    identity_id = person(browser)
    before = len(records(browser, identity_id))
    first = signed_in(browser, settings, "centre-op", Role.OPERATOR_CENTRE, organisation="c-1")
    assert shown_assurance(browser, identity_id) == "Betydelig"
    answer = prove(browser, identity_id, level="high", document_kind="national_id_card")
    page = waiting_page(answer)
    waiting = browser.get(page)
    assert "Identitetssikringen venter på en anden operatør" in text_of(waiting)
    assert "Nationalt identitetskort" in text_of(waiting)
    assert "Du kan ikke selv godkende den" in text_of(waiting)
    assert 'name="checked_myself"' not in waiting.text  # not the first operator's to approve
    # The first operator's check is recorded; High waits.
    [first_check] = records(browser, identity_id)[before:]
    assert (first_check.operator_ids, first_check.level) == (["centre-op"], Level.SUBSTANTIAL)
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL

    # The first operator's own key is no second approval; nor is another channel's operator.
    desk = f"{page}/desk"
    same = post_form(browser, page, desk, second_key=first)
    assert same.status_code == 422
    assert "anden operatør end dig" in text_of(same)
    bank = new_key(settings, "bank-op", Role.OPERATOR_BANK)
    assert post_form(browser, page, desk, second_key=bank).status_code == 403
    assert post_form(browser, page, desk, second_key="akk_no").status_code == 401
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL

    # Nor is a centre operator of another organisation (or a key without one).
    for other in ("c-2", None):
        elsewhere = new_key(settings, "centre-op-9", Role.OPERATOR_CENTRE, organisation=other)
        refused = post_form(browser, page, desk, second_key=elsewhere)
        assert refused.status_code == 403
    colleague = new_key(settings, "centre-op-2", Role.OPERATOR_CENTRE, organisation="c-1")
    answer = post_form(browser, page, desk, second_key=colleague)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/people/{identity_id}"
    # The first operator's check, then the proofing the second operator's key approved.
    first_check, added = records(browser, identity_id)[before:]
    assert (added.channel.value, added.operator_ids, added.level) == (
        "service_centre",
        ["centre-op", "centre-op-2"],
        Level.HIGH,
    )
    assert assurance(browser, identity_id) is Level.HIGH
    assert shown_assurance(browser, identity_id) == "Høj"
    approvals = [e for e in audit(browser, "console.sign_in") if e.details["purpose"] != "sign_in"]
    assert [e.actor for e in approvals][-1] == "operator_centre:centre-op-2@c-1"
    proofed = audit(browser, "identity.proofed")
    assert [entry.details["assurance_after"] for entry in proofed] == ["substantial", "high"]
    [approved] = audit(browser, "identity.proofing_approved")
    assert approved.details["operators"] == ["centre-op", "centre-op-2"]
    assert approved.actor == "operator_centre:centre-op-2@c-1"
    # Nothing waits any more: the page says so and offers nothing.
    done = browser.get(page)
    assert "Godkendt" in text_of(done)
    assert 'name="second_key"' not in done.text
    assert post_form(browser, page, desk, second_key=colleague).status_code == 409


def test_the_waiting_proofing_can_be_cancelled(browser: TestClient, settings: Settings) -> None:
    identity_id = person(browser)
    before = len(records(browser, identity_id))
    signed_in(browser, settings, "centre-op", Role.OPERATOR_CENTRE)
    page = waiting_page(prove(browser, identity_id, level="high"))
    answer = post_form(browser, page, f"{page}/cancel")
    assert answer.status_code == 303
    assert "Annulleret" in text_of(browser.get(page))
    # The first operator's check stays; nothing gives High.
    assert [r.level for r in records(browser, identity_id)[before:]] == [Level.SUBSTANTIAL]
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL
    assert len(audit(browser, "identity.proofing_cancelled")) == 1


def test_a_waiting_proofing_is_not_another_channels(
    browser: TestClient, settings: Settings
) -> None:
    identity_id = person(browser)
    signed_in(browser, settings, "centre-op", Role.OPERATOR_CENTRE, organisation="c-1")
    page = waiting_page(prove(browser, identity_id, level="high"))
    assert browser.get(f"/console/proofings/{uuid.uuid4()}").status_code == 404
    # A bank operator signing in at the same browser does not see it.
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assert browser.get(page).status_code == 404


def test_high_with_a_document_that_cannot_give_it_is_told_at_the_field(
    browser: TestClient, settings: Settings
) -> None:
    identity_id = person(browser)
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    data = {"channel": "service_centre", "level": "high", "document_kind": "passport_chip"}
    answer = prove(browser, identity_id, **data)
    assert answer.status_code == 422
    assert 'href="#document_kind-passport"' in answer.text
    assert "Niveau Høj kræver pas, kørekort eller nationalt identitetskort" in text_of(answer)
    for value in data.values():  # the choices are kept
        assert f'value="{value}" checked' in answer.text


def test_proofing_errors_are_shown_at_their_fields(browser: TestClient, settings: Settings) -> None:
    identity_id = person(browser)
    before = len(records(browser, identity_id))
    browser.headers["accept-language"] = "en"  # as a browser sends it with every request
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    answer = prove(browser, identity_id, document_kind="", level="")
    assert answer.status_code == 422
    assert 'href="#document_kind-passport"' in answer.text
    assert 'href="#level-substantial"' in answer.text
    assert "Choose who approves the proofing." in text_of(answer)
    # A choice the form does not offer is told the same way.
    answer = prove(browser, identity_id, document_kind="scroll", level="highest")
    assert answer.status_code == 422
    assert 'href="#document_kind-passport"' in answer.text
    assert 'href="#level-substantial"' in answer.text
    assert len(records(browser, identity_id)) == before


def test_a_proofing_without_the_csrf_token_is_refused(
    browser: TestClient, settings: Settings
) -> None:
    identity_id = person(browser)
    before = len(records(browser, identity_id))
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    data = {"document_kind": "passport", "level": "substantial"}
    answer = browser.post(
        f"/console/people/{identity_id}/proofing", data=data, follow_redirects=False
    )
    assert answer.status_code == 403
    assert len(records(browser, identity_id)) == before


def test_a_suspended_identity_gets_no_proofing(browser: TestClient, settings: Settings) -> None:
    identity_id = person(browser)
    before = len(records(browser, identity_id))
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    page = f"/console/people/{identity_id}"
    suspended = post_form(browser, page, f"{page}/status", action="suspend", reason="fraud")
    assert suspended.status_code == 303
    shown = browser.get(page)
    assert f'action="{page}/proofing"' not in shown.text
    answer = prove(browser, identity_id)
    assert answer.status_code == 409
    assert "Identiteten er ikke aktiv" in text_of(answer)
    assert len(records(browser, identity_id)) == before


def test_a_supervisor_chooses_the_channel(browser: TestClient, settings: Settings) -> None:
    identity_id = person(browser)
    before = len(records(browser, identity_id))
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    shown = browser.get(f"/console/people/{identity_id}")
    assert 'name="channel" value="bank"' in shown.text
    assert 'name="channel" value="service_centre"' in shown.text
    assert prove(browser, identity_id, channel="service_centre").status_code == 303
    [added] = records(browser, identity_id)[before:]
    assert (added.channel.value, added.operator_ids) == ("service_centre", ["boss"])


@pytest.mark.parametrize(
    ("lang", "channel"), [("da", ""), ("en", ""), ("da", "self_service"), ("da", "elsewhere")]
)
def test_a_channel_not_chosen_is_told_at_the_field(
    browser: TestClient, settings: Settings, lang: str, channel: str
) -> None:
    """A supervisor who leaves "Hvor er personen?" unchosen (or sends a channel the form does
    not offer) gets the person's page again with the choices kept, not an error page."""
    identity_id = person(browser)
    before = len(records(browser, identity_id))
    browser.headers["accept-language"] = lang  # as a browser sends it with every request
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    seen = len(events(browser))
    sent = {"channel": channel} if channel else {}  # an unchosen radio group sends nothing
    answer = prove(browser, identity_id, **sent, level="high", document_kind="national_id_card")
    # Only the person's page was seen (twice: the form, then the form again).
    assert events(browser)[seen:] == ["identity.viewed", "identity.viewed"]
    told_channel_missing(browser, answer, lang)
    assert 'value="national_id_card" checked' in answer.text
    assert 'value="high" checked' in answer.text
    assert len(records(browser, identity_id)) == before
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL
