"""The migration wizard's errors: each shown at its field and in the summary, with the
status the API gives it, in the browser's language; the failure counters of a refused step
are committed (the page answers, it does not raise), and what is left is said."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import cast

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.app import create_app
from server.services.migration.flow_sweep import sweep_abandoned
from server.settings import Settings
from server.storage.migration_tables import LegacyUser, MigrationFlow
from tests.unit.server.conftest import ORIGIN
from tests.unit.server.web.forms import text_of
from tests.unit.server.web.test_migrate_support import (
    NEW_PASSWORD,
    Person,
    Wizard,
    add_person,
    code_of,
    key_number,
    stock_token,
)

WRONG_PASSWORD = "not the password"  # noqa: S105 - a test password
SHORT_PASSWORD = "kort"  # noqa: S105 - a test password


def _services(http: TestClient) -> object:
    return cast(FastAPI, http.app).state.services


def legacy_failures(http: TestClient, user_id: str) -> int:
    """The failures naming ``user_id`` from the test client's address, in its throttle."""
    services = _services(http)
    with services.sessions() as session:  # type: ignore[attr-defined]
        return int(services.legacy_store(session, "test").failures_counted(user_id, "testclient"))


def flow_failures(http: TestClient, flow: str) -> int:
    with _services(http).sessions() as session:  # type: ignore[attr-defined]
        row = session.get(MigrationFlow, uuid.UUID(flow))
        assert row is not None
        return int(row.failures)


def field_has_error(page: httpx.Response, field_id: str) -> bool:
    """The field is marked invalid, its error is tied to it, and the summary links to it."""
    field = re.search(rf'<input id="{field_id}"[^>]*>', page.text)
    return (
        field is not None
        and 'aria-invalid="true"' in field.group(0)
        and f"{field_id}-error" in field.group(0)
        and f'href="#{field_id}"' in page.text
    )


def at_confirm(browser: TestClient, person: Person) -> Wizard:
    wizard = Wizard(browser)
    wizard.start(person)
    wizard.prove(person)
    return wizard


def test_a_wrong_password_is_told_at_the_field_with_a_new_key_number_and_counted(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    wizard = Wizard(browser)
    wizard.start(person)
    wizard.prove(person, password=WRONG_PASSWORD)
    assert wizard.page.status_code == 401
    assert field_has_error(wizard.page, "password")
    text = text_of(wizard.page)
    assert "Fejl:" in text  # the title says there is an error
    assert "Bruger-id, adgangskode eller kode er forkert" in text
    assert "Efter 5 forkerte forsøg fra denne forbindelse" in text
    assert legacy_failures(client, person.user_id) == 1  # committed with the answer
    # The page now shows the new key number; its code proves.
    wizard.prove(person)
    assert wizard.page.status_code == 200
    assert "Bekræft dine oplysninger" in text_of(wizard.page)


def test_a_user_id_nobody_has_gets_the_same_answer(browser: TestClient, client: TestClient) -> None:
    wizard = Wizard(browser)
    ghost = Person("nobody-here", "010101-0000", b"\x00" * 32)
    wizard.start(ghost)
    assert key_number(wizard.page)
    wizard.prove(ghost, code="123456")
    assert wizard.page.status_code == 401
    assert field_has_error(wizard.page, "password")


def test_too_many_failures_slow_this_connection_and_lock_nobody(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    wizard = Wizard(browser)
    wizard.start(person)
    for _ in range(5):
        wizard.prove(person, password=WRONG_PASSWORD)
    wizard.prove(person)
    assert wizard.page.status_code == 429
    assert "For mange forsøg fra denne forbindelse" in text_of(wizard.page)
    with _services(client).sessions() as session:  # type: ignore[attr-defined]
        user = session.get(LegacyUser, person.user_id)
        assert user is not None
        assert user.locked_until is None


def test_an_empty_proof_is_refused_field_by_field_in_english(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    wizard = Wizard(browser)
    wizard.english()
    wizard.start(person)
    wizard.post(
        f"/migrate/{wizard.flow}/prove", {"user_id": person.user_id, "password": "", "code": "abc"}
    )
    assert wizard.page.status_code == 422
    assert field_has_error(wizard.page, "password")
    assert field_has_error(wizard.page, "code")
    assert "Enter your password for the old eID." in text_of(wizard.page)
    assert legacy_failures(client, person.user_id) == 0  # nothing was tried


def test_a_start_without_a_user_id_is_refused_at_the_field(browser: TestClient) -> None:
    wizard = Wizard(browser)
    answer = wizard.post("/migrate", {"user_id": ""})
    assert answer.status_code == 422
    assert field_has_error(wizard.page, "user_id")
    assert "Skriv dit bruger-id" in text_of(wizard.page)


def test_a_wrong_cpr_number_says_how_many_tries_are_left_then_wants_the_proof(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    wizard = at_confirm(browser, person)
    wizard.confirm("010101-1234")
    assert wizard.page.status_code == 422
    assert field_has_error(wizard.page, "person_number")
    assert "CPR-nummeret passer ikke" in text_of(wizard.page)
    assert "Du kan prøve 2 gange mere" in text_of(wizard.page)
    assert flow_failures(client, wizard.flow) == 1  # committed with the answer
    wizard.confirm("010101-1234")
    assert "Du kan prøve én gang mere" in text_of(wizard.page)
    wizard.confirm("010101-1234")
    # The third: the legacy proof is due again, with a new key number.
    assert "Vis, at det er dig" in text_of(wizard.page)
    assert "for mange forkerte forsøg" in text_of(wizard.page)
    wizard.prove(person)
    assert "Bekræft dine oplysninger" in text_of(wizard.page)
    wizard.confirm(person.person_number)
    assert "Vælg, hvordan du vil logge på" in text_of(wizard.page)


def test_a_right_cpr_number_ends_the_run_of_failures(
    browser: TestClient, client: TestClient
) -> None:
    """One mistyped CPR number, then the right one: a wrong activation code after that is
    the first failure in a row, not the second."""
    person = add_person(client)
    token = stock_token(client)
    wizard = at_confirm(browser, person)
    wizard.confirm("010101-1234")
    assert "Du kan prøve 2 gange mere" in text_of(wizard.page)
    wizard.confirm(person.person_number)
    wizard.choose("code_display", "password")
    good = code_of(token)
    wizard.activate(token.serial, f"{(int(good) + 1) % 1000000:06d}")
    assert field_has_error(wizard.page, "code")
    assert "Du kan prøve 2 gange mere" in text_of(wizard.page)
    assert flow_failures(client, wizard.flow) == 1


def test_a_malformed_cpr_number_is_refused_without_counting(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    wizard = at_confirm(browser, person)
    wizard.confirm("12345")
    assert wizard.page.status_code == 400  # the API's status for a malformed person number
    assert field_has_error(wizard.page, "person_number")
    assert "ti cifre" in text_of(wizard.page)
    assert flow_failures(client, wizard.flow) == 0


def test_impossible_choices_are_explained(browser: TestClient, client: TestClient) -> None:
    person = add_person(client)
    wizard = at_confirm(browser, person)
    wizard.confirm(person.person_number)
    for kinds, words in (
        ((), "Vælg mindst én"),
        (("code_display", "audio_reader"), "enten en kodeviser eller en kodeoplæser"),
        (("password",), "En adgangskode alene er ikke nok"),
    ):
        wizard.choose(*kinds)
        assert wizard.page.status_code == 422, kinds
        assert words in text_of(wizard.page)
        assert 'href="#kind-code_display"' in wizard.page.text
        assert 'aria-invalid="true"' in wizard.page.text


def test_activation_errors_are_told_at_their_fields(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    token = stock_token(client)
    wizard = at_confirm(browser, person)
    wizard.confirm(person.person_number)
    wizard.choose("code_display", "password")
    # Nothing typed: each field says what it needs.
    wizard.post(f"/migrate/{wizard.flow}/activate", {"serial": "", "code": "", "password": ""})
    assert wizard.page.status_code == 422
    for field_id in ("serial", "code", "password"):
        assert field_has_error(wizard.page, field_id)
    # A serial nobody has.
    wizard.activate("NO-SUCH-SERIAL", "123456")
    assert field_has_error(wizard.page, "serial")
    assert "Du kan prøve 2 gange mere" in text_of(wizard.page)
    # A weak password: not counted as a guess.
    wizard.activate(token.serial, code_of(token), password=SHORT_PASSWORD)
    assert field_has_error(wizard.page, "password")
    assert "mindst 12 tegn" in text_of(wizard.page)
    assert flow_failures(client, wizard.flow) == 1
    # A wrong code.
    good = code_of(token)
    wizard.activate(token.serial, f"{(int(good) + 1) % 1000000:06d}")
    assert field_has_error(wizard.page, "code")
    assert "Koden blev ikke godkendt" in text_of(wizard.page)
    assert flow_failures(client, wizard.flow) == 2
    wizard.activate(token.serial, code_of(token), password=NEW_PASSWORD)
    assert "Tjek og afslut" in text_of(wizard.page)


def test_a_person_who_moved_already_is_told_so_after_the_proof(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    token = stock_token(client)
    wizard = at_confirm(browser, person)
    wizard.confirm(person.person_number)
    wizard.choose("code_display", "password")
    wizard.activate(token.serial, code_of(token))
    wizard.complete()
    again = Wizard(browser)
    again.start(person)
    again.prove(person)
    assert again.page.status_code == 409
    assert "Du har allerede skiftet" in text_of(again.page)


def test_a_paused_flow_asks_to_start_again_and_continues_where_it_stopped(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    wizard = at_confirm(browser, person)
    services = _services(client)
    with services.sessions() as session, session.begin():  # type: ignore[attr-defined]
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=60)
        assert sweep_abandoned(session, idle=dt.timedelta(days=30), now=later) == 1
    page = browser.get(f"/migrate/{wizard.flow}")
    assert "Start igen for at fortsætte" in text_of(page)
    wizard.page = page
    wizard.confirm(person.person_number)  # the old form, sent anyway
    assert wizard.page.status_code == 409
    assert field_has_error(wizard.page, "user_id")
    wizard.start(person)
    wizard.prove(person)
    assert "Bekræft dine oplysninger" in text_of(wizard.page)


def test_a_step_out_of_order_shows_the_step_that_is_due(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    wizard = at_confirm(browser, person)
    answer = wizard.complete()
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/migrate/{wizard.flow}"
    text = text_of(wizard.page)
    assert "Skiftet var gået videre til et andet trin" in text
    assert "Bekræft dine oplysninger" in text


def test_a_flow_id_that_is_not_a_uuid_is_an_error_page(browser: TestClient) -> None:
    answer = browser.get("/migrate/not-a-flow")
    assert answer.status_code in (400, 404, 422)
    assert "<h1>" in answer.text


def at_enrol(browser: TestClient, client: TestClient, kinds: tuple[str, ...]) -> Wizard:
    person = add_person(client)
    token = stock_token(client)
    wizard = at_confirm(browser, person)
    wizard.confirm(person.person_number)
    wizard.choose(*kinds)
    wizard.activate(token.serial, code_of(token))
    return wizard


def test_a_smartcard_not_set_up_yet_is_told_and_the_choice_can_change(
    browser: TestClient, client: TestClient
) -> None:
    wizard = at_enrol(browser, client, ("code_display", "piv", "password"))
    text = text_of(wizard.page)
    assert "Sæt din sikkerhedsnøgle eller dit chipkort op" in text
    assert "chipkortprogrammet" in text
    assert "data-webauthn" not in wizard.page.text  # no security key was chosen
    wizard.post(f"/migrate/{wizard.flow}/record", {})
    assert wizard.page.status_code == 409
    assert "Vi kan endnu ikke se" in text_of(wizard.page)
    assert 'href="#record"' in wizard.page.text
    # Finishing before it is set up is not possible either.
    wizard.complete()
    assert wizard.page.status_code == 409
    assert "Ikke alt, hvad du har valgt, er sat op" in text_of(wizard.page)
    # Choose again without the smartcard: nothing is left to activate, then finish.
    wizard.page = browser.get(f"/migrate/{wizard.flow}/choose")
    assert 'value="piv" aria-describedby="kind-piv-hint" checked' in wizard.page.text
    wizard.choose("code_display", "password")
    assert "Det, du har valgt, er allerede sat op" in text_of(wizard.page)
    wizard.post(f"/migrate/{wizard.flow}/activate", {})
    wizard.complete()
    assert "Du har skiftet til det nye eID" in text_of(wizard.page)


def test_a_security_key_answer_that_is_not_one_is_refused_at_the_key(
    browser: TestClient, client: TestClient
) -> None:
    wizard = at_enrol(browser, client, ("code_display", "fido2", "password"))
    assert 'data-webauthn="create"' in wizard.page.text
    assert 'class="webauthn-options"' in wizard.page.text
    wizard.post(f"/migrate/{wizard.flow}/security-key", {"credential": "{}"})
    assert wizard.page.status_code == 422
    assert "Sikkerhedsnøglen blev ikke sat op" in text_of(wizard.page)
    assert 'href="#security-key"' in wizard.page.text
    wizard.post(f"/migrate/{wizard.flow}/security-key", {"credential": "not json"})
    assert wizard.page.status_code == 422


def test_the_choice_page_is_not_offered_before_the_details_are_confirmed(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    wizard = at_confirm(browser, person)
    answer = browser.get(f"/migrate/{wizard.flow}/choose", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/migrate/{wizard.flow}"


def test_after_the_old_eid_closed_the_start_says_so(settings: Settings, client: TestClient) -> None:
    person = add_person(client)
    closed = settings.model_copy(update={"legacy_shutdown_date": dt.date(2020, 1, 1)})
    with TestClient(create_app(closed), base_url=ORIGIN, raise_server_exceptions=False) as http:
        wizard = Wizard(http)
        answer = wizard.start_refused(person)
        assert answer.status_code == 410
        assert field_has_error(wizard.page, "user_id")
        assert "Det gamle eID er lukket" in text_of(wizard.page)


def test_the_activate_step_tells_every_problem_at_once_and_counts_none(
    browser: TestClient, client: TestClient
) -> None:
    person = add_person(client)
    wizard = at_confirm(browser, person)
    wizard.confirm(person.person_number)
    wizard.choose("code_display", "password")
    wizard.post(
        f"/migrate/{wizard.flow}/activate",
        {"serial": "", "code": "12a456", "password": SHORT_PASSWORD},
    )
    assert wizard.page.status_code == 422
    for field_id in ("serial", "code", "password"):
        assert field_has_error(wizard.page, field_id), field_id
    text = text_of(wizard.page)
    assert "Skriv serienummeret" in text
    assert "Koden består kun af cifre" in text
    assert "mindst 12 tegn" in text
    links = re.findall(r'<li><a href="#([a-z_]+)">', wizard.page.text)
    assert links == ["serial", "code", "password"]
    assert flow_failures(client, wizard.flow) == 0  # nothing was tried
