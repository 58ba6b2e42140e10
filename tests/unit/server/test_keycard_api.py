"""Legacy key cards over HTTP on SQLite (and PostgreSQL where it behaves differently): issuing a
printable card, activation with the code for a key number the service picks, the key-card login
factor (codes used once, the key number spent on every try, blocking, replacement due at 20 left,
an exhausted card), answers that do not tell who has an account or a card, and 4xx (never 500) for
malformed requests."""

from __future__ import annotations

import itertools
import stat
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.services.keycard.login import decoy_indexes
from server.services.keycard.pepper import KeyCardSecrets
from server.services.throttles import NETWORK_RATE, TOKEN_BLOCK
from server.settings import Settings
from server.storage.tables import AuditEntry, AuthTransaction, Credential
from tests.unit.server.conftest import BOTH_DATABASES, SQLITE_ONLY
from tests.unit.server.people import assert_problem, enrol_via_api

pytestmark = SQLITE_ONLY  # and BOTH_DATABASES where marked (see the conftest)

PROVIDER = "https://sp.example"
PASSWORD = "kvadratrod af syv og tyve"  # noqa: S105 - a test password
UNKNOWN = "311299-9999"
_numbers = itertools.count(4000)


# --- helpers ----------------------------------------------------------------------------------


def enrol(client: TestClient) -> tuple[str, str]:
    return enrol_via_api(client, f"150372-{next(_numbers)}", "Karen Blixen")


def issue(client: TestClient, identity: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Issue a card; the credential and the printed codes by key number."""
    answer = client.post(f"/identities/{identity}/key-cards", json={})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return body["credential"], {pair["index"]: pair["code"] for pair in body["card"]["pairs"]}


def activate(client: TestClient, credential: str, codes: dict[str, str]) -> dict[str, Any]:
    begun = client.post(f"/credentials/{credential}/key-card/activation/begin")
    assert begun.status_code == 200, begun.text
    index = begun.json()["index"]
    done = client.post(
        f"/credentials/{credential}/key-card/activation/complete", json={"code": codes[index]}
    )
    assert done.status_code == 200, done.text
    result: dict[str, Any] = done.json()
    return result


def holder(client: TestClient) -> tuple[str, str, str, dict[str, str]]:
    """A person with an active key card: identity, person number, credential id, codes."""
    identity, number = enrol(client)
    credential, codes = issue(client, identity)
    activate(client, credential["id"], codes)
    return identity, number, credential["id"], codes


def login(client: TestClient, number: str, level: str = "low") -> str:
    begun = client.post("/authentications", json={"provider": PROVIDER, "min_level": level})
    assert begun.status_code == 201, begun.text
    transaction = str(begun.json()["id"])
    identified = client.post(
        f"/authentications/{transaction}/identify", json={"person_number": number}
    )
    assert identified.status_code == 200, identified.text
    return transaction


def key_number(client: TestClient, transaction: str) -> str:
    answer = client.post(f"/authentications/{transaction}/key-card/begin")
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"index"}
    index: str = answer.json()["index"]
    return index


def send_code(client: TestClient, transaction: str, code: str) -> Any:
    return client.post(f"/authentications/{transaction}/key-card", json={"code": code})


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def credential_row(client: TestClient, credential: str) -> Credential:
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        row: Credential | None = session.get(Credential, uuid.UUID(credential))
        assert row is not None
        session.expunge(row)
        return row


def spend(client: TestClient, credential: str, indexes: list[str]) -> None:
    """Mark ``indexes`` used, as if the holder had logged in with each of them."""
    with client.app.state.services.sessions() as session, session.begin():  # type: ignore[attr-defined]
        row = session.get(Credential, uuid.UUID(credential))
        assert row is not None
        used = sorted({*row.public_data["used"], *indexes})
        remaining = row.public_data["size"] - len(used)
        row.public_data = {**row.public_data, "used": used, "remaining": remaining}


def audit_events(client: TestClient, event: str) -> list[dict[str, Any]]:
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        entries = session.scalars(select(AuditEntry).where(AuditEntry.event == event))
        return [dict(entry.details) for entry in entries]


def leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    elif value is not None:
        yield str(value)


# --- issuance ---------------------------------------------------------------------------------


@BOTH_DATABASES
def test_issue_answers_the_printable_card_once_and_keeps_no_code(client: TestClient) -> None:
    identity, _ = enrol(client)
    answer = client.post(f"/identities/{identity}/key-cards", json={"label": "post"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    pairs = body["card"]["pairs"]
    indexes = [pair["index"] for pair in pairs]
    assert len(pairs) == 148
    assert len(set(indexes)) == 148
    assert all(len(i) == 4 and i.isdigit() for i in indexes)
    assert all(len(p["code"]) == 6 and p["code"].isdigit() for p in pairs)
    credential = body["credential"]
    assert credential["kind"] == "key_card"
    assert credential["state"] == "shipped"
    assert credential["serial"] == body["card"]["serial"]
    assert credential["label"] == "post"
    assert credential["public_data"] == {
        "size": 148,
        "code_digits": 6,
        "used": [],
        "remaining": 148,
        "replacement_due": False,
    }
    codes = {pair["code"] for pair in pairs}
    shown = client.get(f"/credentials/{credential['id']}").json()
    assert "pairs" not in shown
    assert not codes & set(leaves(shown))
    row = credential_row(client, credential["id"])
    assert row.secret_ciphertext is not None
    assert not any(code.encode() in row.secret_ciphertext for code in codes)
    for event in ("credential.ordered", "credential.state_changed", "credential.issued"):
        [details] = audit_events(client, event)
        assert not codes & set(leaves(details))
        assert not set(indexes) & set(leaves(details))


def test_the_pepper_file_is_made_on_first_start_owner_only(
    client: TestClient, settings: Settings
) -> None:
    info = settings.keycard_pepper_file.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_size == 32
    assert settings.keycard_pepper_file.parent == settings.kek_file.parent


@BOTH_DATABASES
def test_one_live_card_per_identity_and_replacement_fills_the_new_order(
    client: TestClient,
) -> None:
    identity, _, credential, _ = holder(client)
    assert_problem(
        client.post(f"/identities/{identity}/key-cards"), 409, "credential-limit-reached"
    )
    ordered = client.post(f"/credentials/{credential}/replace", json={})
    assert ordered.status_code == 201, ordered.text
    assert ordered.json()["state"] == "ordered"
    new, _ = issue(client, identity)
    assert new["id"] == ordered.json()["id"]
    assert new["state"] == "shipped"
    assert new["public_data"]["replaces"] == credential
    states = {c["id"]: c["state"] for c in client.get(f"/identities/{identity}/credentials").json()}
    assert states == {credential: "replaced", new["id"]: "shipped"}


def test_a_suspended_identity_gets_no_card(client: TestClient) -> None:
    identity, _ = enrol(client)
    assert client.post(f"/identities/{identity}/suspend").status_code == 200
    assert_problem(client.post(f"/identities/{identity}/key-cards"), 409, "identity-not-active")


# --- activation -------------------------------------------------------------------------------


@BOTH_DATABASES
def test_activation_with_the_code_beside_the_chosen_key_number(client: TestClient) -> None:
    identity, _ = enrol(client)
    credential, codes = issue(client, identity)
    path = f"/credentials/{credential['id']}/key-card/activation"
    index = client.post(f"{path}/begin").json()["index"]
    assert index in codes
    assert client.post(f"{path}/begin").json()["index"] == index  # the same until tried
    pending = client.get(f"/credentials/{credential['id']}").json()
    assert pending["state"] == "activation_pending"
    done = client.post(f"{path}/complete", json={"code": codes[index]})
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "active"
    assert done.json()["public_data"]["used"] == [index]
    assert done.json()["public_data"]["remaining"] == 147
    assert "activation_index" not in done.json()["public_data"]
    assert_problem(client.post(f"{path}/begin"), 409, "invalid-transition")


def test_activation_needs_a_key_number_and_three_wrong_codes_block(client: TestClient) -> None:
    identity, _ = enrol(client)
    credential, codes = issue(client, identity)
    path = f"/credentials/{credential['id']}/key-card/activation"
    # Still shipped: there is no key number to answer yet.
    shipped = client.post(f"{path}/complete", json={"code": "123456"})
    assert_problem(shipped, 409, "invalid-transition")
    details = []
    for attempt in range(3):
        index = client.post(f"{path}/begin").json()["index"]
        answer = client.post(f"{path}/complete", json={"code": wrong(codes[index])})
        details.append(assert_problem(answer, 400, "activation-code-rejected")["detail"])
        # The try spent the key number: its right code no longer activates (and after the
        # third wrong code nothing does: the card is blocked).
        again = client.post(f"{path}/complete", json={"code": codes[index]})
        assert_problem(again, 409, "conflict" if attempt < 2 else "invalid-transition")
    assert "2 attempt(s) left" in details[0]
    assert client.get(f"/credentials/{credential['id']}").json()["state"] == "blocked"
    assert_problem(client.post(f"{path}/begin"), 409, "invalid-transition")


def test_a_malformed_activation_code_is_not_counted(client: TestClient) -> None:
    identity, _ = enrol(client)
    credential, codes = issue(client, identity)
    path = f"/credentials/{credential['id']}/key-card/activation"
    for _ in range(4):
        client.post(f"{path}/begin")
        answer = client.post(f"{path}/complete", json={"code": "12345"})
        assert_problem(answer, 400, "activation-code-rejected")
    assert activate(client, credential["id"], codes)["state"] == "active"


# --- login ------------------------------------------------------------------------------------


@BOTH_DATABASES
def test_login_with_the_key_card_and_with_a_password(client: TestClient) -> None:
    identity, number, credential, codes = holder(client)
    [activation_index] = credential_row(client, credential).public_data["used"]
    transaction = login(client, number)
    index = key_number(client, transaction)
    assert index in codes
    assert index != activation_index  # a used key number is never asked for again
    assert key_number(client, transaction) == index  # the same until tried
    accepted = send_code(client, transaction, codes[index])
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"factors": ["key_card"]}
    done = client.post(f"/authentications/{transaction}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["level"] == "low"

    # The legacy login used to migrate: password and key card reach Substantial.
    assert client.put(f"/identities/{identity}/password", json={"password": PASSWORD}).is_success
    transaction = login(client, number, level="substantial")
    assert client.post(
        f"/authentications/{transaction}/password", json={"password": PASSWORD}
    ).is_success
    index = key_number(client, transaction)
    assert send_code(client, transaction, f"{codes[index][:3]} {codes[index][3:]}").is_success
    done = client.post(f"/authentications/{transaction}/complete")
    assert done.status_code == 200, done.text
    claims = jwt.decode(done.json()["assertion"], options={"verify_signature": False})
    assert claims["loa"] == "substantial"
    assert claims["amr"] == ["key_card", "password"]
    row = credential_row(client, credential)
    assert row.public_data["remaining"] == 145
    assert row.failures == 0


def test_the_key_number_is_spent_by_every_try(client: TestClient) -> None:
    _, number, _, codes = holder(client)
    transaction = login(client, number)
    index = key_number(client, transaction)
    other = next(i for i in codes if i != index)
    assert_problem(send_code(client, transaction, codes[other]), 401, "verification-failed")
    # The right code for the number shown is no use now: that try is gone.
    assert_problem(send_code(client, transaction, codes[index]), 401, "verification-failed")
    index = key_number(client, transaction)
    assert send_code(client, transaction, codes[index]).status_code == 200


@BOTH_DATABASES
def test_a_used_code_is_not_accepted_again(client: TestClient) -> None:
    _, number, credential, codes = holder(client)
    first, second = login(client, number), login(client, number)
    index = key_number(client, first)
    # Two logins were shown the same key number before either used it (a race).
    with client.app.state.services.sessions() as session, session.begin():  # type: ignore[attr-defined]
        row = session.get(AuthTransaction, uuid.UUID(second))
        assert row is not None
        row.challenge = b"key-card:" + index.encode()
    assert send_code(client, first, codes[index]).status_code == 200
    assert_problem(send_code(client, second, codes[index]), 401, "verification-failed")
    assert credential_row(client, credential).failures == 0  # a replay is not a guess
    # And in the same login, the code cannot be sent twice.
    assert_problem(send_code(client, first, codes[index]), 401, "verification-failed")


@BOTH_DATABASES
def test_three_anonymous_wrong_codes_leave_the_card_working(client: TestClient) -> None:
    # The attack: a stranger who knows only the person number begins logins and sends wrong
    # codes. Before another factor of the login is proven, nothing of the card changes.
    _identity, number, credential, codes = holder(client)
    for _ in range(3):
        transaction = login(client, number)
        index = key_number(client, transaction)
        assert_problem(send_code(client, transaction, wrong(codes[index])), 401)
    row = credential_row(client, credential)
    assert (row.state.value, row.failures, row.blocked_until) == ("active", 0, None)
    transaction = login(client, number)
    index = key_number(client, transaction)
    assert send_code(client, transaction, codes[index]).status_code == 200


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@BOTH_DATABASES
def test_wrong_codes_after_a_password_block_the_card_for_a_while(client: TestClient) -> None:
    clock = _Clock(time.time())
    client.app.state.services.clock = clock  # type: ignore[attr-defined]
    identity, number, credential, codes = holder(client)
    assert client.put(f"/identities/{identity}/password", json={"password": PASSWORD}).is_success
    transaction = login(client, number)
    assert client.post(
        f"/authentications/{transaction}/password", json={"password": PASSWORD}
    ).is_success
    for attempt in range(2):
        index = key_number(client, transaction)
        assert_problem(send_code(client, transaction, wrong(codes[index])), 401)
        assert credential_row(client, credential).failures == attempt + 1
    index = key_number(client, transaction)
    answer = send_code(client, transaction, wrong(codes[index]))
    blocked = assert_problem(answer, 429, "credential-temporarily-blocked")
    first = int(TOKEN_BLOCK.total_seconds())
    assert (blocked["retry_after"], answer.headers["retry-after"]) == (first, str(first))
    row = credential_row(client, credential)
    assert (row.state.value, row.failures, row.blocks) == ("active", 0, 1)  # never for good
    [event] = audit_events(client, "credential.temporarily_blocked")
    assert event["credential_id"] == credential
    # A new login that proves the password is told how long to wait, at the key number.
    transaction = login(client, number)
    assert client.post(
        f"/authentications/{transaction}/password", json={"password": PASSWORD}
    ).is_success
    waiting = client.post(f"/authentications/{transaction}/key-card/begin")
    assert_problem(waiting, 429, "credential-temporarily-blocked")
    # A stranger's login is answered as any wrong code is: the block is not told to them.
    stranger = login(client, number)
    index = key_number(client, stranger)
    assert_problem(
        send_code(client, stranger, codes.get(index, "123456")), 401, "verification-failed"
    )
    clock.now += first
    transaction = login(client, number)
    index = key_number(client, transaction)
    assert send_code(client, transaction, codes[index]).status_code == 200
    row = credential_row(client, credential)
    assert (row.blocks, row.blocked_until) == (0, None)


@BOTH_DATABASES
def test_replacement_is_due_when_20_codes_remain(client: TestClient) -> None:
    _, number, credential, codes = holder(client)
    [activation_index] = credential_row(client, credential).public_data["used"]
    spend(client, credential, [i for i in sorted(codes) if i != activation_index][:126])
    shown = client.get(f"/credentials/{credential}").json()["public_data"]
    assert shown["remaining"] == 21
    assert shown["replacement_due"] is False
    assert audit_events(client, "credential.replacement_due") == []
    for _ in range(2):
        transaction = login(client, number)
        index = key_number(client, transaction)
        assert send_code(client, transaction, codes[index]).status_code == 200
    shown = client.get(f"/credentials/{credential}").json()["public_data"]
    assert shown["remaining"] == 19
    assert shown["replacement_due"] is True
    [event] = audit_events(client, "credential.replacement_due")  # once, not per login
    assert event["credential_id"] == credential
    assert event["remaining"] == 20


def test_an_exhausted_card_fails_with_a_clear_error_once_a_factor_is_proven(
    client: TestClient,
) -> None:
    identity, number, credential, codes = holder(client)
    last = sorted(codes)[-1]
    spend(client, credential, [i for i in codes if i != last])
    transaction = login(client, number)
    assert key_number(client, transaction) == last
    assert send_code(client, transaction, codes[last]).status_code == 200
    assert credential_row(client, credential).public_data["remaining"] == 0
    [event] = audit_events(client, "credential.exhausted")
    assert event["credential_id"] == credential
    # Before another factor: a key number as for anyone, and the code fails.
    transaction = login(client, number)
    index = key_number(client, transaction)
    assert_problem(send_code(client, transaction, codes.get(index, "123456")), 401)
    # After a password: the card is said to be used up.
    assert client.put(f"/identities/{identity}/password", json={"password": PASSWORD}).is_success
    transaction = login(client, number)
    assert client.post(
        f"/authentications/{transaction}/password", json={"password": PASSWORD}
    ).is_success
    body = assert_problem(
        client.post(f"/authentications/{transaction}/key-card/begin"), 409, "card-exhausted"
    )
    assert "new key card" in body["detail"]


# --- no account enumeration -------------------------------------------------------------------


def test_nobody_and_a_person_without_a_card_look_like_a_card_holder(client: TestClient) -> None:
    _, number, _, codes = holder(client)
    _, cardless = enrol(client)
    answers: dict[str, tuple[Any, Any]] = {}
    for who, person in [
        ("holder", number),
        ("cardless", cardless),
        ("nobody", UNKNOWN),
        ("malformed", "not a number"),
    ]:
        transaction = login(client, person)
        begun = client.post(f"/authentications/{transaction}/key-card/begin")
        again = client.post(f"/authentications/{transaction}/key-card/begin")
        assert begun.status_code == again.status_code == 200
        assert begun.json() == again.json()  # stable until tried, for everyone
        index = begun.json()["index"]
        assert len(index) == 4
        assert index.isdigit()
        code = wrong(codes[index]) if who == "holder" else "123456"
        failed = send_code(client, transaction, code)
        answers[who] = (sorted(begun.json()), assert_problem(failed, 401, "verification-failed"))
        # The try spent the number for everyone: the next begin may show another one.
        with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
            row = session.get(AuthTransaction, uuid.UUID(transaction))
            assert row is not None
            assert row.challenge is None
    assert answers["holder"] == answers["cardless"] == answers["nobody"] == answers["malformed"]


def test_a_person_without_a_card_is_shown_numbers_of_one_decoy_card(
    client: TestClient, settings: Settings
) -> None:
    """A card holder is shown numbers from the 148 on their card, login after login; a person
    without a card must be too (numbers from all 10,000 would tell them apart)."""
    identity, cardless = enrol(client)
    decoy_key = KeyCardSecrets.from_file(settings.keycard_pepper_file).derive("key-card-decoy")
    card = decoy_indexes(decoy_key, b"identity:" + uuid.UUID(identity).bytes)
    assert len(set(card)) == 148
    seen = {key_number(client, login(client, cardless)) for _ in range(12)}
    assert seen <= set(card)
    assert len(seen) > 1


@BOTH_DATABASES
def test_key_card_failures_count_in_the_throttles(client: TestClient) -> None:
    _, number, _, codes = holder(client)
    for n in range(NETWORK_RATE.burst):  # many numbers nobody has, from one address
        transaction = login(client, f"{UNKNOWN[:-1]}{n % 10}{'x' * (n // 10)}")
        key_number(client, transaction)
        assert_problem(send_code(client, transaction, "123456"), 401)
    transaction = login(client, number)
    index = key_number(client, transaction)
    assert_problem(send_code(client, transaction, codes[index]), 429, "rate-limited")


# --- malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"code": ""},
        {"code": "12a456"},
        {"code": 123456},
        {"code": "1" * 100},
        {"code": "123456", "other": 1},
        {"code": None},
        [],
        "123456",
    ],
)
def test_malformed_code_bodies_answer_422(client: TestClient, body: Any) -> None:
    identity, number = enrol(client)
    credential, _ = issue(client, identity)
    client.post(f"/credentials/{credential['id']}/key-card/activation/begin")
    transaction = login(client, number)
    key_number(client, transaction)
    for path in (
        f"/credentials/{credential['id']}/key-card/activation/complete",
        f"/authentications/{transaction}/key-card",
    ):
        assert_problem(client.post(path, json=body), 422, "invalid-request")
        raw = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert_problem(raw, 422, "invalid-request")


@pytest.mark.parametrize(
    "body", [{"label": "a\x00b"}, {"label": "x" * 201}, {"label": 5}, {"other": 1}, []]
)
def test_malformed_issue_bodies_answer_422(client: TestClient, body: Any) -> None:
    identity, _ = enrol(client)
    assert_problem(client.post(f"/identities/{identity}/key-cards", json=body), 422)
    assert client.get(f"/identities/{identity}/credentials").json() == []


_NOWHERE = "00000000-0000-0000-0000-000000000009"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/identities/{_NOWHERE}/key-cards", 404),
        ("/identities/not-a-uuid/key-cards", 422),
        (f"/credentials/{_NOWHERE}/key-card/activation/begin", 404),
        ("/credentials/not-a-uuid/key-card/activation/begin", 422),
        (f"/authentications/{_NOWHERE}/key-card/begin", 404),
        ("/authentications/not-a-uuid/key-card/begin", 422),
    ],
)
def test_unknown_ids_answer_4xx(client: TestClient, path: str, status: int) -> None:
    assert_problem(client.post(path), status)


def test_key_card_steps_out_of_turn_answer_4xx(client: TestClient) -> None:
    identity, number = enrol(client)
    # A login not identified yet.
    begun = client.post("/authentications", json={"provider": PROVIDER})
    transaction = begun.json()["id"]
    assert_problem(client.post(f"/authentications/{transaction}/key-card/begin"), 409)
    assert_problem(send_code(client, transaction, "123456"), 409)
    # Activating something that is not a key card.
    assert client.put(f"/identities/{identity}/password", json={"password": PASSWORD}).is_success
    [password] = client.get(f"/identities/{identity}/credentials").json()
    assert_problem(
        client.post(f"/credentials/{password['id']}/key-card/activation/begin"),
        422,
        "unsupported-credential",
    )
    # An ordered key card that has no card yet.
    ordered = client.post(f"/identities/{identity}/credentials", json={"kind": "key_card"})
    assert ordered.status_code == 201, ordered.text
    assert_problem(
        client.post(f"/credentials/{ordered.json()['id']}/key-card/activation/begin"), 409
    )
    # A finished login.
    _, number, _, codes = holder(client)
    transaction = login(client, number)
    index = key_number(client, transaction)
    assert send_code(client, transaction, codes[index]).status_code == 200
    assert client.post(f"/authentications/{transaction}/complete").status_code == 200
    assert_problem(client.post(f"/authentications/{transaction}/key-card/begin"), 409)
