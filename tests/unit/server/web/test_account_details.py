"""Self-service pages saying what is true: the block page's reasons for each kind (blocked for
now only where it can be lifted), the replace page's promise of a serial field only where it
shows one, the password page telling every problem at once, and when the password was last
used."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.domain.model import CredentialKind, CredentialState
from server.services.access import Role
from server.settings import Settings
from server.storage.repositories import CredentialRepository
from server.storage.tables import Credential
from tests.unit.server.conftest import make_key
from tests.unit.server.web.forms import csrf_of, text_of
from tests.unit.server.web.test_account import PASSWORD, Person, code_display, error_at, sign_in


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "piv_ca_key_file": tmp_path / "piv" / "ca-key.pem",
            "piv_ca_cert_file": tmp_path / "piv" / "ca.pem",
        }
    )


@pytest.fixture
def person(browser: TestClient, settings: Settings) -> Person:
    person = Person(browser, make_key(settings, "operator", Role.SUPERVISOR))
    sign_in(browser)
    return person


def add_device(person: Person, kind: CredentialKind, serial: str) -> uuid.UUID:
    """An active device of ``kind`` for the person (as after an operator's activation)."""
    with person.sessions() as session, session.begin():
        credential = CredentialRepository(session).add(
            Credential(
                identity_id=person.identity_id,
                kind=kind,
                state=CredentialState.ACTIVE,
                serial=serial,
                public_data={},
            )
        )
        return credential.id


def block(browser: TestClient, credential_id: uuid.UUID, reason: str) -> None:
    form = browser.get(f"/account/credentials/{credential_id}/block")
    answer = browser.post(
        f"/account/credentials/{credential_id}/block",
        data={"csrf": csrf_of(form), "reason": reason},
        follow_redirects=False,
    )
    assert answer.status_code == 303, text_of(answer)


def reasons(browser: TestClient, credential_id: uuid.UUID) -> str:
    page = browser.get(f"/account/credentials/{credential_id}/block")
    assert page.status_code == 200
    return text_of(page)


def test_stopping_a_code_display_is_not_offered_as_for_now(
    browser: TestClient, person: Person
) -> None:
    """A blocked code display is replaced, never unblocked: the second reason must not
    promise "for now" and then say the block cannot be lifted."""
    text = reasons(browser, code_display(person).id)
    assert "indtil videre" not in text
    assert "Jeg har det stadig, men vil ikke bruge det mere" in text
    assert "Spærringen kan ikke ophæves" in text


def test_stopping_a_usb_token_for_now_says_it_can_be_lifted_or_replaced(
    browser: TestClient, person: Person
) -> None:
    token = add_device(person, CredentialKind.OTP_TOKEN, "cccccbtest01")
    text = reasons(browser, token)
    assert "Jeg har det stadig, men vil stoppe det indtil videre" in text
    assert "Et borgerservicecenter kan ophæve spærringen senere" in text
    assert "Spærringen kan ikke ophæves" not in text
    assert "Du kan også bestille et nyt lige bagefter" in text


def test_a_security_key_stopped_for_now_can_be_lifted(browser: TestClient, person: Person) -> None:
    key = add_device(person, CredentialKind.FIDO2, "fido2:abcdef0123")
    text = reasons(browser, key)
    assert "Jeg har det stadig, men vil stoppe det indtil videre" in text
    assert "Et borgerservicecenter kan ophæve spærringen senere" in text


def test_replacing_a_usb_token_promises_no_serial_field_it_does_not_show(
    browser: TestClient, person: Person
) -> None:
    token = add_device(person, CredentialKind.OTP_TOKEN, "cccccbtest02")
    block(browser, token, "lost")
    page = browser.get(f"/account/credentials/{token}/replace")
    assert page.status_code == 200
    assert 'id="serial"' not in page.text
    assert "serienummer" not in text_of(page).lower()
    assert "Vi sender dig et nyt med posten" in text_of(page)
    # A code display's replacement takes the serial of one at hand, and says so.
    device = code_display(person).id
    block(browser, device, "lost")
    page = browser.get(f"/account/credentials/{device}/replace")
    assert 'id="serial"' in page.text
    assert "skriv dens serienummer" in text_of(page)


def test_the_password_page_tells_every_problem_at_once(browser: TestClient, person: Person) -> None:
    form = browser.get("/account/password")
    both = browser.post(
        "/account/password",
        data={"csrf": csrf_of(form), "current_password": "not it", "new_password": "kort"},
    )
    assert both.status_code == 400
    assert "Den nuværende adgangskode er forkert" in error_at(both, "current_password")
    assert "Brug mindst 12 tegn" in error_at(both, "new_password")
    empty = browser.post("/account/password", data={"csrf": csrf_of(form)})
    assert error_at(empty, "current_password")
    assert error_at(empty, "new_password")
    # The summary lists them in the order of the fields.
    links = re.findall(r'<li><a href="#([a-z_]+)">', empty.text)
    assert links == ["current_password", "new_password"]


def test_the_password_shows_when_it_was_last_used(browser: TestClient, person: Person) -> None:
    """Signing in proved the password today; the overview says so instead of "Ikke kendt"."""
    overview = text_of(browser.get("/account"))
    today = dt.datetime.now(dt.UTC).astimezone().strftime("%d.%m.%Y")
    row = re.search(r"Adgangskode Intet Aktiv (\S+) (\S+)", overview)
    assert row is not None, overview
    assert row.group(2) == today
    assert PASSWORD not in overview
