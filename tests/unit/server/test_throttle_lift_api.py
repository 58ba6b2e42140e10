"""An operator lifts what failed attempts left on a person: the throttles naming them from
every network and their key card's temporary block, at once, audited with the reason."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.services.throttles import SUBJECT_RATE
from tests.unit.server.conftest import BOTH_DATABASES
from tests.unit.server.people import assert_problem
from tests.unit.server.test_keycard_api import (
    PASSWORD,
    audit_events,
    credential_row,
    holder,
    key_number,
    login,
    send_code,
    wrong,
)


def _from(client: TestClient, address: str) -> TestClient:
    return TestClient(
        client.app,
        raise_server_exceptions=False,
        client=(address, 4711),
        headers=dict(client.headers),
    )


@BOTH_DATABASES
def test_an_operator_lifts_a_throttle_and_a_temporary_block_with_a_reason(
    client: TestClient,
) -> None:
    identity, number, credential, codes = holder(client)
    assert client.put(f"/identities/{identity}/password", json={"password": PASSWORD}).is_success
    # Someone who knows the password blocks the card for a while...
    transaction = login(client, number)
    assert client.post(
        f"/authentications/{transaction}/password", json={"password": PASSWORD}
    ).is_success
    for _ in range(3):
        index = key_number(client, transaction)
        send_code(client, transaction, wrong(codes[index]))
    assert credential_row(client, credential).blocked_until is not None
    # ... and the person, trying from home, is throttled after their own wrong passwords.
    home = _from(client, "198.51.100.23")
    for _ in range(SUBJECT_RATE.burst):
        attempt = login(home, number)
        home.post(f"/authentications/{attempt}/password", json={"password": "not it"})
    attempt = login(home, number)
    throttled = home.post(f"/authentications/{attempt}/password", json={"password": PASSWORD})
    assert_problem(throttled, 429, "rate-limited")

    assert_problem(client.post(f"/identities/{identity}/throttles/lift", json={"reason": ""}), 422)
    lifted = client.post(
        f"/identities/{identity}/throttles/lift",
        json={"reason": "called the helpdesk, identity checked by callback"},
    )
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["credentials"] == 1
    assert lifted.json()["throttles"] >= 1
    [event] = audit_events(client, "throttles.lifted")
    assert event["reason"] == "called the helpdesk, identity checked by callback"
    assert event["identity"] == identity

    # At once: the person logs in from home with password and key card.
    attempt = login(home, number)
    assert home.post(f"/authentications/{attempt}/password", json={"password": PASSWORD}).is_success
    index = key_number(home, attempt)
    assert send_code(home, attempt, codes[index]).status_code == 200


def test_lifting_is_for_operators_only(client: TestClient) -> None:
    identity, *_ = holder(client)
    anonymous = TestClient(client.app, raise_server_exceptions=False)
    answer = anonymous.post(f"/identities/{identity}/throttles/lift", json={"reason": "because"})
    assert answer.status_code == 401
    unknown = client.post(
        "/identities/00000000-0000-4000-8000-000000000000/throttles/lift",
        json={"reason": "because"},
    )
    assert unknown.status_code == 404


@pytest.mark.parametrize("body", [{}, {"reason": "ok"}, {"reason": "x" * 501}, {"why": "no"}])
def test_a_lift_needs_a_reason(client: TestClient, body: dict[str, str]) -> None:
    identity, *_ = holder(client)
    answer = client.post(f"/identities/{identity}/throttles/lift", json=body)
    assert_problem(answer, 422)
