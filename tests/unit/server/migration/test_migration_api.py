"""The guided migration over HTTP on SQLite (and PostgreSQL where it behaves differently): the
whole flow on each channel with a new app instance between every two steps (as a restart leaves
it), every step sent twice, the person's steps without an API key and an assisted flow's only with
an operator key of its channel, the same answers for a user id nobody has, clear problem+json for
every failure, a failed token activation with no partial identity, and 4xx (never 500) for
malformed bodies."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpGenerator, OtpTokenState
from server.app import create_app
from server.services.access import Role
from server.services.migration.formats import code_for, new_card_secret
from server.services.throttles import SUBJECT_RATE
from server.settings import Settings
from server.storage.migration_tables import MigrationEvent
from server.storage.tables import Identity
from tests.unit.server.conftest import BOTH_DATABASES, SQLITE_ONLY, make_key
from tests.unit.server.people import second_operator_approves, store_legacy_user

pytestmark = SQLITE_ONLY  # and BOTH_DATABASES where marked (see the conftest)

PASSWORD = "rabarbergrød med mælk"  # noqa: S105 - a test legacy password
NEW_PASSWORD = "Et nyt og langt kodeord 2026"  # noqa: S105 - a test password
NAME = "Tove Ditlevsen"
PROBLEM = "application/problem+json"
_serials = itertools.count(4000)


class Person:
    def __init__(self, user_id: str, person_number: str, secret: bytes) -> None:
        self.user_id = user_id
        self.person_number = person_number
        self.secret = secret
        self.index = ""

    def proof(self, password: str = PASSWORD) -> dict[str, str]:
        return {
            "user_id": self.user_id,
            "password": password,
            "code": code_for(self.secret, self.index),
        }


# --- helpers ----------------------------------------------------------------------------------


def app_of(client: TestClient) -> FastAPI:
    return cast(FastAPI, client.app)


def add_person(client: TestClient) -> Person:
    """A legacy user with an active key card, in the app's own database."""
    serial = next(_serials)
    person = Person(f"nem{serial}", f"120375-{serial}", new_card_secret())
    store_legacy_user(
        app_of(client),
        person.user_id,
        person.person_number,
        person.secret,
        name=NAME,
        password=PASSWORD,
    )
    return person


def stock_token(client: TestClient, model: Model = Model.DISPLAY) -> OtpTokenState:
    token = otp_token.new_state(model)
    answer = client.post(
        "/token-batches",
        content=pskc.write_pskc([token.pskc_key()]),
        headers={"content-type": "application/xml"},
    )
    assert answer.status_code == 201, answer.text
    return token


def code_of(token: OtpTokenState) -> str:
    return OtpGenerator(token, lambda _: None).totp_now()


def count(client: TestClient, table: type[Any]) -> int:
    with app_of(client).state.services.sessions() as session:
        query = select(func.count()).select_from(table)
        if table is Identity:
            query = query.where(Identity.person_number != "token-stock")
        return int(session.scalar(query) or 0)


def ok(answer: Any, status: int = 200) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    return body


def problem_of(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["type"] == f"urn:akkreditiv:problem:{code}"
    return body


def start(http: TestClient, person: Person, **body: Any) -> str:
    started = ok(http.post("/migrations", json={"user_id": person.user_id, **body}), 201)
    person.index = started["index"]
    return str(started["id"])


@pytest.fixture
def person_client(settings: Settings) -> Iterator[TestClient]:
    """A browser: no API key."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        yield http


@contextmanager
def new_app(settings: Settings) -> Iterator[TestClient]:
    """A fresh app instance on the same database and keys, as after a restart."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        yield http


# --- the whole flow ---------------------------------------------------------------------------


@BOTH_DATABASES
def test_self_service_migration_resumes_on_a_new_app_after_every_step(
    client: TestClient, settings: Settings
) -> None:
    person = add_person(client)
    token = stock_token(client)
    with new_app(settings) as http:
        flow = start(http, person)
    steps: list[tuple[str, str, dict[str, Any] | None]] = [
        ("prove", "prove", person.proof()),
        ("confirm", "confirm", {"person_number": person.person_number, "name": NAME}),
        ("choose", "choose", None),  # the proposal, just confirmed
        ("activate", "activate", None),
        ("complete", "complete", None),
    ]
    seen: list[tuple[str, int, str | None]] = []
    for action, path, body in steps:
        with new_app(settings) as http:
            where = ok(http.get(f"/migrations/{flow}"))
            assert where["next_action"] == action
            seen.append((where["state"], where["step"], where["next_action"]))
            if action == "activate":
                assert where["needed"] == ["serial", "code", "password"]
                body = {"password": NEW_PASSWORD, "serial": token.serial, "code": code_of(token)}
            if action == "choose":
                assert where["proposal"] == ["code_display", "password"]
            ok(http.post(f"/migrations/{flow}/{path}", json=body))
    with new_app(settings) as http:
        done = ok(http.get(f"/migrations/{flow}"))
    assert seen == [
        ("started", 1, "prove"),
        ("legacy_proven", 2, "confirm"),
        ("details_confirmed", 3, "choose"),
        ("authenticator_chosen", 4, "activate"),
        ("activation_pending", 5, "complete"),
    ]
    assert (done["state"], done["step"], done["of"], done["next_action"]) == (
        "completed",
        5,
        5,
        None,
    )
    assert done["person_number"].endswith("-****")
    identity = ok(client.get(f"/identities/{done['identity_id']}"))
    assert identity["identity_assurance"] == "substantial"
    assert identity["proofing"][0]["document_kind"] == "legacy_eid"
    assert count(client, Identity) == 1


@pytest.mark.parametrize(
    ("channel", "role", "operators", "level"),
    [
        ("bank", Role.OPERATOR_BANK, ["bank-op"], "substantial"),
        ("service_centre", Role.OPERATOR_CENTRE, ["centre-op", "centre-op-2"], "high"),
    ],
)
def test_an_operator_drives_an_assisted_migration(
    client: TestClient,
    settings: Settings,
    person_client: TestClient,
    channel: str,
    role: Role,
    operators: list[str],
    level: str,
) -> None:
    person = add_person(client)
    token = stock_token(client)
    operator = make_key(settings, operators[0], role)
    assisted = {
        "channel": channel,
        "checks": {"document_kind": "passport"},
        "operator_ids": operators,
    }
    answer = person_client.post(
        "/migrations", json={"user_id": person.user_id, **assisted}, headers=operator
    )
    flow = ok(answer, 201)["id"]
    person.index = answer.json()["index"]
    # Every step of an assisted flow needs the operator's key: the browser alone gets 401.
    unauthenticated = person_client.get(f"/migrations/{flow}")
    problem_of(unauthenticated, 401, "unauthenticated")
    assert unauthenticated.headers["www-authenticate"].startswith("Bearer")

    def post(path: str, body: dict[str, Any] | None = None) -> Any:
        return person_client.post(f"/migrations/{flow}/{path}", json=body, headers=operator)

    ok(post("prove", person.proof()))
    ok(post("confirm", {"person_number": person.person_number, "name": NAME}))
    ok(post("choose", {"kinds": ["code_display"]}))
    ok(post("activate", {"serial": token.serial, "code": code_of(token)}))
    done = ok(post("complete"))
    assert (done["state"], done["channel"]) == ("completed", channel)
    identity = ok(client.get(f"/identities/{done['identity_id']}"))
    assert identity["proofing"][0]["operator_ids"] == operators
    if level == "high":
        # One key's two names give Substantial; the second operator's own key gives High.
        assert identity["identity_assurance"] == "substantial"
        identity = second_operator_approves(client, identity)
    assert identity["identity_assurance"] == level
    with app_of(client).state.services.sessions() as session:
        channels = set(session.scalars(select(MigrationEvent.channel)))
    assert {str(c) for c in channels} == {channel}


def test_only_operators_of_the_channel_start_and_drive_an_assisted_flow(
    client: TestClient, settings: Settings, person_client: TestClient
) -> None:
    person = add_person(client)
    bank = make_key(settings, "bank-op", Role.OPERATOR_BANK)
    centre = make_key(settings, "centre-op", Role.OPERATOR_CENTRE)
    provider = make_key(settings, "https://sp.example", Role.PROVIDER)
    body = {
        "user_id": person.user_id,
        "channel": "bank",
        "checks": {"document_kind": "passport"},
        "operator_ids": ["bank-op"],
    }
    problem_of(person_client.post("/migrations", json=body), 401, "unauthenticated")
    problem_of(person_client.post("/migrations", json=body, headers=centre), 403, "forbidden")
    problem_of(person_client.post("/migrations", json=body, headers=provider), 403, "forbidden")
    other = {**body, "operator_ids": ["someone-else"]}
    problem_of(person_client.post("/migrations", json=other, headers=bank), 403, "forbidden")
    unchecked = {k: v for k, v in body.items() if k != "checks"}
    problem_of(person_client.post("/migrations", json=unchecked, headers=bank), 403, "forbidden")
    self_with_checks = {**body, "channel": "self_service"}
    problem_of(person_client.post("/migrations", json=self_with_checks), 403, "forbidden")
    flow = ok(person_client.post("/migrations", json=body, headers=bank), 201)["id"]
    problem_of(person_client.get(f"/migrations/{flow}", headers=centre), 403, "forbidden")
    # The person may carry on at home: a self-service start moves the flow there.
    assert start(person_client, person) == flow
    proven = ok(person_client.post(f"/migrations/{flow}/prove", json=person.proof()))
    assert proven["channel"] == "self_service"


# --- idempotency and concurrency --------------------------------------------------------------


@BOTH_DATABASES
def test_every_step_sent_twice_answers_the_same(
    client: TestClient, person_client: TestClient
) -> None:
    person = add_person(client)
    token = stock_token(client)
    flow = start(person_client, person)
    first_proof = person.proof()
    for path, body in [
        ("prove", first_proof),
        ("confirm", {"person_number": person.person_number, "name": NAME}),
        ("choose", {"kinds": ["code_display"]}),
        ("activate", {"serial": token.serial, "code": code_of(token)}),
        ("complete", None),
    ]:
        once = ok(person_client.post(f"/migrations/{flow}/{path}", json=body))
        twice = ok(person_client.post(f"/migrations/{flow}/{path}", json=body))
        assert once == twice
    assert count(client, Identity) == 1
    with app_of(client).state.services.sessions() as session:
        steps = list(session.scalars(select(MigrationEvent.step).order_by(MigrationEvent.id)))
    assert steps == [
        "started",
        "legacy_proven",
        "details_confirmed",
        "authenticator_chosen",
        "activated",
        "completed",
    ]


@BOTH_DATABASES
def test_a_failed_token_activation_leaves_no_identity_and_can_be_retried(
    client: TestClient, person_client: TestClient
) -> None:
    person = add_person(client)
    token = stock_token(client)
    flow = start(person_client, person)
    ok(person_client.post(f"/migrations/{flow}/prove", json=person.proof()))
    ok(
        person_client.post(
            f"/migrations/{flow}/confirm",
            json={"person_number": person.person_number, "name": NAME},
        )
    )
    ok(person_client.post(f"/migrations/{flow}/choose", json={"kinds": ["code_display"]}))
    right = code_of(token)
    wrong = f"{(int(right) + 500_000) % 10**6:06d}"
    failed = person_client.post(
        f"/migrations/{flow}/activate", json={"serial": token.serial, "code": wrong}
    )
    problem_of(failed, 400, "activation-code-rejected")
    assert right not in failed.text
    assert wrong not in failed.text
    problem_of(
        person_client.post(f"/migrations/{flow}/activate", json={"serial": token.serial}),
        422,
        "activation-input-missing",
    )
    assert count(client, Identity) == 0
    where = ok(person_client.get(f"/migrations/{flow}"))
    assert (where["state"], where["next_action"], where["identity_id"]) == (
        "activation_pending",
        "activate",
        None,
    )
    done = ok(
        person_client.post(
            f"/migrations/{flow}/activate", json={"serial": token.serial, "code": code_of(token)}
        )
    )
    assert done["next_action"] == "complete"
    assert count(client, Identity) == 1


# --- what is told, and when ---------------------------------------------------------------------


def test_a_user_id_nobody_has_gets_the_same_answers_until_the_proof(
    client: TestClient, person_client: TestClient
) -> None:
    person = add_person(client)
    real = ok(person_client.post("/migrations", json={"user_id": person.user_id}), 201)
    nobody = ok(person_client.post("/migrations", json={"user_id": "nobody-here"}), 201)
    assert (
        nobody["id"]
        == ok(person_client.post("/migrations", json={"user_id": "nobody-here"}), 201)["id"]
    )

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        drop = {"id", "index"}
        return {k: v for k, v in a.items() if k not in drop} == {
            k: v for k, v in b.items() if k not in drop
        }

    assert same(real, nobody)
    assert same(
        ok(person_client.get(f"/migrations/{real['id']}")),
        ok(person_client.get(f"/migrations/{nobody['id']}")),
    )
    assert same(
        ok(person_client.get(f"/migrations/{real['id']}")),
        ok(person_client.get(f"/migrations/{uuid.uuid4()}")),
    )
    person.index = real["index"]
    wrong = person_client.post(f"/migrations/{real['id']}/prove", json=person.proof("forkert"))
    unknown = person_client.post(
        f"/migrations/{nobody['id']}/prove",
        json={"user_id": "nobody-here", "password": PASSWORD, "code": "123456"},
    )
    bodies = [problem_of(answer, 401, "verification-failed") for answer in (wrong, unknown)]
    assert {body["detail"] for body in bodies} == {bodies[0]["detail"]}
    assert all(len(body["index"]) == 4 for body in bodies)
    for path in ("confirm", "choose", "activate", "complete"):
        for flow in (real["id"], nobody["id"]):
            body = (
                {"person_number": person.person_number, "name": NAME} if path == "confirm" else None
            )
            problem_of(
                person_client.post(f"/migrations/{flow}/{path}", json=body), 409, "proof-required"
            )


def test_each_failure_is_a_clear_problem(client: TestClient, person_client: TestClient) -> None:
    person = add_person(client)
    flow = start(person_client, person)
    # Failures throttle the legacy user id from this address (no one is locked).
    for _ in range(SUBJECT_RATE.burst):
        failed = person_client.post(f"/migrations/{flow}/prove", json=person.proof("forkert"))
        person.index = problem_of(failed, 401, "verification-failed")["index"]
    throttled = person_client.post(f"/migrations/{flow}/prove", json=person.proof())
    problem_of(throttled, 429, "rate-limited")

    other = add_person(client)
    flow = start(person_client, other)
    ok(person_client.post(f"/migrations/{flow}/prove", json=other.proof()))
    out_of_order = person_client.post(f"/migrations/{flow}/choose", json={})
    assert problem_of(out_of_order, 409, "step-not-available")["next_action"] == "confirm"
    mismatch = person_client.post(
        f"/migrations/{flow}/confirm", json={"person_number": "120375-0000", "name": NAME}
    )
    body = problem_of(mismatch, 422, "details-mismatch")
    assert body["field"] == "person_number"
    assert "120375" not in mismatch.text
    invalid = person_client.post(
        f"/migrations/{flow}/confirm", json={"person_number": "999999-9999", "name": NAME}
    )
    problem_of(invalid, 400, "invalid-person-number")
    problem_of(
        person_client.post(f"/migrations/{flow}/choose", json={"kinds": ["password"]}),
        422,
        "invalid-choice",
    )
    assert count(client, Identity) == 0


def test_a_person_who_migrated_is_told_so_after_the_proof(
    client: TestClient, person_client: TestClient
) -> None:
    person = add_person(client)
    token = stock_token(client)
    flow = start(person_client, person)
    for path, body in [
        ("prove", person.proof()),
        ("confirm", {"person_number": person.person_number, "name": NAME}),
        ("choose", {"kinds": ["code_display"]}),
        ("activate", {"serial": token.serial, "code": code_of(token)}),
        ("complete", None),
    ]:
        ok(person_client.post(f"/migrations/{flow}/{path}", json=body))
    again = start(person_client, person)
    assert again == flow
    assert ok(person_client.get(f"/migrations/{flow}"))["next_action"] == "prove"
    refused = person_client.post(f"/migrations/{flow}/prove", json=person.proof())
    assert "moved to the new eID" in problem_of(refused, 409, "already-migrated")["detail"]
    assert ok(person_client.get(f"/migrations/{flow}"))["state"] == "completed"
    assert count(client, Identity) == 1


# --- malformed requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("", {}),
        ("", {"user_id": 5}),
        ("", {"user_id": "has space"}),
        ("", {"user_id": "x" * 65}),
        ("", {"user_id": "nemuser", "channel": "post_office"}),
        ("", {"user_id": "nemuser", "extra": 1}),
        ("", {"user_id": "nemuser", "operator_ids": ["a b"]}),
        ("", {"user_id": "nemuser", "checks": {"document_kind": "library_card"}}),
        ("", ["user_id"]),
        ("", "user_id"),
        ("/prove", {"user_id": "nemuser", "password": "x", "code": "12ab56"}),
        ("/prove", {"user_id": "nemuser", "password": "", "code": "123456"}),
        ("/prove", {"user_id": "nemuser", "password": "x" * 300, "code": "123456"}),
        ("/prove", {"user_id": "nemuser", "password": "x", "code": "1", "method": "sms"}),
        ("/confirm", {"person_number": "1" * 40, "name": NAME}),
        ("/confirm", {"person_number": "120375-1234", "name": "bad\x00name"}),
        ("/choose", {"kinds": ["carrier_pigeon"]}),
        ("/choose", {"kinds": "code_display"}),
        ("/activate", {"serial": "\x07", "code": "123456"}),
        ("/activate", {"password": "y" * 2000}),
        ("/credentials", {"credential_id": "not-a-uuid"}),
        ("/credentials", {}),
    ],
)
def test_malformed_bodies_answer_4xx_never_500(
    person_client: TestClient, path: str, body: Any
) -> None:
    url = "/migrations" if not path else f"/migrations/{uuid.uuid4()}{path}"
    answer = person_client.post(url, json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == PROBLEM


def test_a_flow_id_that_is_not_a_uuid_is_404_or_422(person_client: TestClient) -> None:
    answer = person_client.get("/migrations/not-a-flow")
    assert answer.status_code in (404, 422)
    assert answer.headers["content-type"] == PROBLEM
