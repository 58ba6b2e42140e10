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
from tests.unit.server.web.test_console import (
    audit,
    events,
    post_form,
    services_of,
    signed_in,
    told_channel_missing,
)

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


@pytest.mark.parametrize(("lang", "words"), [("da", "Start skiftet"), ("en", "Start the move")])
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
    assert "Skiftet er gennemført" in text_of(done)
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
    assert "det kører på: Bank" in text_of(refused)


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
    assert "ikke kører på din kanal (det kører på: Selvbetjening)" in text_of(shown)
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


def flows(browser: TestClient) -> int:
    with services_of(browser).sessions() as session:
        return len(list(session.scalars(select(MigrationFlow))))


@pytest.mark.parametrize(
    ("lang", "channel"), [("da", ""), ("en", ""), ("da", "self_service"), ("da", "elsewhere")]
)
def test_a_channel_not_chosen_is_told_at_the_field(
    browser: TestClient, settings: Settings, lang: str, channel: str
) -> None:
    """A supervisor who leaves "Hvor er personen?" unchosen (or sends a channel the form does
    not offer) gets the start form again with what was typed, not an error page."""
    person = add_person(browser)
    browser.headers["accept-language"] = lang  # as a browser sends it with every request
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    before = events(browser)
    sent = {"channel": channel} if channel else {}  # an unchosen radio group sends nothing
    data = {"user_id": person.user_id, "document_kind": "driving_licence", **sent}
    answer = post_form(browser, "/console/migrations", "/console/migrations", **data)
    assert events(browser) == before  # nothing done, nothing audited
    told_channel_missing(browser, answer, lang)
    assert f'value="{person.user_id}"' in answer.text
    assert 'value="driving_licence" checked' in answer.text
    assert flows(browser) == 0


def test_the_chosen_channel_is_kept_when_another_field_is_wrong(
    browser: TestClient, settings: Settings
) -> None:
    signed_in(browser, settings, "boss", Role.SUPERVISOR)
    data = {"user_id": "has space", "document_kind": "passport", "channel": "service_centre"}
    answer = post_form(browser, "/console/migrations", "/console/migrations", **data)
    assert answer.status_code == 422
    assert 'value="service_centre" checked' in answer.text


def at_choice(browser: TestClient, settings: Settings) -> str:
    """A bank operator's flow for a new person, proved and confirmed: at the choice."""
    person = add_person(browser)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    page = start(browser, person)
    code = code_for(person.secret, key_number(browser, page))
    assert step(browser, page, "prove", user_id=person.user_id, password=PASSWORD, code=code) == 303
    assert step(browser, page, "confirm", person_number=person.person_number, name=NAME) == 303
    return page


_TICKED = re.compile(r'name="kinds" value="([a-z0-9_]+)" checked')


@pytest.mark.parametrize("kinds", [[], ["magic"], ["code_display", "magic"]])
def test_a_choice_of_no_known_credential_is_told_at_the_field(
    browser: TestClient, settings: Settings, kinds: list[str]
) -> None:
    """Unticking every credential (or sending one the service does not know) is no choice of
    the proposal: the choice again, with the error at its group and nothing ticked for the
    operator."""
    page = at_choice(browser, settings)
    csrf = csrf_of(browser.get(page))
    data = {"csrf": csrf, "kinds": kinds}
    answer = browser.post(f"{page}/choose", data=data, follow_redirects=False)
    assert answer.status_code == 422
    assert '<a href="#kinds-code_display">Vælg de loginmidler, personen skal have.</a>' in (
        answer.text
    )
    assert re.search(r'id="kinds-code_display"[^>]* aria-invalid="true"', answer.text)
    assert _TICKED.findall(answer.text) == [k for k in kinds if k != "magic"]
    assert audit(browser, "migration.flow.chosen") == []


def test_a_refused_choice_is_told_at_the_field_with_the_ticks_kept(
    browser: TestClient, settings: Settings
) -> None:
    page = at_choice(browser, settings)
    data = {"csrf": csrf_of(browser.get(page)), "kinds": ["code_display", "audio_reader"]}
    answer = browser.post(f"{page}/choose", data=data, follow_redirects=False)
    assert answer.status_code == 422
    assert '<a href="#kinds-code_display">Valget kan ikke bruges.' in answer.text
    assert _TICKED.findall(answer.text) == ["code_display", "audio_reader"]
    assert audit(browser, "migration.flow.chosen") == []
