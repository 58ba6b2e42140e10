"""The API's password step runs Argon2id while no one holds SQLite's write lock: another
connection can take it, without waiting, during the hashing, for a right password, a wrong
one and a person who does not exist (whose decoy verification is the same work). The identify
step looks the person up the same way, before its write transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from server.app import create_app
from server.services.access import Role
from server.settings import Settings
from server.storage.repositories import IdentityRepository
from tests.unit.server.conftest import SQLITE_ONLY, TEST_PROVIDER, make_key
from tests.unit.server.lock_probe import LockProbe, install
from tests.unit.server.people import PERSON_STORED
from tests.unit.server.test_authentication_api import PERSON, seed_identity, start

pytestmark = SQLITE_ONLY

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test password


@pytest.fixture
def app_and_client(settings: Settings) -> Iterator[tuple[Any, TestClient]]:
    """The app, with one person holding a code display and a password."""
    app = create_app(settings)
    headers = make_key(settings, TEST_PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(app, raise_server_exceptions=False, headers=headers) as client:
        seed_identity(app.state.services.sessions, settings.kek_file)
        with app.state.services.sessions() as session:
            identity = IdentityRepository(session).by_person_number(PERSON_STORED).id
        answer = client.put(f"/identities/{identity}/password", json={"password": PASSWORD})
        assert answer.status_code == 200, answer.text
        yield app, client


@pytest.mark.parametrize(
    ("person", "password", "status"),
    [(PERSON, PASSWORD, 200), (PERSON, "not the password", 401), ("0202024321", PASSWORD, 401)],
    ids=["right", "wrong", "unknown-person"],
)
def test_the_api_hashes_a_password_without_the_write_lock(
    app_and_client: tuple[Any, TestClient],
    settings: Settings,
    person: str,
    password: str,
    status: int,
) -> None:
    app, client = app_and_client
    transaction = start(client, person=person)
    probe: LockProbe = install(app, settings)
    answer = client.post(f"/authentications/{transaction}/password", json={"password": password})
    assert answer.status_code == status, answer.text
    assert probe.outcomes == ["free"]  # hashed once, and the lock was free meanwhile


@pytest.mark.parametrize("person", [PERSON, "0202024321", "not a number"])
def test_the_api_looks_the_person_up_without_the_write_lock(
    app_and_client: tuple[Any, TestClient], settings: Settings, person: str
) -> None:
    app, client = app_and_client
    begun = client.post("/authentications", json={"provider": TEST_PROVIDER, "min_level": "low"})
    assert begun.status_code == 201, begun.text
    probe = LockProbe(settings)
    looked_up: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM identities" in statement and "person_number" in statement.split("WHERE")[-1]:
            looked_up.append(probe.lock_state())

    engine = app.state.services.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        answer = client.post(
            f"/authentications/{begun.json()['id']}/identify", json={"person_number": person}
        )
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert answer.status_code == 200, answer.text
    expected = [] if person == "not a number" else ["free"]  # a malformed number: no look-up
    assert looked_up == expected
