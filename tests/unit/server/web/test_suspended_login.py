"""A suspended person at the login pages: once their password (or code) is proven, they are
told that their eID is suspended and how to reach the people who can lift it; a wrong
password gets the usual page, so a stranger learns nothing of the number typed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.services.access import Role
from server.settings import Settings
from tests.unit.server.conftest import ORIGIN, make_key
from tests.unit.server.people import seed_person_with_code_display
from tests.unit.server.web.forms import csrf_of, text_of

PERSON = "010190-1234"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test password
WRONG = "not the password at all"
PROVIDER = "https://sp.example"
PHONE = "+45 70 00 00 00"
EMAIL = "hjaelp@eid.example"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest's settings with the eID support's contact details configured."""
    return settings.model_copy(update={"support_phone": PHONE, "support_email": EMAIL})


@pytest.fixture
def service(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    """A browser, a provider's (and supervisor's) key, and the id of a person with a code
    display and a password."""
    app = create_app(settings)
    key = make_key(settings, PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(app, base_url=ORIGIN, raise_server_exceptions=False) as client:
        services = app.state.services
        identity = str(seed_person_with_code_display(services.sessions, services.secrets))
        answer = client.put(
            f"/identities/{identity}/password", json={"password": PASSWORD}, headers=key
        )
        assert answer.status_code == 200, answer.text
        yield client, key, identity


def post(client: TestClient, path: str, **data: str) -> httpx.Response:
    token = csrf_of(client.get(path))
    return client.post(path, data={"csrf": token, **data}, follow_redirects=False)


def password_attempt(client: TestClient, key: dict[str, str], password: str) -> httpx.Response:
    begun = client.post("/authentications", json={"min_level": "low"}, headers=key)
    assert begun.status_code == 201, begun.text
    transaction = begun.json()["id"]
    assert post(client, f"/login/{transaction}", person_number=PERSON).status_code == 303
    return post(client, f"/login/{transaction}/password", password=password)


def suspend(client: TestClient, key: dict[str, str], identity: str) -> None:
    answer = client.post(f"/identities/{identity}/suspend", headers=key)
    assert answer.status_code == 200, answer.text


def test_a_suspended_person_who_proves_the_password_is_told_where_to_turn(
    service: tuple[TestClient, dict[str, str], str],
) -> None:
    client, key, identity = service
    suspend(client, key, identity)
    answer = password_attempt(client, key, PASSWORD)
    assert answer.status_code == 403
    text = text_of(answer)
    assert "Dit eID er suspenderet" in text
    assert "borgerservicecenter" in text
    assert PHONE in text
    assert EMAIL in text
    main = answer.text.split("<main", 1)[1].split("</main>", 1)[0]
    assert '<a href="/help">Hjælp og kontakt</a>' in main  # not only the footer's


def test_the_same_in_english(service: tuple[TestClient, dict[str, str], str]) -> None:
    client, key, identity = service
    client.cookies.set("akk_lang", "en")
    suspend(client, key, identity)
    text = text_of(password_attempt(client, key, PASSWORD))
    assert "Your eID is suspended" in text
    assert PHONE in text


def test_a_wrong_password_for_a_suspended_person_gets_the_usual_page(
    service: tuple[TestClient, dict[str, str], str],
) -> None:
    client, key, identity = service
    active = password_attempt(client, key, WRONG)
    suspend(client, key, identity)
    suspended = password_attempt(client, key, WRONG)
    assert suspended.status_code == active.status_code == 401
    assert "suspenderet" not in text_of(suspended)
    assert "Adgangskoden blev ikke godkendt" in text_of(suspended)
    assert PHONE not in text_of(suspended)
