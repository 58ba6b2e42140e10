"""A bank acts only on its own customers, and a person enrolled elsewhere becomes one by logging
in at the bank's desk: the operator begins a desk login, the person completes it through the
ordinary login pages at Substantial (on the operator's screen or their own device), and the
operator's console records them as served at the bank (audited). A login not completed, or
below Substantial, makes no one a customer, and another bank cannot finish it."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from devices.protocol.otp import totp
from server.services.access import Role
from server.services.login.errors import TransactionUnknown
from server.settings import Settings
from server.storage.proofing_repositories import CustomerRepository
from server.storage.tables import DeskLogin
from tests.unit.server.conftest import ORIGIN
from tests.unit.server.people import SEED, seed_person_with_code_display
from tests.unit.server.web.forms import csrf_of, text_of
from tests.unit.server.web.test_console import (
    PERSON,
    TEST_BANK,
    audit,
    new_key,
    post_form,
    services_of,
    signed_in,
)

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test person's password


@pytest.fixture
def phone(browser: TestClient) -> Iterator[TestClient]:
    """The person's own device: another browser on the same service."""
    with TestClient(browser.app, base_url=ORIGIN, raise_server_exceptions=False) as client:
        yield client


def elsewhere_person(browser: TestClient, settings: Settings) -> uuid.UUID:
    """A person enrolled with no proofing at the test bank (no customer of it), who has a
    password and a code display."""
    services = services_of(browser)
    identity_id = seed_person_with_code_display(services.sessions, services.secrets)
    key = new_key(settings, "boss", Role.SUPERVISOR)
    answer = browser.put(
        f"/identities/{identity_id}/password",
        json={"password": PASSWORD},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.text
    return identity_id


def begin(browser: TestClient) -> str:
    """Begin a desk login from the console home; the desk login's console page."""
    answer = post_form(browser, "/console", "/console/desk-logins")
    assert answer.status_code == 303, answer.text
    page = str(answer.headers["location"])
    assert re.fullmatch(r"/console/desk-logins/[0-9a-f-]{36}", page), page
    return page


def log_in(client: TestClient, transaction: str, *, with_code: bool = True) -> Any:
    """The person logs in through the login pages: number, password and (for Substantial)
    the code display's code. The last answer, redirects followed."""
    base = f"/login/{transaction}"
    answer = client.get(base)
    assert answer.status_code == 200, text_of(answer)
    answer = client.post(
        base, data={"csrf": csrf_of(answer), "person_number": PERSON}, follow_redirects=True
    )
    answer = client.post(
        f"{base}/password",
        data={"csrf": csrf_of(answer), "password": PASSWORD},
        follow_redirects=True,
    )
    assert answer.status_code == 200, text_of(answer)
    if with_code:
        answer = client.post(
            f"{base}/code",
            data={"csrf": csrf_of(answer), "code": totp(SEED, time.time())},
            follow_redirects=True,
        )
    return answer


def finish(browser: TestClient, page: str) -> Any:
    return post_form(browser, page, page)


def is_customer(browser: TestClient, identity_id: uuid.UUID, organisation: str) -> bool:
    with services_of(browser).sessions() as session:
        return CustomerRepository(session).is_customer(identity_id, organisation)


def search(browser: TestClient) -> Any:
    return post_form(browser, "/console", "/console/search", person_number=PERSON)


def test_a_person_logging_in_on_the_operators_screen_becomes_the_banks_customer(
    browser: TestClient, settings: Settings
) -> None:
    identity_id = elsewhere_person(browser, settings)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    # Not the bank's customer: the search answers as for a number nobody has.
    assert search(browser).status_code == 404
    assert browser.get(f"/console/people/{identity_id}").status_code == 404

    page = begin(browser)
    transaction = page.rsplit("/", 1)[1]
    shown = browser.get(page)
    assert shown.status_code == 200
    assert f'href="/login/{transaction}"' in shown.text
    assert f"{ORIGIN}/login/{transaction}" in text_of(shown)
    # Nothing to finish before the person has logged in.
    early = finish(browser, page)
    assert early.status_code == 409
    assert "ikke gennemført login" in text_of(early)
    assert not is_customer(browser, identity_id, TEST_BANK)

    # The login pages name the bank's desk; at the end they send the operator's screen back.
    assert "test-bank (ved skranken) beder dig logge på" in text_of(
        browser.get(f"/login/{transaction}")
    )
    done = log_in(browser, transaction)
    assert str(done.url).endswith(page), done.url
    answer = finish(browser, page)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/people/{identity_id}"
    assert is_customer(browser, identity_id, TEST_BANK)
    assert "er nu kunde i din organisation" in text_of(
        browser.get(f"/console/people/{identity_id}")
    )
    assert search(browser).status_code == 303

    [entry] = audit(browser, "customer.logged_in_at_desk")
    assert entry.actor == f"operator_bank:bank-op@{TEST_BANK}"
    assert entry.details == {
        "identity_id": str(identity_id),
        "transaction": transaction,
        "organisation": TEST_BANK,
        "level": "substantial",
    }
    [begun] = audit(browser, "desk_login.begun")
    assert begun.details["organisation"] == TEST_BANK
    with services_of(browser).sessions() as session:
        [row] = session.scalars(select(DeskLogin)).all()
        assert (str(row.transaction_id), row.organisation) == (transaction, TEST_BANK)
    # Finished once: the page is gone, and the same login makes no second record.
    assert browser.get(page).status_code == 404


def test_the_person_logs_in_on_their_own_device(
    browser: TestClient, phone: TestClient, settings: Settings
) -> None:
    identity_id = elsewhere_person(browser, settings)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    page = begin(browser)
    transaction = page.rsplit("/", 1)[1]
    done = log_in(phone, transaction)
    # The person's own device is told they are done; it is not sent into the console.
    assert str(done.url).endswith(f"/login/{transaction}/done"), done.url
    assert "Du er logget på hos test-bank (ved skranken)" in text_of(done)
    assert finish(browser, page).status_code == 303
    assert is_customer(browser, identity_id, TEST_BANK)


def test_a_login_below_substantial_makes_no_customer(
    browser: TestClient, phone: TestClient, settings: Settings
) -> None:
    identity_id = elsewhere_person(browser, settings)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    page = begin(browser)
    log_in(phone, page.rsplit("/", 1)[1], with_code=False)  # the password alone
    refused = finish(browser, page)
    assert refused.status_code == 409
    assert not is_customer(browser, identity_id, TEST_BANK)
    assert audit(browser, "customer.logged_in_at_desk") == []


def test_another_bank_cannot_finish_it(
    browser: TestClient, phone: TestClient, settings: Settings
) -> None:
    identity_id = elsewhere_person(browser, settings)
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    page = begin(browser)
    transaction = uuid.UUID(page.rsplit("/", 1)[1])
    log_in(phone, str(transaction))
    # Another bank's operator: the console page is not theirs, and the service answers as
    # for a login nobody began (its provider id names the other bank's desk).
    signed_in(phone, settings, "other-op", Role.OPERATOR_BANK, organisation="other-bank")
    assert phone.get(page).status_code == 404
    assert post_form(phone, "/console", page).status_code == 404
    services = services_of(browser)
    other = services.api_keys.authenticate(
        new_key(settings, "other-op-2", Role.OPERATOR_BANK, organisation="other-bank")
    )
    assert other is not None
    with services.sessions() as session, pytest.raises(TransactionUnknown):
        services.desk_logins(session, other).finish(transaction)
    assert not is_customer(browser, identity_id, "other-bank")
    # The bank that began it still finishes it.
    assert finish(browser, page).status_code == 303
    assert is_customer(browser, identity_id, TEST_BANK)


def test_only_a_banks_operator_is_offered_it(browser: TestClient, settings: Settings) -> None:
    signed_in(browser, settings, "bank-op", Role.OPERATOR_BANK)
    assert 'action="/console/desk-logins"' in browser.get("/console").text
    signed_in(browser, settings, "centre-op", Role.OPERATOR_CENTRE)
    assert 'action="/console/desk-logins"' not in browser.get("/console").text
