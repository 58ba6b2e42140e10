"""The migration wizard's pages: the whole move by the citizen alone, one step per page with
its progress, resuming from the link in a fresh browser, both languages, and CSRF."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.unit.server.conftest import ORIGIN
from tests.unit.server.web.forms import lang_of, text_of
from tests.unit.server.web.test_migrate_support import (
    NAME,
    Wizard,
    add_person,
    code_of,
    key_number,
    stock_token,
)


def test_the_start_page_says_what_is_needed_in_danish(browser: TestClient) -> None:
    answer = browser.get("/migrate")
    assert answer.status_code == 200
    assert lang_of(answer) == "da"
    text = text_of(answer)
    for needed in ("bruger-id", "adgangskode", "nøglekort", "CPR-nummer", "Trin 1 af 6"):
        assert needed in text
    assert 'autocomplete="username"' in answer.text


def test_the_start_page_in_english(browser: TestClient) -> None:
    answer = browser.get("/migrate", headers={"accept-language": "en"})
    assert lang_of(answer) == "en"
    assert "Step 1 of 6" in text_of(answer)
    assert "<title>Move from the old eID to the new eID" in answer.text


def test_a_whole_move_one_step_per_page(browser: TestClient, client: TestClient) -> None:
    person = add_person(client)
    token = stock_token(client)
    wizard = Wizard(browser)
    wizard.start(person)
    page = text_of(wizard.page)
    assert "Trin 2 af 6" in page
    assert f"/migrate/{wizard.flow}" in page  # the resume link, shown plainly
    assert 'autocomplete="one-time-code"' in wizard.page.text
    assert 'autocomplete="current-password"' in wizard.page.text

    wizard.prove(person)
    page = text_of(wizard.page)
    assert "Trin 3 af 6" in page
    assert NAME in page
    assert person.person_number not in page  # only the masked number is shown

    wizard.confirm(person.person_number)
    assert "Trin 4 af 6" in text_of(wizard.page)
    # The proposal is ticked: a code display and a password.
    assert (
        'value="code_display" aria-describedby="kind-code_display-hint" checked' in wizard.page.text
    )
    assert 'value="password" aria-describedby="kind-password-hint" checked' in wizard.page.text
    assert "<legend>" in wizard.page.text

    wizard.choose("code_display", "password")
    assert "Trin 5 af 6" in text_of(wizard.page)
    assert 'autocomplete="new-password"' in wizard.page.text

    wizard.activate(token.serial, code_of(token))
    page = text_of(wizard.page)
    assert "Trin 6 af 6" in page
    assert "Kodeviser, Adgangskode" in page

    wizard.complete()
    assert wizard.page.status_code == 200
    page = text_of(wizard.page)
    assert "Du har skiftet til det nye eID" in page
    # Shown again (a retried link) it stays done.
    assert "Du har skiftet" in text_of(browser.get(f"/migrate/{wizard.flow}"))


def test_the_shutdown_date_is_told_when_settings_have_it(
    settings: Settings, client: TestClient
) -> None:
    import datetime as dt

    from server.app import create_app

    dated = settings.model_copy(update={"legacy_shutdown_date": dt.date(2027, 3, 31)})
    person = add_person(client)
    token = stock_token(client)
    with TestClient(create_app(dated), base_url=ORIGIN, raise_server_exceptions=False) as http:
        wizard = Wizard(http)
        wizard.start(person)
        wizard.prove(person)
        wizard.confirm(person.person_number)
        wizard.choose("code_display", "password")
        wizard.activate(token.serial, code_of(token))
        assert "31.03.2027" in text_of(wizard.page)


def test_resuming_from_the_link_in_a_fresh_browser_lands_on_the_step(
    settings: Settings, client: TestClient
) -> None:
    from server.app import create_app

    person = add_person(client)
    with TestClient(create_app(settings), base_url=ORIGIN) as first:
        wizard = Wizard(first)
        wizard.start(person)
        wizard.prove(person)
        wizard.confirm(person.person_number)
        flow = wizard.flow
    with TestClient(create_app(settings), base_url=ORIGIN) as fresh:
        answer = fresh.get(f"/migrate/{flow}", headers={"accept-language": "en"})
        assert answer.status_code == 200
        text = text_of(answer)
        assert "Choose how you will log in" in text
        assert "Step 4 of 6" in text


def test_resuming_before_the_proof_asks_for_the_user_id_first(
    settings: Settings, client: TestClient
) -> None:
    from server.app import create_app

    person = add_person(client)
    with TestClient(create_app(settings), base_url=ORIGIN) as first:
        wizard = Wizard(first)
        wizard.start(person)
        flow = wizard.flow
    with TestClient(create_app(settings), base_url=ORIGIN) as fresh:
        wizard = Wizard(fresh)
        wizard.page = fresh.get(f"/migrate/{flow}")
        assert "Fortsæt skiftet" in text_of(wizard.page)
        answer = wizard.start(person)  # the same user id finds the same flow
        assert wizard.flow == flow, answer.headers
        assert key_number(wizard.page)
        wizard.prove(person)
        assert "Bekræft dine oplysninger" in text_of(wizard.page)


def test_an_audio_reader_is_activated_with_spoken_and_written_guidance(
    browser: TestClient, client: TestClient
) -> None:
    from firmware_sim.tokens.otp_token import Model

    person = add_person(client)
    token = stock_token(client, Model.AUDIO)
    wizard = Wizard(browser)
    wizard.start(person)
    wizard.prove(person)
    wizard.confirm(person.person_number)
    wizard.choose("audio_reader", "password")
    assert (
        '<audio controls preload="none" src="/speech/da/guide.audio_reader.wav"' in wizard.page.text
    )
    wizard.activate(token.serial, code_of(token))
    assert "Kodeoplæser, Adgangskode" in text_of(wizard.page)


@pytest.mark.parametrize("csrf", [None, "wrong"])
def test_a_step_without_the_csrf_token_is_refused(
    browser: TestClient, client: TestClient, csrf: str | None
) -> None:
    person = add_person(client)
    wizard = Wizard(browser)
    wizard.start(person)
    data = {"user_id": person.user_id, "password": "x", "code": "123456"}
    if csrf is not None:
        data["csrf"] = csrf
    answer = browser.post(f"/migrate/{wizard.flow}/prove", data=data, follow_redirects=False)
    assert answer.status_code == 403
    start = browser.post("/migrate", data={"user_id": person.user_id}, follow_redirects=False)
    assert start.status_code == 403


def test_the_done_page_says_how_to_log_in_now_and_where_devices_come_from(
    browser: TestClient, client: TestClient
) -> None:
    """The person came with a legacy user id: the new eID logs in with the CPR-nummer."""
    person = add_person(client)
    token = stock_token(client)
    wizard = Wizard(browser)
    wizard.start(person)
    wizard.prove(person)
    wizard.confirm(person.person_number)
    wizard.choose("code_display", "password")
    activate = text_of(wizard.page)
    assert "Har du ikke en kodeviser endnu? Du kan få en i et borgerservicecenter" in activate
    wizard.activate(token.serial, code_of(token))
    wizard.complete()
    done = text_of(wizard.page)
    assert "Sådan logger du på nu" in done
    assert "dit CPR-nummer, ikke dit gamle bruger-id" in done
    assert "spær den under Dine loginmidler" in done
