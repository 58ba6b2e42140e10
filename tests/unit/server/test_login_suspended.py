"""A suspended person logging in: told that their eID is suspended (and where to turn) once a
factor of theirs is proven, and never before. To anyone who has not proven a factor, a
suspended person number answers exactly as an active one and as one nobody has: the same
problem, the same work (one password verification)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from devices.protocol.otp import totp
from server.services.passwords import Passwords
from server.storage.repositories import IdentityRepository
from server.storage.tables import AuditEntry
from tests.unit.server.conftest import SQLITE_ONLY, TEST_PROVIDER
from tests.unit.server.people import (
    PERSON_STORED,
    SEED,
    assert_problem,
    seed_person_with_code_display,
)

pytestmark = SQLITE_ONLY

PERSON = "0101901234"
NOBODY = "0202024321"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test person's password
WRONG = "not the password at all"


def services_of(client: TestClient) -> Any:
    return client.app.state.services  # type: ignore[attr-defined]


def person(client: TestClient) -> str:
    """The person with a code display (``SEED``) and ``PASSWORD``; their identity id."""
    services = services_of(client)
    identity = str(seed_person_with_code_display(services.sessions, services.secrets))
    answer = client.put(f"/identities/{identity}/password", json={"password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return identity


def suspend(client: TestClient, identity: str) -> None:
    answer = client.post(f"/identities/{identity}/suspend")
    assert answer.status_code == 200, answer.text


def start(client: TestClient, number: str) -> str:
    begun = client.post("/authentications", json={"provider": TEST_PROVIDER})
    assert begun.status_code == 201, begun.text
    transaction = str(begun.json()["id"])
    identified = client.post(
        f"/authentications/{transaction}/identify", json={"person_number": number}
    )
    assert identified.status_code == 200, identified.text
    return transaction


def try_password(client: TestClient, number: str, password: str) -> Any:
    transaction = start(client, number)
    return client.post(f"/authentications/{transaction}/password", json={"password": password})


def code_now(client: TestClient) -> str:
    return totp(SEED, services_of(client).clock())


class CountingPasswords(Passwords):
    verified = 0

    def verify_password(self, password_hash: str, password: str) -> None:
        CountingPasswords.verified += 1
        super().verify_password(password_hash, password)


def test_a_wrong_factor_for_a_suspended_person_answers_as_for_anyone(client: TestClient) -> None:
    identity = person(client)
    active = assert_problem(try_password(client, PERSON, WRONG), 401, "verification-failed")
    nobody = assert_problem(try_password(client, NOBODY, WRONG), 401, "verification-failed")
    suspend(client, identity)
    suspended = assert_problem(try_password(client, PERSON, WRONG), 401, "verification-failed")
    assert suspended == active == nobody
    transaction = start(client, PERSON)
    wrong_code = f"{(int(code_now(client)) + 1) % 10**6:06d}"
    answer = client.post(f"/authentications/{transaction}/otp", json={"code": wrong_code})
    assert assert_problem(answer, 401, "verification-failed") == active


def test_a_suspended_person_costs_the_same_password_work_as_anyone(client: TestClient) -> None:
    """Refusing a suspended person before their password is checked answered sooner than for
    an active one: the time alone told a stranger that the number was suspended."""
    identity = person(client)
    suspend(client, identity)
    services = services_of(client)
    services.passwords = CountingPasswords(services.passwords._parameters)
    for number in (PERSON, NOBODY):
        CountingPasswords.verified = 0
        assert try_password(client, number, WRONG).status_code == 401
        assert CountingPasswords.verified == 1, number


def test_a_proven_factor_of_a_suspended_person_is_told_the_eid_is_suspended(
    client: TestClient,
) -> None:
    identity = person(client)
    suspend(client, identity)
    by_password = try_password(client, PERSON, PASSWORD)
    body = assert_problem(by_password, 403, "identity-suspended")
    assert "suspended" in body["detail"]
    transaction = start(client, PERSON)
    by_code = client.post(f"/authentications/{transaction}/otp", json={"code": code_now(client)})
    assert_problem(by_code, 403, "identity-suspended")
    # Nothing was proven: the login cannot complete, and the refusal is in the audit log.
    assert_problem(client.post(f"/authentications/{transaction}/complete"), 403)
    with services_of(client).sessions() as session:
        details = session.scalars(
            select(AuditEntry.details).where(AuditEntry.event == "authentication.factor")
        ).all()
    assert {"transaction": transaction, "result": "failed", "reason": "IdentitySuspended"} in [
        {key: value for key, value in entry.items() if key != "factor"} for entry in details
    ]


def test_a_resumed_person_logs_in_again(client: TestClient) -> None:
    identity = person(client)
    suspend(client, identity)
    assert try_password(client, PERSON, PASSWORD).status_code == 403
    resumed = client.post(f"/identities/{identity}/resume")
    assert resumed.status_code == 200, resumed.text
    assert try_password(client, PERSON, PASSWORD).json() == {"factors": ["password"]}
    with services_of(client).sessions() as session:
        assert IdentityRepository(session).by_person_number(PERSON_STORED).status.value == "active"
