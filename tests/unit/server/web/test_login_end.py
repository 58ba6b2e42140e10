"""How a login's pages end, without script: back to the provider by a link (never a redirect
that answers a form, which the CSP's form-action refuses across origins), cancelled by the
person (closed, audited, the provider told ``error=access_denied``), started again after
its time or the browser's session ran out (``error=login_expired``), more time asked for in
the background, and the provider named by its display name."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from devices.protocol.otp import totp
from server.app import create_app
from server.services.access import ApiKeys, Role
from server.services.secretbox import SecretBox
from server.settings import Settings
from server.storage.tables import AuditEntry, AuthTransaction
from server.storage.web_tables import WebSession
from tests.unit.server.conftest import ORIGIN, make_key
from tests.unit.server.people import SEED, seed_person_with_code_display
from tests.unit.server.web.forms import csrf_of, login_of, self_service_login, text_of
from tests.unit.server.web.test_login import (
    PASSWORD,
    PERSON,
    PROVIDER,
    RETURN,
    begin,
    complete,
    identify,
    post,
)


@pytest.fixture
def app_and_key(settings: Settings) -> tuple[Any, dict[str, str]]:
    return create_app(settings), make_key(settings, PROVIDER, Role.SUPERVISOR, Role.PROVIDER)


@pytest.fixture
def browser(app_and_key: tuple[Any, dict[str, str]], settings: Settings) -> Iterator[TestClient]:
    """A browser without script, on an app holding one person with a code display and a
    password (as test_login's)."""
    app, key = app_and_key
    with TestClient(app, base_url=ORIGIN, raise_server_exceptions=False) as client:
        identity = seed_person_with_code_display(
            app.state.services.sessions, SecretBox.from_file(settings.kek_file)
        )
        answer = client.put(
            f"/identities/{identity}/password", json={"password": PASSWORD}, headers=key
        )
        assert answer.status_code == 200, answer.text
        yield client


@pytest.fixture
def key(app_and_key: tuple[Any, dict[str, str]]) -> dict[str, str]:
    return app_and_key[1]


@pytest.fixture
def other_browser(app_and_key: tuple[Any, dict[str, str]]) -> Iterator[TestClient]:
    with TestClient(app_and_key[0], base_url=ORIGIN, raise_server_exceptions=False) as client:
        yield client


def audit(client: TestClient, event: str) -> list[AuditEntry]:
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        return list(session.scalars(select(AuditEntry).where(AuditEntry.event == event)))


def row(client: TestClient, transaction: str) -> AuthTransaction:
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        return session.scalars(
            select(AuthTransaction).where(AuthTransaction.id == uuid.UUID(transaction))
        ).one()


def expire(client: TestClient, transaction: str) -> None:
    """The login's time runs out."""
    with client.app.state.services.sessions() as session, session.begin():  # type: ignore[attr-defined]
        session.execute(
            update(AuthTransaction)
            .where(AuthTransaction.id == uuid.UUID(transaction))
            .values(expires_at=AuthTransaction.created_at)
        )


def end_sessions(client: TestClient) -> None:
    """Every browser session ends (as after 20 minutes without a request)."""
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    with client.app.state.services.sessions() as session, session.begin():  # type: ignore[attr-defined]
        session.execute(update(WebSession).values(expires_at=long_ago))


def cancel(client: TestClient, transaction: str) -> Any:
    """Press "Afbryd ..." on the login's first page."""
    return client.post(
        f"/login/{transaction}/cancel",
        data={"csrf": csrf_of(client.get(f"/login/{transaction}"))},
        follow_redirects=False,
    )


# --- done ---


def test_the_end_of_a_provider_login_is_a_page_linking_back(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key, "substantial", return_url=RETURN)
    identify(browser, transaction)
    post(browser, f"/login/{transaction}/password", password=PASSWORD)
    post(browser, f"/login/{transaction}/code", code=totp(SEED, time.time()))
    done = browser.get(f"/login/{transaction}/done", follow_redirects=False)
    assert done.status_code == 200
    assert "location" not in done.headers
    assert "form-action 'self'" in done.headers["content-security-policy"]  # unchanged
    back = f"https://sp.example/back?x=1&amp;transaction={transaction}"
    assert f'<a class="button" href="{back}" data-follow>' in done.text
    assert "Du sendes nu tilbage til https://sp.example" in text_of(done)
    assert complete(browser, key, transaction).status_code == 200


# --- cancel ---


def test_cancel_closes_the_login_and_goes_back_with_access_denied(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key, "substantial", return_url=RETURN)
    identify(browser, transaction)
    page = browser.get(f"/login/{transaction}/choose")
    assert "Afbryd og gå tilbage til https://sp.example" in text_of(page)

    answer = cancel(browser, transaction)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/login/{transaction}/cancelled"
    assert row(browser, transaction).state == "failed"
    (entry,) = audit(browser, "authentication.cancelled")
    assert entry.details == {"transaction": transaction, "provider": PROVIDER}
    assert entry.actor == "web"

    left = browser.get(f"/login/{transaction}/cancelled")
    assert left.status_code == 200
    assert "Du har afbrudt login" in text_of(left)
    back = f"https://sp.example/back?x=1&amp;error=access_denied&amp;transaction={transaction}"
    assert f'href="{back}" data-follow' in left.text
    # The provider cannot complete it; its pages say it has ended and lead back.
    assert complete(browser, key, transaction).status_code == 409
    again = browser.get(f"/login/{transaction}/choose")
    assert again.status_code == 409
    assert "Dette login hos https://sp.example er afsluttet" in text_of(again)
    restart = browser.get(f"/login/{transaction}/restart", follow_redirects=False)
    assert restart.headers["location"] == (
        f"https://sp.example/back?x=1&error=access_denied&transaction={transaction}"
    )


def test_cancel_needs_the_csrf_token_and_the_browser_that_opened_the_login(
    browser: TestClient, other_browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key, return_url=RETURN)
    browser.get(f"/login/{transaction}")
    forged = browser.post(f"/login/{transaction}/cancel", data={}, follow_redirects=False)
    assert forged.status_code == 403
    elsewhere = other_browser.post(
        f"/login/{transaction}/cancel",
        data={"csrf": csrf_of(other_browser.get("/"))},
        follow_redirects=False,
    )
    assert elsewhere.status_code == 409
    assert row(browser, transaction).state == "started"
    assert audit(browser, "authentication.cancelled") == []
    # Another browser has no way back page either.
    assert other_browser.get(f"/login/{transaction}/cancelled").status_code == 404


def test_cancel_without_a_return_url_says_the_window_may_close(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key)
    assert "Afbryd login" in text_of(browser.get(f"/login/{transaction}"))
    cancel(browser, transaction)
    left = browser.get(f"/login/{transaction}/cancelled")
    assert "Du kan lukke dette vindue" in text_of(left)
    assert "data-follow" not in left.text


def test_cancelling_the_self_service_sign_in_goes_to_the_front_page(browser: TestClient) -> None:
    first = browser.get("/account/login")
    # Before the CPR-nummer is sent there is no login to cancel: the way back is a link.
    assert '<a class="button button--secondary" href="/">' in first.text
    assert "Afbryd og gå tilbage til akkreditivs selvbetjening" in text_of(first)
    transaction = login_of(self_service_login(browser, PERSON))
    page = browser.get(f"/login/{transaction}/choose")
    assert "Afbryd og gå tilbage til akkreditivs selvbetjening" in text_of(page)
    answer = cancel(browser, transaction)
    assert answer.headers["location"] == "/"
    assert "Du har afbrudt login" in text_of(browser.get("/"))
    assert row(browser, transaction).state == "failed"


# --- time up, and starting again ---


def test_an_expired_login_leads_back_to_the_provider_to_start_again(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key, return_url=RETURN)
    browser.get(f"/login/{transaction}")
    expire(browser, transaction)
    page = browser.get(f"/login/{transaction}")
    assert page.status_code == 410
    assert "Tiden til dit login hos https://sp.example er gået" in text_of(page)
    assert f'href="/login/{transaction}/restart"' in page.text
    assert "Gå tilbage til https://sp.example, og start forfra" in text_of(page)
    restart = browser.get(f"/login/{transaction}/restart", follow_redirects=False)
    assert restart.status_code == 303
    assert restart.headers["location"] == (
        f"https://sp.example/back?x=1&error=login_expired&transaction={transaction}"
    )
    # A form sent after the end gets the same page, and nothing of it is used.
    late = browser.post(
        f"/login/{transaction}",
        data={"csrf": csrf_of(page), "person_number": "010190-1234"},
        follow_redirects=False,
    )
    assert late.status_code == 410
    assert row(browser, transaction).state == "started"


def test_restart_of_a_login_that_can_go_on_goes_to_it(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key, return_url=RETURN)
    browser.get(f"/login/{transaction}")
    restart = browser.get(f"/login/{transaction}/restart", follow_redirects=False)
    assert restart.headers["location"] == f"/login/{transaction}"


def test_a_self_service_sign_in_starts_again_on_its_own(browser: TestClient) -> None:
    transaction = login_of(self_service_login(browser, PERSON, "?level=high"))
    expire(browser, transaction)
    page = browser.get(f"/login/{transaction}")
    assert "Log på igen" in text_of(page)
    restart = browser.get(f"/login/{transaction}/restart", follow_redirects=False)
    assert restart.headers["location"] == "/account/login?next=%2Faccount&level=high"


def test_when_the_session_ended_the_login_says_so_and_leads_back(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key, return_url=RETURN)
    identify(browser, transaction)
    form = browser.get(f"/login/{transaction}/password")
    end_sessions(browser)

    # A form of the ended session: refused as such, with the way to start again.
    sent = browser.post(
        f"/login/{transaction}/password",
        data={"csrf": csrf_of(form), "password": PASSWORD},
        follow_redirects=False,
    )
    assert sent.status_code == 403
    assert "Siden var lukket af hensyn til din sikkerhed" in text_of(sent)
    assert f'href="/login/{transaction}/restart"' in sent.text
    assert audit(browser, "authentication.factor") == []  # the password was not tried

    page = browser.get(f"/login/{transaction}/password")
    assert page.status_code == 410
    assert "Der skete ikke noget på siden i for lang tid" in text_of(page)
    restart = browser.get(f"/login/{transaction}/restart", follow_redirects=False)
    assert restart.headers["location"] == (
        f"https://sp.example/back?x=1&error=login_expired&transaction={transaction}"
    )


def test_another_browser_is_not_told_the_session_ended(
    browser: TestClient, other_browser: TestClient, key: dict[str, str]
) -> None:
    """Only the browser whose session opened the login hears that its session ended."""
    transaction = begin(browser, key)
    browser.get(f"/login/{transaction}")
    other_browser.get("/")
    end_sessions(other_browser)
    assert other_browser.get(f"/login/{transaction}").status_code == 409


# --- more time ---


def test_more_time_in_the_background_answers_both_ends(
    browser: TestClient, key: dict[str, str], settings: Settings
) -> None:
    transaction = begin(browser, key)
    page = browser.get(f"/login/{transaction}")
    assert f'data-login-extend="/login/{transaction}/extend"' in page.text
    before = row(browser, transaction).expires_at
    answer = browser.post(
        f"/login/{transaction}/extend",
        data={"csrf": csrf_of(page)},
        headers={"accept": "application/json"},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert dt.datetime.fromisoformat(body["expires_at"]) == before + dt.timedelta(
        seconds=settings.transaction_lifetime_s
    )
    assert body["extended"] is True
    assert body["can_extend"] is True
    assert dt.datetime.fromisoformat(body["session_expires_at"]) > dt.datetime.now(dt.UTC)


def test_the_pages_carry_their_time_limits(browser: TestClient, key: dict[str, str]) -> None:
    transaction = begin(browser, key, return_url=RETURN)
    page = browser.get(f"/login/{transaction}").text
    found = re.search(r'data-login-expires="([^"]+)" data-login-warn="(\d+)"', page)
    assert found is not None
    assert dt.datetime.fromisoformat(found.group(1)) == row(browser, transaction).expires_at
    assert found.group(2) == "120"
    assert 'data-login-text="Af hensyn til din sikkerhed lukker dit login kl. {time}' in page
    assert f'<a class="button" href="/login/{transaction}/restart">' in page


# --- whom the login is for ---


def test_a_provider_is_shown_by_its_display_name(browser: TestClient, settings: Settings) -> None:
    keys = ApiKeys(settings.api_keys_file)
    _, secret = keys.add("https://borger.example", [Role.PROVIDER], display_name="Borger.dk")
    named = {"Authorization": f"Bearer {secret}"}
    transaction = begin(browser, named, "substantial", return_url="https://borger.example/cb")
    text = text_of(browser.get(f"/login/{transaction}"))
    assert "Borger.dk beder dig logge på" in text
    assert "Afbryd og gå tilbage til Borger.dk" in text
    assert "https://borger.example" not in text
    # The smartcard's program is told the same name (and the id).
    other = begin(browser, named, "high")
    assert (
        browser.post(
            f"/authentications/{other}/identify", json={"person_number": "010190-1234"}
        ).status_code
        == 200
    )
    begun = browser.post(f"/authentications/{other}/piv/begin")
    assert begun.status_code == 200, begun.text
    assert begun.json()["service_provider_name"] == "Borger.dk"
    assert begun.json()["service_provider"] == "https://borger.example"


def test_a_provider_without_a_display_name_is_shown_by_its_id(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key)
    assert f"{PROVIDER} beder dig logge på" in text_of(browser.get(f"/login/{transaction}"))


def test_the_session_idle_limit_and_the_warning_are_settings(settings: Settings) -> None:
    short = settings.model_copy(update={"session_idle_s": 90, "timeout_warning_s": 30})
    with TestClient(create_app(short), base_url=ORIGIN) as client:
        page = client.get("/help").text
    found = re.search(r'data-session-expires="([^"]+)" data-session-warn="(\d+)"', page)
    assert found is not None
    left = dt.datetime.fromisoformat(found.group(1)) - dt.datetime.now(dt.UTC)
    assert 80 < left.total_seconds() <= 90
    assert found.group(2) == "30"
