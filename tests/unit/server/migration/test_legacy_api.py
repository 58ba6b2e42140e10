"""Legacy login over HTTP on SQLite (and PostgreSQL where it behaves differently): a provider
begins it, the person sends user id and password (answered with a key number, the same for anyone),
then the code (a signed legacy assertion, or one public failure); the lockout, per-source
throttling, the shutdown date, new-only providers, migrated users, the card's last codes, and 4xx
(never 500) for malformed requests."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from devices.protocol.otp import hotp
from server.app import create_app
from server.services.access import Role
from server.services.migration.formats import (
    CARD_SIZE,
    card_indexes,
    code_for,
    hash_legacy_password,
    new_card_secret,
)
from server.services.migration.legacy_proof import closing_time, legacy_subject
from server.services.migration.store import LegacyStore
from server.services.pseudonyms import Pseudonyms
from server.services.throttles import NETWORK_RATE, SUBJECT_RATE
from server.settings import Settings
from server.storage.tables import AuditEntry
from tests.unit.server.conftest import BOTH_DATABASES, SQLITE_ONLY, TEST_PROVIDER, make_key
from tests.unit.server.people import assert_problem

pytestmark = SQLITE_ONLY  # and BOTH_DATABASES where marked (see the conftest)

PASSWORD = "blåbærgrød med fløde"  # noqa: S105 - a test password
WRONG = "forkert"
_serials = itertools.count(2000)


class Clock:
    """Seconds since the epoch, moved by the test (the service's ``Services.clock``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- helpers ----------------------------------------------------------------------------------


def app_of(client: TestClient) -> FastAPI:
    return cast(FastAPI, client.app)


@contextmanager
def seed_store(client: TestClient) -> Iterator[LegacyStore]:
    """A legacy store on the app's own database, committed when the block ends."""
    app = app_of(client)
    services = app.state.services
    with services.sessions() as session, session.begin():
        yield LegacyStore(
            session,
            services.secrets,
            services.clock,
            decoy_key=services.keycard_secrets.derive("legacy-decoy"),
        )


def add_person(
    client: TestClient, used: list[int] | None = None, *, token: bytes | None = None
) -> tuple[str, bytes]:
    """A legacy user with an active key card (and, if given, an HOTP code token)."""
    serial = next(_serials)
    user_id = f"nemuser{serial}"
    secret = new_card_secret()
    with seed_store(client) as store:
        store.add_user(
            user_id,
            f"020275-{serial}",
            "Karen Blixen",
            1975,
            hash_legacy_password(PASSWORD, iterations=1000),
        )
        store.issue_card(user_id, secret, serial=f"KC{serial}", used_positions=used or [])
        if token is not None:
            store.issue_token(user_id, token, algorithm="hotp", serial=f"CT{serial}")
    return user_id, secret


def begin(client: TestClient) -> str:
    answer = client.post("/legacy/authentications", json={"provider": TEST_PROVIDER})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def send_password(
    client: TestClient, transaction: str, user_id: str, password: str = PASSWORD
) -> str:
    answer = client.post(
        f"/legacy/authentications/{transaction}/password",
        json={"user_id": user_id, "password": password},
    )
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["index"]
    index: str = answer.json()["index"]
    assert len(index) == 4
    assert index.isdigit()
    return index


def send_code(client: TestClient, transaction: str, code: str, **extra: Any) -> Any:
    return client.post(f"/legacy/authentications/{transaction}/code", json={"code": code, **extra})


def log_in(client: TestClient, user_id: str, secret: bytes) -> dict[str, Any]:
    transaction = begin(client)
    index = send_password(client, transaction, user_id)
    answer = send_code(client, transaction, code_for(secret, index))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def fail(client: TestClient, user_id: str, password: str = WRONG) -> Any:
    """A login with a wrong password (or an unknown user id): its answer."""
    transaction = begin(client)
    send_password(client, transaction, user_id, password)
    return send_code(client, transaction, "000000")


def audit(client: TestClient, event: str | None = None) -> list[dict[str, Any]]:
    with app_of(client).state.services.sessions() as session:
        query = select(AuditEntry).order_by(AuditEntry.seq)
        if event is not None:
            query = query.where(AuditEntry.event == event)
        return [
            {"event": entry.event, "actor": entry.actor, **dict(entry.details)}
            for entry in session.scalars(query)
        ]


def fake_clock(client: TestClient) -> Clock:
    clock = Clock(time.time())
    app_of(client).state.services.clock = clock
    return clock


@pytest.fixture
def app_with(settings: Settings) -> Iterator[Any]:
    """Another app on the same database and keys, with some settings changed."""
    clients: list[TestClient] = []

    def make(**changes: Any) -> TestClient:
        changed = settings.model_copy(update=changes)
        headers = make_key(changed, TEST_PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
        test_client = TestClient(
            create_app(changed), raise_server_exceptions=False, headers=headers
        )
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.__exit__(None, None, None)


# --- the login --------------------------------------------------------------------------------


@BOTH_DATABASES
def test_a_legacy_login_gives_a_legacy_assertion_that_verifies_with_the_jwks(
    client: TestClient, settings: Settings
) -> None:
    user_id, secret = add_person(client)
    transaction = begin(client)
    index = send_password(client, transaction, user_id)
    assert index in card_indexes(secret)
    answer = send_code(client, transaction, code_for(secret, index))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["level"] == "substantial"
    assert body["token_type"] == "JWT"  # noqa: S105 - the token format
    assert (body["codes_left"], body["new_card_due"], body["notice"]) == (
        CARD_SIZE - 1,
        False,
        None,
    )
    keys = client.get("/.well-known/jwks.json").json()
    claims = jwt.decode(
        body["assertion"], jwt.PyJWK(keys["keys"][0]), algorithms=["ES256"], audience=TEST_PROVIDER
    )
    assert claims["iss"] == settings.issuer
    assert claims["amr"] == ["legacy_password", "legacy_key_card"]
    assert (claims["loa"], claims["legacy"], claims["txn"]) == ("substantial", True, transaction)
    pseudonyms = Pseudonyms.from_file(settings.pseudonym_key_file)
    assert claims["sub"] == str(pseudonyms.pseudonym(legacy_subject(user_id), TEST_PROVIDER))
    # Finished: the code step does not run twice.
    assert_problem(send_code(client, transaction, code_for(secret, index)), 409, "conflict")
    entries = audit(client)
    assert [e["event"] for e in entries if e["event"].startswith("legacy.")] == [
        "legacy.login.begin",
        "legacy.login.password",
        "legacy.login",
    ]
    login = entries[-1]
    assert (login["result"], login["legacy_user"], login["transaction"]) == (
        "ok",
        user_id,
        transaction,
    )
    assert login["actor"] == "source:testclient"
    text = json.dumps(entries, ensure_ascii=False)
    assert PASSWORD not in text
    assert code_for(secret, index) not in text


@BOTH_DATABASES
def test_every_failure_gets_the_same_answer_and_its_own_audit_reason(
    client: TestClient,
) -> None:
    user_id, secret = add_person(client)
    first, second = begin(client), begin(client)
    shown_first = send_password(client, first, user_id)
    shown_second = send_password(client, second, user_id)
    while shown_second == shown_first:  # another login, with another key number
        second = begin(client)
        shown_second = send_password(client, second, user_id)
    assert send_code(client, first, code_for(secret, shown_first)).status_code == 200
    answers = []
    # The code of a key number another login used already.
    answers.append(send_code(client, second, code_for(secret, shown_first)))
    # The code of another key number.
    transaction = begin(client)
    shown = send_password(client, transaction, user_id)
    other = next(i for i in card_indexes(secret) if i not in (shown, shown_first))
    answers.append(send_code(client, transaction, code_for(secret, other)))
    # A wrong password with the right code, and an unknown user id.
    transaction = begin(client)
    shown = send_password(client, transaction, user_id, "forkert")
    answers.append(send_code(client, transaction, code_for(secret, shown)))
    answers.append(fail(client, "nobody-has-this-id", PASSWORD))
    bodies = [assert_problem(answer, 401, "verification-failed") for answer in answers]
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["detail"] == "the user ID, password or code is not right; try again"
    reasons = [e["reason"] for e in audit(client, "legacy.login") if e["result"] == "failed"]
    assert reasons == ["code-used", "code-for-other-index", "wrong-password", "unknown-user"]


def test_a_failed_code_sends_the_login_back_to_the_password_step(client: TestClient) -> None:
    user_id, secret = add_person(client)
    transaction = begin(client)
    send_password(client, transaction, user_id, "forkert")
    assert_problem(send_code(client, transaction, "000000"), 401, "verification-failed")
    assert_problem(send_code(client, transaction, "000000"), 409, "conflict")
    index = send_password(client, transaction, user_id)
    assert send_code(client, transaction, code_for(secret, index)).status_code == 200


def test_the_password_step_answers_alike_for_unknown_and_wrong(client: TestClient) -> None:
    user_id, _secret = add_person(client)
    for who, password in ((user_id, PASSWORD), (user_id, "forkert"), ("nobody-here", PASSWORD)):
        transaction = begin(client)
        index = send_password(client, transaction, who, password)  # checks the answer's form
        assert len(index) == 4


def test_a_code_token_logs_in_with_its_own_amr(client: TestClient) -> None:
    seed = os.urandom(20)
    user_id, _ = add_person(client, token=seed)
    transaction = begin(client)
    send_password(client, transaction, user_id)
    answer = send_code(client, transaction, hotp(seed, 0, 6), method="code_token")
    assert answer.status_code == 200, answer.text
    assert answer.json()["codes_left"] is None
    claims = jwt.decode(answer.json()["assertion"], options={"verify_signature": False})
    assert claims["amr"] == ["legacy_password", "legacy_code_token"]


# --- limits -----------------------------------------------------------------------------------


@BOTH_DATABASES
def test_failures_throttle_that_address_and_lock_no_one(client: TestClient) -> None:
    clock = fake_clock(client)
    user_id, secret = add_person(client)
    for _ in range(SUBJECT_RATE.burst - 1):
        assert_problem(fail(client, user_id), 401, "verification-failed")
    log_in(client, user_id, secret)  # empties the throttle of this address
    for _ in range(SUBJECT_RATE.burst):
        assert_problem(fail(client, user_id), 401, "verification-failed")
    transaction = begin(client)
    answer = client.post(
        f"/legacy/authentications/{transaction}/password",
        json={"user_id": user_id, "password": PASSWORD},
    )
    throttled = assert_problem(answer, 429, "rate-limited")
    wait = int(SUBJECT_RATE.interval.total_seconds())
    assert (throttled["retry_after"], answer.headers["retry-after"]) == (wait, str(wait))
    # The person, from their own address, at once: nothing of theirs was locked.
    own = TestClient(
        client.app,
        raise_server_exceptions=False,
        client=("198.51.100.7", 4711),
        headers=dict(client.headers),
    )
    log_in(own, user_id, secret)
    # A user id nobody has is throttled the same way, so the answer tells nobody who exists.
    for _ in range(SUBJECT_RATE.burst):
        assert_problem(fail(client, "nobody-here"), 401, "verification-failed")
    transaction = begin(client)
    answer = client.post(
        f"/legacy/authentications/{transaction}/password",
        json={"user_id": "nobody-here", "password": PASSWORD},
    )
    assert_problem(answer, 429, "rate-limited")
    clock.now += wait
    log_in(client, user_id, secret)


@BOTH_DATABASES
def test_failures_from_one_source_throttle_only_that_source(client: TestClient) -> None:
    # The service's clock stands still: on a slow run the 40 failures took over 15 s, and the
    # network's bucket had let one more attempt through by the time the right password came.
    fake_clock(client)
    user_id, secret = add_person(client)
    for number in range(NETWORK_RATE.burst):  # as many user ids: no user id's own throttle
        assert_problem(fail(client, f"guess{number}"), 401, "verification-failed")
    transaction = begin(client)
    answer = client.post(
        f"/legacy/authentications/{transaction}/password",
        json={"user_id": user_id, "password": PASSWORD},
    )
    assert_problem(answer, 429, "rate-limited")
    assert audit(client, "legacy.login.refused")[-1]["reason"] == "rate-limited"
    elsewhere = TestClient(client.app, raise_server_exceptions=False, client=("198.51.100.7", 4711))
    index = send_password(elsewhere, transaction, user_id)
    assert send_code(elsewhere, transaction, code_for(secret, index)).status_code == 200


# --- shutdown, new-only providers, migrated users ----------------------------------------------


def test_legacy_login_closes_on_the_shutdown_date(app_with: Any) -> None:
    day = dt.date(2027, 6, 1)
    client = app_with(legacy_shutdown_date=day)
    clock = fake_clock(client)
    closing = closing_time(day).timestamp()
    clock.now = closing - 60
    user_id, secret = add_person(client)
    log_in(client, user_id, secret)
    transaction = begin(client)
    index = send_password(client, transaction, user_id)
    clock.now = closing
    closed = assert_problem(
        send_code(client, transaction, code_for(secret, index)), 410, "legacy-closed"
    )
    assert closed["detail"] == "the legacy eID has closed; log in with the new eID"
    attempt = audit(client, "legacy.login")[-1]
    assert (attempt["result"], attempt["reason"]) == ("refused", "legacy-closed")
    assert_problem(client.post("/legacy/authentications", json={}), 410, "legacy-closed")
    refused = audit(client, "legacy.login.refused")
    assert refused[-1]["reason"] == "legacy-closed"


def test_a_new_only_provider_is_refused(app_with: Any, settings: Settings) -> None:
    client = app_with(legacy_new_only_providers=[TEST_PROVIDER])
    refused = assert_problem(
        client.post("/legacy/authentications", json={"provider": TEST_PROVIDER}),
        403,
        "new-eid-only",
    )
    assert "only the new eID" in refused["detail"]
    other = make_key(settings, "https://other.example", Role.PROVIDER)
    assert client.post("/legacy/authentications", headers=other).status_code == 201


@BOTH_DATABASES
def test_a_migrated_user_still_logs_in_and_keeps_the_new_pseudonym(
    client: TestClient,
) -> None:
    user_id, secret = add_person(client)
    enrolled = client.post(
        "/identities",
        json={
            "person_number": "020275-7777",
            "name": "Karen Blixen",
            "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
        },
    )
    assert enrolled.status_code == 201, enrolled.text
    identity = enrolled.json()["id"]
    with seed_store(client) as store:
        store.mark_migrated(user_id, uuid.UUID(identity))
    body = log_in(client, user_id, secret)
    claims = jwt.decode(body["assertion"], options={"verify_signature": False})
    seen = client.get(f"/identities/{identity}", params={"provider": TEST_PROVIDER}).json()
    assert claims["sub"] == seen["pseudonym"]["pseudonym"]
    assert claims["legacy"] is True


# --- the card's last codes ---------------------------------------------------------------------


def test_the_person_is_told_a_new_card_is_coming_at_twenty_left(client: TestClient) -> None:
    user_id, secret = add_person(client, used=list(range(CARD_SIZE - 21)))
    body = log_in(client, user_id, secret)
    assert (body["codes_left"], body["new_card_due"]) == (20, True)
    assert "new key card is on its way" in body["notice"]
    assert len(audit(client, "legacy.card.replacement_due")) == 1


def test_an_exhausted_card_is_refused_clearly_after_the_right_password(
    client: TestClient,
) -> None:
    user_id, secret = add_person(client, used=list(range(CARD_SIZE - 1)))
    body = log_in(client, user_id, secret)
    assert (body["codes_left"], body["new_card_due"]) == (0, True)
    assert "last code" in body["notice"]
    assert_problem(fail(client, user_id), 401, "verification-failed")
    transaction = begin(client)
    send_password(client, transaction, user_id)
    exhausted = assert_problem(send_code(client, transaction, "000000"), 409, "card-exhausted")
    assert "new key card" in exhausted["detail"]


# --- wrong requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "body"),
    [
        ("password", {"user_id": "nemuser1"}),
        ("password", {"user_id": "nemuser1", "password": "x", "extra": 1}),
        ("password", {"user_id": "nem user", "password": "x"}),
        ("password", {"user_id": "n\x00", "password": "x"}),
        ("password", {"user_id": "u" * 65, "password": "x"}),
        ("password", {"user_id": "nemuser1", "password": ""}),
        ("password", {"user_id": "nemuser1", "password": "p" * 257}),
        ("password", {"user_id": 7, "password": "x"}),
        ("password", []),
        ("code", {"code": "12a456"}),
        ("code", {"code": ""}),
        ("code", {"code": "123456", "method": "sms"}),
        ("code", {"code": 123456}),
        ("code", {}),
    ],
)
def test_malformed_bodies_are_refused_with_422(client: TestClient, step: str, body: Any) -> None:
    transaction = begin(client)
    answer = client.post(f"/legacy/authentications/{transaction}/{step}", json=body)
    problem = assert_problem(answer, 422, "invalid-request")
    assert "\x00" not in answer.text
    assert "p" * 257 not in answer.text
    assert problem["errors"]


def test_requests_that_do_not_fit_get_4xx(client: TestClient) -> None:
    unknown = str(uuid.uuid4())
    assert_problem(
        client.post(
            f"/legacy/authentications/{unknown}/password", json={"user_id": "a", "password": "b"}
        ),
        404,
        "not-found",
    )
    assert_problem(
        client.post(f"/legacy/authentications/{unknown}/code", json={"code": "1"}), 404, "not-found"
    )
    bad = client.post("/legacy/authentications/not-a-uuid/code", json={"code": "123456"})
    assert_problem(bad, 422, "invalid-request")
    not_json = client.post(
        f"/legacy/authentications/{begin(client)}/password",
        content=b"{user_id",
        headers={"content-type": "application/json"},
    )
    assert_problem(not_json, 422, "invalid-request")
    # The code before the password, and a new eID login at the legacy routes (and back).
    transaction = begin(client)
    assert_problem(send_code(client, transaction, "123456"), 409, "conflict")
    new_login = client.post("/authentications", json={"provider": TEST_PROVIDER}).json()["id"]
    assert_problem(send_code(client, new_login, "123456"), 404, "not-found")
    identify = client.post(
        f"/authentications/{transaction}/identify", json={"person_number": "020275-1234"}
    )
    assert_problem(identify, 404, "not-found")


def test_begin_needs_a_provider_key_for_itself(client: TestClient, settings: Settings) -> None:
    operator = make_key(settings, "bank-system", Role.OPERATOR_BANK)
    assert_problem(client.post("/legacy/authentications", headers=operator), 403, "forbidden")
    assert_problem(
        client.post("/legacy/authentications", json={"provider": "https://other.example"}),
        403,
        "forbidden",
    )
    anonymous = TestClient(client.app, raise_server_exceptions=False)
    assert_problem(anonymous.post("/legacy/authentications"), 401, "unauthenticated")
