"""A High proofing waits for a second operator, who approves it from their own console session
(not only by typing their key at the first operator's desk): the console home tells how many
wait, the list shows them (person, masked CPR-nummer, channel, document, first operator, when,
expiry), and the proofing's page approves through the same service rules as the API, after
the second operator confirms they checked the document themselves. The first operator never
approves their own; another bank's and another channel's operators never see it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.domain.model import Level
from server.services.access import Role
from server.settings import Settings
from tests.unit.server.conftest import ORIGIN
from tests.unit.server.web.forms import text_of
from tests.unit.server.web.test_console import (
    PERSON,
    TEST_BANK,
    audit,
    new_key,
    person,
    post_form,
    services_of,
    signed_in,
)
from tests.unit.server.web.test_console_proofing import assurance, prove, records, waiting_page

LIST = "/console/proofings"
_COUNT = re.compile(r"(?:som venter på din godkendelse|waiting for your approval): (\d+)\.")


@pytest.fixture
def colleague(browser: TestClient) -> Iterator[TestClient]:
    """A second browser on the same service: another operator's own desk and session."""
    with TestClient(browser.app, base_url=ORIGIN, raise_server_exceptions=False) as client:
        yield client


def bank_proofing_waits(browser: TestClient, settings: Settings) -> tuple[uuid.UUID, str]:
    """The bank's customer, and the page of the High proofing the bank's first operator
    recorded at their desk, waiting for a second operator."""
    identity_id = person(browser)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    page = waiting_page(prove(browser, identity_id, level="high", document_kind="passport"))
    return identity_id, page


def waiting_count(client: TestClient) -> int:
    found = _COUNT.search(text_of(client.get("/console")))
    return int(found.group(1)) if found else 0


def approve(client: TestClient, page: str, **data: str) -> Any:
    return post_form(client, page, f"{page}/approve", **data)


def test_a_second_operator_approves_from_their_own_session(
    browser: TestClient, colleague: TestClient, settings: Settings
) -> None:
    identity_id, page = bank_proofing_waits(browser, settings)
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL
    signed_in(colleague, settings, "bank-op-2", Role.OPERATOR_BANK)

    # The home page counts it; the list shows who, where, on what, by whom, when, until when.
    assert waiting_count(colleague) == 1
    listed = colleague.get(LIST)
    assert listed.status_code == 200
    text = text_of(listed)
    for shown in ("Test Person, 010190-****", "Bank", "Pas", "bank-op", "Udløber"):
        assert shown in text
    assert PERSON not in text
    assert f'href="{page}"' in listed.text
    assert "<time datetime=" in listed.text
    [listing] = audit(browser, "console.proofings_listed")
    assert listing.actor == f"operator_bank:bank-op-2@{TEST_BANK}"

    shown = colleague.get(page)
    assert shown.status_code == 200
    assert "Jeg har selv set personen og kontrolleret legitimationen" in text_of(shown)
    assert 'name="checked_myself"' in shown.text
    assert 'name="second_key"' not in shown.text  # no key to type: the session is theirs

    # Not confirmed: nothing happens, and the box is named at the field.
    unconfirmed = approve(colleague, page)
    assert unconfirmed.status_code == 422
    assert 'href="#checked_myself-yes"' in unconfirmed.text
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL

    answer = approve(colleague, page, checked_myself="yes")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/people/{identity_id}"
    assert assurance(browser, identity_id) is Level.HIGH
    added = records(browser, identity_id)[-1]
    assert (added.channel.value, added.operator_ids, added.level, added.organisation) == (
        "bank",
        ["bank-op", "bank-op-2"],
        Level.HIGH,
        TEST_BANK,
    )
    [approved] = audit(browser, "identity.proofing_approved")
    assert approved.actor == f"operator_bank:bank-op-2@{TEST_BANK}"
    assert approved.details["operators"] == ["bank-op", "bank-op-2"]
    assert approved.details["first_operator_id"] != approved.details["second_operator_id"]
    # Nothing waits any more, for either of them.
    assert waiting_count(colleague) == 0
    assert "Godkendt" in text_of(colleague.get(page))
    assert approve(colleague, page, checked_myself="yes").status_code == 409
    assert "Ingen af dine identitetssikringer venter" in text_of(browser.get(LIST))


def test_the_first_operator_cannot_approve_their_own(
    browser: TestClient, settings: Settings
) -> None:
    identity_id, page = bank_proofing_waits(browser, settings)
    # Counted and listed as their own, waiting for a colleague; not as theirs to approve.
    assert waiting_count(browser) == 0
    assert "Dine egne, som venter på en kollega: 1." in text_of(browser.get("/console"))
    listed = text_of(browser.get(LIST))
    assert "Ingen identitetssikringer venter på din godkendelse." in listed
    assert "Test Person, 010190-****" in listed
    shown = browser.get(page)
    assert "Venter på en anden operatør" in text_of(shown)
    assert 'name="checked_myself"' not in shown.text
    # A forged approval is refused by the service, as the API refuses the first key.
    assert approve(browser, page, checked_myself="yes").status_code == 403
    # Nor does another key of the same name approve it from another session.
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assert approve(browser, page, checked_myself="yes").status_code == 403
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL
    assert audit(browser, "identity.proofing_approved") == []


@pytest.mark.parametrize(
    ("name", "role", "organisation"),
    [
        ("other-bank-op", Role.OPERATOR_BANK, "other-bank"),  # another bank
        ("centre-op", Role.OPERATOR_CENTRE, TEST_BANK),  # another channel, even one named alike
    ],
)
def test_another_bank_or_channel_does_not_see_it(
    browser: TestClient,
    colleague: TestClient,
    settings: Settings,
    name: str,
    role: Role,
    organisation: str,
) -> None:
    identity_id, page = bank_proofing_waits(browser, settings)
    signed_in(colleague, settings, name, role, organisation=organisation)
    assert waiting_count(colleague) == 0
    listed = colleague.get(LIST)
    assert "Test Person" not in text_of(listed)
    assert page not in listed.text
    # Its page and a forged approval answer as for an id nobody has.
    assert colleague.get(page).status_code == 404
    assert colleague.get(f"{LIST}/{uuid.uuid4()}").status_code == 404
    forged = colleague.post(
        f"{page}/approve",
        data={"csrf": _csrf(colleague), "checked_myself": "yes"},
        follow_redirects=False,
    )
    assert forged.status_code == 404
    assert post_form(colleague, "/console", f"{page}/cancel").status_code == 404
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL


def _csrf(client: TestClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/console").text)
    assert found is not None
    return found.group(1)


def test_a_second_operator_declines(
    browser: TestClient, colleague: TestClient, settings: Settings
) -> None:
    identity_id, page = bank_proofing_waits(browser, settings)
    signed_in(colleague, settings, "bank-op-2", Role.OPERATOR_BANK)
    answer = post_form(colleague, page, f"{page}/cancel")
    assert answer.status_code == 303
    assert answer.headers["location"] == LIST
    assert "Annulleret" in text_of(colleague.get(page))
    assert approve(colleague, page, checked_myself="yes").status_code == 409
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL
    [cancelled] = audit(browser, "identity.proofing_cancelled")
    assert cancelled.actor == f"operator_bank:bank-op-2@{TEST_BANK}"
    # The first operator sees what became of it.
    assert "Annulleret" in text_of(browser.get(page))


def test_an_expired_proofing_is_shown_so_and_not_approved(
    browser: TestClient, colleague: TestClient, settings: Settings
) -> None:
    identity_id, page = bank_proofing_waits(browser, settings)
    signed_in(colleague, settings, "bank-op-2", Role.OPERATOR_BANK)
    services = services_of(browser)
    real = services.clock
    services.clock = lambda: real() + 31 * 60  # past the 30 minutes a proofing waits
    try:
        assert waiting_count(colleague) == 0
        assert "Udløbet" in text_of(colleague.get(page))
        refused = approve(colleague, page, checked_myself="yes")
        assert refused.status_code == 409
        assert "Identitetssikringen venter ikke længere" in text_of(refused)
    finally:
        services.clock = real
    assert assurance(browser, identity_id) is Level.SUBSTANTIAL


def test_a_proofing_requested_through_the_api_is_approved_at_the_console(
    browser: TestClient, colleague: TestClient, settings: Settings
) -> None:
    identity_id = person(browser)
    first = new_key(settings, "bank-op", Role.OPERATOR_BANK)
    answer = browser.post(
        f"/identities/{identity_id}/proofing",
        json={"channel": "bank", "document_kind": "passport", "operator_ids": ["bank-op", "x"]},
        headers={"Authorization": f"Bearer {first}"},
    )
    assert answer.status_code == 200, answer.text
    signed_in(colleague, settings, "bank-op-2", Role.OPERATOR_BANK)
    assert waiting_count(colleague) == 1
    found = re.search(r'href="(/console/proofings/[0-9a-f-]{36})"', colleague.get(LIST).text)
    assert found is not None
    assert approve(colleague, found.group(1), checked_myself="yes").status_code == 303
    assert assurance(browser, identity_id) is Level.HIGH
    assert records(browser, identity_id)[-1].operator_ids == ["bank-op", "bank-op-2"]


def test_in_english(browser: TestClient, colleague: TestClient, settings: Settings) -> None:
    _, page = bank_proofing_waits(browser, settings)
    colleague.headers["accept-language"] = "en"  # as a browser sends it with every request
    signed_in(colleague, settings, "bank-op-2", Role.OPERATOR_BANK)
    assert waiting_count(colleague) == 1
    assert "Waiting for approval" in text_of(colleague.get("/console"))
    shown = text_of(colleague.get(page))
    assert "I have seen the person and checked the document myself" in shown
    assert "Passport" in shown
