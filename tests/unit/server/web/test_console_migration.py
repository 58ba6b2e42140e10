"""An assisted migration at the console: a bank operator starts the flow for a legacy user id on
the bank's channel, sees its state and the person's resume link, and drives every step the
channel needs with the operator's key; refused steps say why and keep the flow where it was."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpTokenState
from server.services.access import Role
from server.services.migration.formats import code_for
from server.settings import Settings
from server.storage.migration_tables import MigrationFlow
from server.storage.tables import Identity, ProofingRecord
from tests.unit.server.conftest import make_key
from tests.unit.server.migration.test_migration_api import (
    NAME,
    NEW_PASSWORD,
    PASSWORD,
    Person,
    add_person,
    code_of,
)
from tests.unit.server.web.forms import csrf_of, lang_of, text_of
from tests.unit.server.web.test_console import audit, post_form, services_of, signed_in

_INDEX = re.compile(r'class="code-block">([0-9]{4})<')


def stock_token(browser: TestClient, settings: Settings) -> OtpTokenState:
    token = otp_token.new_state(Model.DISPLAY)
    answer = browser.post(
        "/token-batches",
        content=pskc.write_pskc([token.pskc_key()]),
        headers={"content-type": "application/xml", **make_key(settings, "sup", Role.SUPERVISOR)},
    )
    assert answer.status_code == 201, answer.text
    return token


def start(browser: TestClient, person: Person, **changes: str) -> str:
    """Start the person's flow at the console; the flow's console page."""
    data = {"user_id": person.user_id, "document_kind": "passport", **changes}
    answer = post_form(browser, "/console/migrations", "/console/migrations", **data)
    assert answer.status_code == 303, answer.text
    location = str(answer.headers["location"])
    assert location.startswith("/console/migrations/")
    return location


def key_number(browser: TestClient, page: str) -> str:
    found = _INDEX.search(browser.get(page).text)
    assert found is not None, "the page shows no key number"
    return found.group(1)


def step(browser: TestClient, page: str, which: str, **data: str) -> int:
    answer = post_form(browser, page, f"{page}/{which}", **data)
    return int(answer.status_code)


@pytest.mark.parametrize(("lang", "words"), [("da", "Start flytningen"), ("en", "Start the move")])
def test_start_page_in_both_languages(
    browser: TestClient, settings: Settings, lang: str, words: str
) -> None:
    browser.headers["accept-language"] = lang  # as a browser sends it with every request
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    answer = browser.get("/console/migrations")
    assert answer.status_code == 200
    assert lang_of(answer) == lang
    assert words in text_of(answer)


def test_a_bank_operator_drives_the_whole_migration(
    browser: TestClient, settings: Settings
) -> None:
    person = add_person(browser)
    token = stock_token(browser, settings)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    page = start(browser, person)
    flow_id = page.rsplit("/", 1)[1]
    shown = browser.get(page)
    assert f'href="/migrate/{flow_id}"' in shown.text  # the person's resume link
    assert "Trin 1 af 5" in text_of(shown)
    assert "Venter på bevis med det gamle eID" in text_of(shown)
    [started] = audit(browser, "console.migration_started")
    assert started.actor == "operator_bank:bank-op@test-bank"

    # A wrong code is refused with a new key number; the flow stays at the proof.
    index = key_number(browser, page)
    wrong = "000000" if code_for(person.secret, index) != "000000" else "111111"
    assert (
        step(browser, page, "prove", user_id=person.user_id, password=PASSWORD, code=wrong) == 401
    )
    refused = browser.get(page)
    assert "Trin 1 af 5" in text_of(refused)

    index = key_number(browser, page)
    code = code_for(person.secret, index)
    assert step(browser, page, "prove", user_id=person.user_id, password=PASSWORD, code=code) == 303
    assert NAME in text_of(browser.get(page))
    assert step(browser, page, "confirm", person_number="010101-0000", name=NAME) == 422
    assert step(browser, page, "confirm", person_number=person.person_number, name=NAME) == 303
    assert step(browser, page, "choose", kinds="code_display") == 303
    activated = step(
        browser, page, "activate", serial=token.serial, code=code_of(token), password=NEW_PASSWORD
    )
    assert activated == 303
    assert step(browser, page, "complete") == 303
    done = browser.get(page)
    assert "Flytningen er gennemført" in text_of(done)
    with services_of(browser).sessions() as session:
        flow = session.get(MigrationFlow, uuid.UUID(flow_id))
        assert flow is not None
        identity = session.get(Identity, flow.identity_id)
        assert identity is not None
        record = session.scalars(
            select(ProofingRecord).where(ProofingRecord.identity_id == identity.id)
        ).one()
    assert (record.channel.value, record.operator_ids) == ("bank", ["bank-op"])
    assert f'href="/console/people/{identity.id}"' in done.text


def test_an_operator_of_another_channel_cannot_drive_the_flow(
    browser: TestClient, settings: Settings
) -> None:
    person = add_person(browser)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    page = start(browser, person)
    signed_in(browser, settings, "centre-op", Role.OPERATOR_CENTRE)
    refused = browser.get(page)
    assert refused.status_code == 403
    assert "den kører på: Bank" in text_of(refused)


def test_a_start_without_a_document_is_told_at_the_field(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    data = {"user_id": "nem1", "document_kind": ""}
    answer = post_form(browser, "/console/migrations", "/console/migrations", **data)
    assert answer.status_code == 422
    assert 'href="#document_kind-passport"' in answer.text
    data = {"user_id": "has space", "document_kind": "passport"}
    answer = post_form(browser, "/console/migrations", "/console/migrations", **data)
    assert answer.status_code == 422
    assert 'href="#user_id"' in answer.text


def test_a_bank_operator_cannot_start_at_the_service_centre(
    browser: TestClient, settings: Settings
) -> None:
    person = add_person(browser)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    data = {"user_id": person.user_id, "document_kind": "passport", "channel": "service_centre"}
    answer = post_form(browser, "/console/migrations", "/console/migrations", **data)
    assert answer.status_code == 403


def test_a_self_service_flow_is_refused_for_viewing_and_every_step(
    browser: TestClient, settings: Settings
) -> None:
    person = add_person(browser)
    started = browser.post("/migrations", json={"user_id": person.user_id})  # no API key
    assert started.status_code == 201, started.text
    flow_id = uuid.UUID(started.json()["id"])
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    page = f"/console/migrations/{flow_id}"
    shown = browser.get(page)
    assert shown.status_code == 403
    assert "ikke kører på din kanal (den kører på: Selvbetjening)" in text_of(shown)
    code = code_for(person.secret, started.json()["index"])
    steps = {
        "prove": {"user_id": person.user_id, "password": PASSWORD, "code": code},
        "confirm": {"person_number": person.person_number, "name": NAME},
        "choose": {"kinds": "code_display"},
        "activate": {"password": NEW_PASSWORD},
        "complete": {},
    }
    csrf = csrf_of(browser.get("/console"))
    for which, data in steps.items():
        answer = browser.post(
            f"{page}/{which}", data={"csrf": csrf, **data}, follow_redirects=False
        )
        assert answer.status_code == 403, which
    with services_of(browser).sessions() as session:
        flow = session.get(MigrationFlow, flow_id)
        assert flow is not None
        assert flow.pending_index is not None  # still waiting for the person's own proof
    refusals = audit(browser, "console.migration_refused")
    assert len(refusals) == 1 + len(steps)
    assert refusals[0].details == {"flow": str(flow_id), "channel": "self_service"}


def test_a_supervisor_opens_assisted_flows_but_not_self_service_ones(
    browser: TestClient, settings: Settings
) -> None:
    person = add_person(browser)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assisted = start(browser, person)
    other = add_person(browser)
    started = browser.post("/migrations", json={"user_id": other.user_id})
    assert started.status_code == 201, started.text
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    assert browser.get(assisted).status_code == 200
    assert browser.get(f"/console/migrations/{started.json()['id']}").status_code == 403
