"""Two operators means two keys: one operator key never makes an identity High alone (operator
ids are text anyone can type); a High proofing waits until a second, distinct key of the same
channel and organisation approves it; a bank operator sees only the bank's own customers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.app import create_app
from server.services.access import ApiKeys, Role
from server.settings import Settings
from server.storage.tables import AuditEntry
from tests.unit.server.conftest import SQLITE_ONLY
from tests.unit.server.migration.test_migration_api import NAME, add_person, code_of, stock_token
from tests.unit.server.people import assert_problem

pytestmark = SQLITE_ONLY

ATTACK_OPERATORS = ["opbank1", "nobody-at-all"]


def key(settings: Settings, name: str, role: Role, organisation: str | None = None) -> Any:
    _, secret = ApiKeys(settings.api_keys_file).add(name, [role], organisation=organisation)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    """A client with no key of its own: every request names its key."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def enrolment(number: str, operators: list[str], channel: str = "bank") -> dict[str, Any]:
    return {
        "person_number": number,
        "name": "Ada Jensen",
        "proofing": {"channel": channel, "document_kind": "passport", "operator_ids": operators},
    }


def assurance(http: TestClient, headers: Any, identity_id: str) -> str:
    answer = http.get(f"/identities/{identity_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["identity_assurance"])


def pending_of(http: TestClient, headers: Any, identity_id: str) -> str:
    """The id of the newest High proofing of the person waiting for a second operator."""
    answer = http.get("/proofings", params={"identity_id": identity_id}, headers=headers)
    assert answer.status_code == 200, answer.text
    waiting = answer.json()
    assert waiting, "no proofing waits"
    assert waiting[-1]["state"] == "waiting"
    return str(waiting[-1]["id"])


def approve(http: TestClient, headers: Any, pending: str) -> Any:
    return http.post(f"/proofings/{pending}/approve", headers=headers)


# --- the attacks --------------------------------------------------------------------------------


def test_one_operator_cannot_enrol_at_high_with_a_made_up_second_operator(
    http: TestClient, settings: Settings
) -> None:
    first = key(settings, "opbank1", Role.OPERATOR_BANK, "bank-a")
    answer = http.post(
        "/identities", json=enrolment("020385-1234", ATTACK_OPERATORS), headers=first
    )
    assert answer.status_code == 201, answer.text
    person = answer.json()
    assert person["identity_assurance"] == "substantial"
    pending = pending_of(http, first, person["id"])
    # The first operator cannot approve their own proofing.
    assert_problem(approve(http, first, pending), 403, "forbidden")
    assert assurance(http, first, person["id"]) == "substantial"
    second = key(settings, "opbank2", Role.OPERATOR_BANK, "bank-a")
    approved = approve(http, second, pending)
    assert approved.status_code == 200, approved.text
    assert approved.json()["identity_assurance"] == "high"
    assert approved.json()["proofing"][-1]["operator_ids"] == ["opbank1", "opbank2"]
    # Spent: approving again changes nothing.
    assert_problem(approve(http, second, pending), 409, "proofing-not-waiting")


def test_one_operator_cannot_raise_an_identity_to_high_with_a_made_up_second_operator(
    http: TestClient, settings: Settings
) -> None:
    first = key(settings, "opbank1", Role.OPERATOR_BANK, "bank-a")
    person = http.post(
        "/identities", json=enrolment("020385-1234", ["opbank1"]), headers=first
    ).json()
    body = {"channel": "bank", "document_kind": "passport", "operator_ids": ATTACK_OPERATORS}
    answer = http.post(f"/identities/{person['id']}/proofing", json=body, headers=first)
    assert answer.status_code == 200, answer.text
    assert answer.json()["identity_assurance"] == "substantial"
    pending = pending_of(http, first, person["id"])
    # Neither another bank's operator nor a service centre's may approve.
    other_bank = key(settings, "opbank9", Role.OPERATOR_BANK, "bank-b")
    assert_problem(approve(http, other_bank, pending), 404, "proofing-not-found")
    centre = key(settings, "opcentre1", Role.OPERATOR_CENTRE, "centre-x")
    assert_problem(approve(http, centre, pending), 404, "proofing-not-found")
    assert assurance(http, first, person["id"]) == "substantial"
    second = key(settings, "opbank2", Role.OPERATOR_BANK, "bank-a")
    listed = http.get("/proofings", headers=second)
    assert [item["id"] for item in listed.json()] == [pending]
    assert approve(http, second, pending).json()["identity_assurance"] == "high"
    with create_app(settings).state.services.sessions() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.event == "identity.proofing_approved")
        ).one()
    assert entry.details["operators"] == ["opbank1", "opbank2"]
    assert entry.details["organisation"] == "bank-a"
    assert "bank-a" in entry.actor


def test_one_operator_cannot_migrate_a_person_to_high_with_a_made_up_second_operator(
    http: TestClient, client: TestClient, settings: Settings
) -> None:
    person = add_person(client)
    token = stock_token(client)
    first = key(settings, "opcentre1", Role.OPERATOR_CENTRE, "centre-x")
    started = http.post(
        "/migrations",
        json={
            "user_id": person.user_id,
            "channel": "service_centre",
            "checks": {"document_kind": "passport"},
            "operator_ids": ["opcentre1", "nobody-at-all"],
        },
        headers=first,
    )
    assert started.status_code == 201, started.text
    flow = started.json()["id"]
    person.index = started.json()["index"]

    def post(path: str, body: dict[str, Any] | None = None) -> Any:
        answer = http.post(f"/migrations/{flow}/{path}", json=body, headers=first)
        assert answer.status_code == 200, answer.text
        return answer.json()

    post("prove", person.proof())
    post("confirm", {"person_number": person.person_number, "name": NAME})
    post("choose", {"kinds": ["code_display"]})
    post("activate", {"serial": token.serial, "code": code_of(token)})
    done = post("complete")
    identity = http.get(f"/identities/{done['identity_id']}", headers=first).json()
    assert identity["identity_assurance"] == "substantial"
    pending = pending_of(http, first, identity["id"])
    other_centre = key(settings, "opcentre9", Role.OPERATOR_CENTRE, "centre-y")
    assert_problem(approve(http, other_centre, pending), 404, "proofing-not-found")
    second = key(settings, "opcentre2", Role.OPERATOR_CENTRE, "centre-x")
    assert approve(http, second, pending).json()["identity_assurance"] == "high"


def test_a_bank_operator_cannot_read_another_banks_customer(
    http: TestClient, settings: Settings
) -> None:
    bank_a = key(settings, "opbank1", Role.OPERATOR_BANK, "bank-a")
    bank_b = key(settings, "opbank9", Role.OPERATOR_BANK, "bank-b")
    person = http.post(
        "/identities", json=enrolment("020385-1234", ["opbank1"]), headers=bank_a
    ).json()
    assert assurance(http, bank_a, person["id"]) == "substantial"
    for path in ("", "/credentials"):
        answer = http.get(f"/identities/{person['id']}{path}", headers=bank_b)
        assert_problem(answer, 404, "identity-not-found")
    suspended = http.post(f"/identities/{person['id']}/suspend", headers=bank_b)
    assert_problem(suspended, 404, "identity-not-found")
    # A service centre serves everyone; so does a supervisor.
    centre = key(settings, "opcentre1", Role.OPERATOR_CENTRE, "centre-x")
    assert assurance(http, centre, person["id"]) == "substantial"


def test_a_key_without_an_organisation_is_its_own_organisation(
    http: TestClient, settings: Settings
) -> None:
    first = key(settings, "opbank1", Role.OPERATOR_BANK)
    second = key(settings, "opbank2", Role.OPERATOR_BANK)
    person = http.post(
        "/identities", json=enrolment("020385-1234", ["opbank1", "opbank2"]), headers=first
    ).json()
    assert person["identity_assurance"] == "substantial"
    assert_problem(
        http.get(f"/identities/{person['id']}", headers=second), 404, "identity-not-found"
    )
    assert_problem(
        approve(http, second, pending_of(http, first, person["id"])), 404, "proofing-not-found"
    )
