"""What ``piv/begin`` tells the card's program to show before the card signs: whom the login
is for, the level it asks for, when it began and whether a browser opened it. A login id (and
pairing code) handed over by a phisher is of the phisher's login, at the phisher's provider:
the person must be able to see that before their card signs it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.services.login.providers import SELF_SERVICE, display_name
from tests.unit.server.conftest import SQLITE_ONLY
from tests.unit.server.test_piv_api import PROVIDER, identified_login, person

pytestmark = SQLITE_ONLY


def begun(client: TestClient, transaction: str) -> dict[str, Any]:
    answer = client.post(f"/authentications/{transaction}/piv/begin")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize("level", ["substantial", "high"])
def test_begin_names_the_provider_and_the_level_the_login_asks_for(
    client: TestClient, level: str
) -> None:
    before = dt.datetime.now(dt.UTC)
    _, number = person(client)
    transaction = identified_login(client, number, level)

    body = begun(client, transaction)

    assert body["service_provider"] == PROVIDER
    assert body["service_provider_name"] == PROVIDER  # no other name known: the id
    assert body["level"] == level
    assert body["paired_with_browser"] is False  # an API login no browser opened
    began = dt.datetime.fromisoformat(body["begun_at"])
    assert before - dt.timedelta(seconds=1) <= began <= dt.datetime.now(dt.UTC)
    assert dt.datetime.fromisoformat(body["expires_at"]) > began


def test_begin_tells_the_same_of_a_person_who_does_not_exist(client: TestClient) -> None:
    """The context is the login's, never the person's: it does not tell whether the person
    number names anyone."""
    _, number = person(client)
    known = begun(client, identified_login(client, number))
    unknown = begun(client, identified_login(client, "010101-0000"))

    drop = {"challenge", "begun_at", "expires_at"}
    assert {k: v for k, v in known.items() if k not in drop} == {
        k: v for k, v in unknown.items() if k not in drop
    }
    assert set(known) == set(unknown)


def test_a_provider_is_shown_by_its_name_where_one_is_known() -> None:
    assert display_name(SELF_SERVICE) == "akkreditiv self-service"
    assert display_name("https://bank.example") == "https://bank.example"
