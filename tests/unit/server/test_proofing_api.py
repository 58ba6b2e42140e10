"""Recording another identity proofing of an enrolled person: the assurance rises, never falls,
High needs a second operator's key, and an operator records only on the own channel."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.services.access import Role
from server.settings import Settings
from server.storage.tables import AuditEntry
from tests.unit.server.conftest import make_key
from tests.unit.server.people import assert_problem, second_operator_approves
from tests.unit.server.test_identities_api import enrol

PASSPORT_AT_CENTRE = {"channel": "service_centre", "document_kind": "passport"}
BANK_PASSPORT = {"channel": "bank", "document_kind": "passport"}


def test_a_second_operator_raises_the_assurance_to_high(
    client: TestClient, session: Session
) -> None:
    person = enrol(client)
    assert person["identity_assurance"] == "substantial"
    one = client.post(
        f"/identities/{person['id']}/proofing",
        json={**PASSPORT_AT_CENTRE, "operator_ids": ["staff-1"]},
    )
    assert one.status_code == 200, one.text
    assert one.json()["identity_assurance"] == "substantial"
    two = client.post(
        f"/identities/{person['id']}/proofing",
        json={**PASSPORT_AT_CENTRE, "operator_ids": ["staff-1", "staff-2"]},
    )
    assert two.json()["identity_assurance"] == "substantial"
    approved = second_operator_approves(client, two.json())
    assert approved["identity_assurance"] == "high"
    assert len(approved["proofing"]) == 4
    # A weaker proofing afterwards is recorded, and lowers nothing.
    weaker = client.post(
        f"/identities/{person['id']}/proofing",
        json={"channel": "self_service", "document_kind": "passport_chip"},
    )
    assert weaker.json()["identity_assurance"] == "high"
    entries = session.scalars(select(AuditEntry).where(AuditEntry.event == "identity.proofed"))
    levels = [
        (entry.details["assurance_before"], entry.details["assurance_after"]) for entry in entries
    ]
    assert levels == [
        ("substantial", "substantial"),
        ("substantial", "substantial"),
        ("substantial", "high"),
        ("high", "high"),
    ]


def test_an_operator_records_only_on_the_own_channel_and_as_a_named_operator(
    client: TestClient, settings: Settings
) -> None:
    bank = make_key(settings, "bank-op", Role.OPERATOR_BANK)
    # The bank's own customer (a bank operator reaches no one else).
    answer = client.post(
        "/identities",
        json={
            "person_number": "020385-4321",
            "name": "Ada Jensen",
            "proofing": {
                "channel": "bank",
                "document_kind": "passport",
                "operator_ids": ["bank-op"],
            },
        },
        headers=bank,
    )
    assert answer.status_code == 201, answer.text
    person = answer.json()
    refused = client.post(
        f"/identities/{person['id']}/proofing",
        json={**PASSPORT_AT_CENTRE, "operator_ids": ["bank-op", "x"]},
        headers=bank,
    )
    assert_problem(refused, 403, "forbidden")
    unnamed = client.post(
        f"/identities/{person['id']}/proofing",
        json={"channel": "bank", "document_kind": "passport", "operator_ids": ["someone"]},
        headers=bank,
    )
    assert_problem(unnamed, 403, "forbidden")
    own = client.post(
        f"/identities/{person['id']}/proofing",
        json={"channel": "bank", "document_kind": "passport", "operator_ids": ["bank-op"]},
        headers=bank,
    )
    assert own.status_code == 200, own.text


def test_proofing_of_a_suspended_or_unknown_identity_is_refused(client: TestClient) -> None:
    person = enrol(client)
    client.post(f"/identities/{person['id']}/suspend").raise_for_status()
    body = {**PASSPORT_AT_CENTRE, "operator_ids": ["a", "b"]}
    assert_problem(
        client.post(f"/identities/{person['id']}/proofing", json=body), 409, "identity-not-active"
    )
    unknown = client.post("/identities/00000000-0000-4000-8000-000000000001/proofing", json=body)
    assert_problem(unknown, 404, "identity-not-found")
