"""The authentication API over HTTP on SQLite (and PostgreSQL where it behaves differently): a
whole login, failures that say nothing about accounts, step-up, JWKS, and 4xx (never 500) for
malformed requests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from devices.protocol.otp import totp
from server.app import create_app
from server.services.access import Role
from server.services.secretbox import SecretBox
from server.settings import Settings
from server.storage.repositories import IdentityRepository
from tests.unit.server.conftest import BOTH_DATABASES, SQLITE_ONLY, TEST_PROVIDER, make_key
from tests.unit.server.people import PERSON_STORED, SEED, seed_person_with_code_display

pytestmark = SQLITE_ONLY  # and BOTH_DATABASES where marked (see the conftest)

PERSON = "0101901234"
PROVIDER = TEST_PROVIDER


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app, with one person holding an active code display."""
    app = create_app(settings)
    headers = make_key(settings, PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(app, raise_server_exceptions=False, headers=headers) as test_client:
        seed_identity(app.state.services.sessions, settings.kek_file)
        yield test_client


def seed_identity(sessions: Any, kek: Path) -> None:
    seed_person_with_code_display(sessions, SecretBox.from_file(kek))


def start(client: TestClient, person: str = PERSON, level: str = "low") -> str:
    begun = client.post("/authentications", json={"provider": PROVIDER, "min_level": level})
    assert begun.status_code == 201, begun.text
    transaction = str(begun.json()["id"])
    identified = client.post(
        f"/authentications/{transaction}/identify", json={"person_number": person}
    )
    assert identified.status_code == 200, identified.text
    return transaction


@BOTH_DATABASES
def test_whole_login_gives_an_assertion_that_verifies_with_the_jwks(client: TestClient) -> None:
    transaction = start(client)
    accepted = client.post(
        f"/authentications/{transaction}/otp", json={"code": totp(SEED, time.time())}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"factors": ["code_display"]}
    done = client.post(f"/authentications/{transaction}/complete")
    assert done.status_code == 200, done.text
    keys = client.get("/.well-known/jwks.json").json()
    claims = jwt.decode(
        done.json()["assertion"],
        jwt.PyJWK(keys["keys"][0]),
        algorithms=["ES256"],
        audience=PROVIDER,
    )
    assert claims["loa"] == done.json()["level"] == "low"
    assert claims["amr"] == ["code_display"]
    # The transaction is finished: it cannot be completed twice.
    again = client.post(f"/authentications/{transaction}/complete")
    assert again.status_code == 409


@BOTH_DATABASES
def test_wrong_code_and_unknown_person_get_the_same_answer(client: TestClient) -> None:
    wrong = client.post(f"/authentications/{start(client)}/otp", json={"code": "000000"})
    unknown = client.post(
        f"/authentications/{start(client, person='0202024321')}/otp", json={"code": "000000"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.json() == unknown.json()
    assert "000000" not in wrong.text


def test_level_too_low_asks_to_step_up(client: TestClient) -> None:
    transaction = start(client, level="substantial")
    client.post(f"/authentications/{transaction}/otp", json={"code": totp(SEED, time.time())})
    answer = client.post(f"/authentications/{transaction}/complete")
    assert answer.status_code == 403
    assert answer.json()["achieved"] == "low"
    assert answer.json()["required"] == "substantial"


GARBAGE: list[Any] = [
    None,
    "not json at all",
    [],
    {"min_level": None},
    {"provider": 5},
    {"provider": "x" * 1000},
    {"provider": "ok", "min_level": "ultra"},
    {"provider": "ok", "extra": True},
    {"person_number": None},
    {"code": ""},
    {"code": "1" * 100},
]


@pytest.mark.parametrize("path", ["begin", "identify", "otp", "complete"])
@pytest.mark.parametrize("body", GARBAGE)
def test_malformed_requests_get_a_4xx_never_a_500(client: TestClient, path: str, body: Any) -> None:
    transaction = start(client)
    url = {
        "begin": "/authentications",
        "identify": f"/authentications/{transaction}/identify",
        "otp": f"/authentications/{transaction}/otp",
        "complete": f"/authentications/{transaction}/complete",
    }[path]
    if isinstance(body, str):
        answer = client.post(url, content=body, headers={"content-type": "application/json"})
    else:
        answer = client.post(url, json=body)
    assert 400 <= answer.status_code < 500, answer.text


@pytest.mark.parametrize(
    "transaction", ["not-a-uuid", str(uuid.uuid4())], ids=["not-a-uuid", "unknown"]
)
def test_unknown_or_malformed_transaction_ids_are_4xx(client: TestClient, transaction: str) -> None:
    answer = client.post(f"/authentications/{transaction}/otp", json={"code": "123456"})
    assert answer.status_code in (404, 422)
    assert answer.headers["content-type"] == "application/problem+json"


def _identity_id(client: TestClient) -> str:
    sessions = client.app.state.services.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        return str(IdentityRepository(session).by_person_number(PERSON_STORED).id)


@BOTH_DATABASES
def test_password_and_code_display_reach_substantial(client: TestClient) -> None:
    password = "correct horse battery staple"  # noqa: S105 - a test password
    set_password = client.put(
        f"/identities/{_identity_id(client)}/password", json={"password": password}
    )
    assert set_password.status_code == 200, set_password.text
    transaction = start(client, level="substantial")
    first = client.post(f"/authentications/{transaction}/password", json={"password": password})
    assert first.status_code == 200, first.text
    second = client.post(
        f"/authentications/{transaction}/otp", json={"code": totp(SEED, time.time())}
    )
    assert second.json() == {"factors": ["code_display", "password"]}
    done = client.post(f"/authentications/{transaction}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["level"] == "substantial"


def test_wrong_password_and_unknown_person_get_the_same_answer(client: TestClient) -> None:
    client.put(
        f"/identities/{_identity_id(client)}/password",
        json={"password": "correct horse battery staple"},
    )
    wrong = client.post(
        f"/authentications/{start(client)}/password", json={"password": "not the password"}
    )
    unknown = client.post(
        f"/authentications/{start(client, person='0202024321')}/password",
        json={"password": "not the password"},
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "not the password" not in wrong.text


@BOTH_DATABASES
def test_every_step_is_in_the_audit_log_and_the_chain_verifies(client: TestClient) -> None:
    from server.services.audit import AuditLog, verify_database

    transaction = start(client)
    client.post(f"/authentications/{transaction}/otp", json={"code": "000000"})
    client.post(f"/authentications/{transaction}/otp", json={"code": totp(SEED, time.time())})
    client.post(f"/authentications/{transaction}/complete")
    sessions = client.app.state.services.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        entries = AuditLog(session).tail(1000)  # every chain's, in the order they happened
        events = [(entry.event, entry.details.get("result")) for entry in entries]
        assert verify_database(session) == len(entries)
    assert events == [
        ("authentication.begin", None),
        ("authentication.factor", "failed"),
        ("authentication.factor", "ok"),
        ("authentication.complete", None),
    ]
    assert all(entry.subject == str(transaction) for entry in entries)
    assert all("000000" not in str(entry.details) for entry in entries)


@BOTH_DATABASES
def test_enrolled_through_the_api_a_person_logs_in_with_an_imported_token(
    client: TestClient,
) -> None:
    from devices.protocol import pskc
    from devices.protocol.otp import hotp
    from firmware_sim.tokens import otp_token

    token = otp_token.new_state(otp_token.Model.USB, otp_token.Algorithm.HOTP)
    imported = client.post(
        "/token-batches",
        content=pskc.write_pskc([token.pskc_key()]),
        headers={"content-type": "application/xml"},
    )
    assert imported.status_code == 201, imported.text
    enrolled = client.post(
        "/identities",
        json={
            "person_number": "150372-2345",
            "name": "Another Person",
            "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
        },
    )
    assert enrolled.status_code == 201, enrolled.text
    assigned = client.post(
        f"/identities/{enrolled.json()['id']}/tokens", json={"serial": token.serial}
    )
    activated = client.post(
        f"/credentials/{assigned.json()['id']}/activate", json={"code": hotp(token.secret, 0)}
    )
    assert activated.status_code == 200, activated.text
    transaction = start(client, person="1503722345")
    for counter in (1, 2):
        answer = client.post(
            f"/authentications/{transaction}/otp", json={"code": hotp(token.secret, counter)}
        )
        assert answer.status_code == 200, answer.text
    assert answer.json() == {"factors": ["otp_token"]}
