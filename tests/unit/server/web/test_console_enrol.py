"""Enrolling a person at the console: Substantial by one operator on their own channel, High
only after a second operator of the channel approves (the proofing waits for them, enrolled at
what one operator's check gives), and a bank operator never records service-centre proofing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.services.access import Role
from server.settings import Settings
from server.storage.tables import Identity, ProofingRecord
from tests.unit.server.web.forms import lang_of, text_of
from tests.unit.server.web.test_console import (
    audit,
    events,
    new_key,
    post_form,
    services_of,
    signed_in,
    told_channel_missing,
)

NUMBER = "311299-4321"


def enrolment(**changes: str) -> dict[str, str]:
    return {
        "name": "Karen Blixen",
        "person_number": NUMBER,
        "document_kind": "passport",
        "level": "substantial",
        **changes,
    }


def enrolled(browser: TestClient) -> tuple[Identity, ProofingRecord] | None:
    with services_of(browser).sessions() as session:
        identity = session.scalars(
            select(Identity).where(Identity.person_number == NUMBER)
        ).one_or_none()
        if identity is None:
            return None
        # The newest record: after a second operator's approval, the High one.
        records = session.scalars(
            select(ProofingRecord).where(ProofingRecord.identity_id == identity.id)
        )
        record = max(records, key=lambda found: (found.created_at, len(found.operator_ids)))
        return identity, record


def enrol(browser: TestClient, **changes: str) -> Any:
    return post_form(browser, "/console/enrol", "/console/enrol", **enrolment(**changes))


@pytest.mark.parametrize(("lang", "words"), [("da", "Opret en person"), ("en", "Enrol a person")])
def test_enrol_page_in_both_languages(
    browser: TestClient, settings: Settings, lang: str, words: str
) -> None:
    browser.headers["accept-language"] = lang  # as a browser sends it with every request
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    answer = browser.get("/console/enrol")
    assert answer.status_code == 200
    assert lang_of(answer) == lang
    assert words in text_of(answer)
    assert "<legend>" in answer.text


def test_a_bank_operator_enrols_at_substantial_on_the_bank_channel(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    answer = enrol(browser)
    assert answer.status_code == 303
    found = enrolled(browser)
    assert found is not None
    identity, record = found
    assert answer.headers["location"] == f"/console/people/{identity.id}"
    assert identity.identity_assurance.label == "substantial"
    assert (record.channel.value, record.operator_ids) == ("bank", ["bank-op"])
    [entry] = audit(browser, "identity.enrolled")
    assert entry.actor == "operator_bank:bank-op@test-bank"


def test_a_bank_operator_cannot_record_service_centre_proofing(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assert enrol(browser, channel="service_centre").status_code == 403
    assert enrolled(browser) is None


def test_enrol_errors_are_shown_at_their_fields(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    answer = enrol(browser, name=" ", person_number="12", document_kind="", level="")
    assert answer.status_code == 422
    for field in ("name", "person_number", "document_kind-passport", "level-substantial"):
        assert f'href="#{field}"' in answer.text
    assert 'id="document_kind-passport" name="document_kind" value="passport" aria-invalid' in (
        answer.text
    )
    # A choice the form does not offer is told the same way.
    answer = enrol(browser, document_kind="scroll", level="highest")
    assert answer.status_code == 422
    for field in ("document_kind-passport", "level-substantial"):
        assert f'href="#{field}"' in answer.text
    assert enrolled(browser) is None


def test_a_second_enrolment_of_the_person_says_so(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assert enrol(browser).status_code == 303
    answer = enrol(browser)
    assert answer.status_code == 409
    assert "findes allerede en identitet" in text_of(answer)


def test_an_enrolment_without_the_csrf_token_is_refused(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    answer = browser.post("/console/enrol", data=enrolment(), follow_redirects=False)
    assert answer.status_code == 403
    assert enrolled(browser) is None


def test_high_waits_for_a_second_operator_of_the_channel(
    browser: TestClient, settings: Settings
) -> None:
    first = signed_in(browser, settings, "centre-op", Role.OPERATOR_CENTRE, organisation="c-1")
    answer = enrol(browser, level="high", document_kind="national_id_card")
    assert answer.status_code == 303
    page = str(answer.headers["location"])
    assert page.startswith("/console/proofings/")
    waiting = browser.get(page)
    assert "Venter på en anden operatør" in text_of(waiting)
    assert "311299-****" in text_of(waiting)
    # Enrolled at what one operator's check gives; High waits.
    found = enrolled(browser)
    assert found is not None
    assert found[0].identity_assurance.label == "substantial"
    assert found[1].operator_ids == ["centre-op"]
    desk = f"{page}/desk"
    # The first operator's own key is no second approval.
    same = post_form(browser, page, desk, second_key=first)
    assert same.status_code == 422
    assert "anden operatør end dig" in text_of(same)
    # A bank operator may not approve service-centre proofing.
    bank = new_key(settings, "bank-op", Role.OPERATOR_BANK)
    assert post_form(browser, page, desk, second_key=bank).status_code == 403
    assert post_form(browser, page, desk, second_key="akk_wrong").status_code == 401
    found = enrolled(browser)
    assert found is not None
    assert found[0].identity_assurance.label == "substantial"
    # Another operator of the centre approves: High, with both operators on the record.
    colleague = new_key(settings, "centre-op-2", Role.OPERATOR_CENTRE, organisation="c-1")
    answer = post_form(browser, page, desk, second_key=colleague)
    assert answer.status_code == 303
    found = enrolled(browser)
    assert found is not None
    identity, record = found
    assert answer.headers["location"] == f"/console/people/{identity.id}"
    assert identity.identity_assurance.label == "high"
    assert (record.channel.value, record.operator_ids) == (
        "service_centre",
        ["centre-op", "centre-op-2"],
    )
    approvals = [e for e in audit(browser, "console.sign_in") if e.details["purpose"] != "sign_in"]
    assert approvals[-1].actor == "operator_centre:centre-op-2@c-1"
    # Nothing waits any more.
    assert 'name="second_key"' not in browser.get(page).text


def test_the_waiting_enrolment_can_be_cancelled(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "centre-op", Role.OPERATOR_CENTRE)
    page = str(enrol(browser, level="high").headers["location"])
    answer = post_form(browser, page, f"{page}/cancel")
    assert answer.status_code == 303
    assert "Annulleret" in text_of(browser.get(page))
    # The person stays enrolled at what the first operator's check gave.
    found = enrolled(browser)
    assert found is not None
    assert found[0].identity_assurance.label == "substantial"


def test_a_supervisor_chooses_the_channel(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    shown = browser.get("/console/enrol")
    assert 'name="channel" value="bank"' in shown.text
    assert 'name="channel" value="service_centre"' in shown.text
    assert enrol(browser, channel="service_centre").status_code == 303
    found = enrolled(browser)
    assert found is not None
    assert found[1].channel.value == "service_centre"


@pytest.mark.parametrize(
    ("lang", "channel"), [("da", ""), ("en", ""), ("da", "self_service"), ("da", "elsewhere")]
)
def test_a_channel_not_chosen_is_told_at_the_field(
    browser: TestClient, settings: Settings, lang: str, channel: str
) -> None:
    """A supervisor who leaves "Hvor er personen?" unchosen (or sends a channel the form does
    not offer) gets the form again with everything typed, not an error page."""
    browser.headers["accept-language"] = lang  # as a browser sends it with every request
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    before = events(browser)
    sent = {"channel": channel} if channel else {}  # an unchosen radio group sends nothing
    answer = enrol(browser, **sent, level="high", document_kind="driving_licence")
    assert events(browser) == before  # nothing done, nothing audited
    told_channel_missing(browser, answer, lang)
    assert 'value="Karen Blixen"' in answer.text
    assert f'value="{NUMBER}"' in answer.text
    assert 'value="driving_licence" checked' in answer.text
    assert 'value="high" checked' in answer.text
    assert 'name="channel" value="bank" checked' not in answer.text
    assert enrolled(browser) is None


def test_the_chosen_channel_is_kept_when_another_field_is_wrong(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    answer = enrol(browser, channel="service_centre", name=" ")
    assert answer.status_code == 422
    assert 'value="service_centre" checked' in answer.text
    assert enrolled(browser) is None
