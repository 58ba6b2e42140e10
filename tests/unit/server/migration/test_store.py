"""The legacy store on SQLite and PostgreSQL: proofs with password and key card (or code token),
one public answer for every failed proof, the lockout and per-source throttling, the shutdown
date and new-only providers, migrated users, the card's "new card due" and exhaustion, and two
concurrent uses of one code (exactly one succeeds)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devices.protocol.otp import hotp, totp_counter
from server.domain.errors import DomainError
from server.domain.model import Level
from server.services.audit import AuditLog
from server.services.errors import SecretUnreadable
from server.services.migration.errors import (
    LegacyAlreadyMigrated,
    LegacyCardExhausted,
    LegacyCodeForOtherIndex,
    LegacyCodeUsed,
    LegacyMalformedCode,
    LegacyNewEidOnly,
    LegacyNoCard,
    LegacyProofFailed,
    LegacyShutDown,
    LegacyThrottled,
    LegacyTokenRejected,
    LegacyUnknownIndex,
    LegacyUnknownUser,
    LegacyUserExists,
    LegacyWrongCode,
    LegacyWrongPassword,
)
from server.services.migration.formats import (
    CARD_SIZE,
    LegacyFormatError,
    card_indexes,
    code_for,
    hash_legacy_password,
    new_card_secret,
)
from server.services.migration.legacy_proof import LegacyPolicy, LegacyProof, closing_time
from server.services.migration.store import LegacyStore
from server.services.secretbox import SecretBox
from server.services.throttles import EVERYWHERE_RATE, NETWORK_RATE, SUBJECT_RATE
from server.storage.errors import StaleWrite
from server.storage.migration_tables import (
    KeyCardStatus,
    LegacyKeyCard,
    LegacyUser,
    LegacyUserStatus,
)
from server.storage.tables import AuditEntry, Identity

PASSWORD = "solsikke og rugbrød"  # noqa: S105 - a test password
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC).timestamp()
ITERATIONS = 1000  # cheap hashes keep the tests fast; the format is the real one
_serials = itertools.count(1000)


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([os.urandom(32)])


@pytest.fixture
def decoy_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def clock() -> Clock:
    return Clock()


StoreMaker = Callable[..., LegacyStore]


@pytest.fixture
def make_store(box: SecretBox, decoy_key: bytes, clock: Clock) -> StoreMaker:
    """A store over a session, auditing into the real hash-chained log of that session."""

    def make(session: Session, **policy: Any) -> LegacyStore:
        log = AuditLog(session, clock)

        def audit(event: str, details: dict[str, Any]) -> None:
            log.append(event, actor="test", subject="-", details=details)

        settings = {"decoy_iterations": ITERATIONS, **policy}
        return LegacyStore(
            session, box, clock, audit, decoy_key=decoy_key, policy=LegacyPolicy(**settings)
        )

    return make


@pytest.fixture
def store(session: Session, make_store: StoreMaker) -> LegacyStore:
    return make_store(session)


def add_person(
    store: LegacyStore, user_id: str | None = None, used: list[int] | None = None
) -> tuple[str, bytes]:
    """A legacy user with an active key card; the user id and the card secret."""
    serial = next(_serials)
    user_id = user_id or f"legacy{serial}"
    store.add_user(
        user_id,
        f"010170-{serial}",
        "Ada Jensen",
        1970,
        hash_legacy_password(PASSWORD, iterations=ITERATIONS),
        bank="Nordbank",
    )
    secret = new_card_secret()
    store.issue_card(user_id, secret, serial=f"KC{serial}", used_positions=used or [])
    return user_id, secret


def prove(store: LegacyStore, user_id: str, secret: bytes, **kwargs: Any) -> LegacyProof:
    index = store.begin_proof(user_id)
    return store.prove(user_id, PASSWORD, index, code_for(secret, index), **kwargs)


def events(session: Session, name: str) -> list[dict[str, Any]]:
    entries = session.scalars(select(AuditEntry).where(AuditEntry.event == name))
    return [dict(entry.details) for entry in entries]


def other_index(secret: bytes, index: str) -> str:
    return next(i for i in card_indexes(secret) if i != index)


# --- the proof --------------------------------------------------------------------------------


def test_prove_with_password_and_the_code_for_the_shown_index(
    session: Session, store: LegacyStore
) -> None:
    user_id, secret = add_person(store)
    index = store.begin_proof(user_id)
    assert index in card_indexes(secret)
    proof = store.prove(user_id, PASSWORD, index, code_for(secret, index), source="192.0.2.1")
    assert proof.user.user_id == user_id
    assert (proof.remaining, proof.new_card_due) == (CARD_SIZE - 1, False)
    card = session.scalars(select(LegacyKeyCard).where(LegacyKeyCard.user_id == user_id)).one()
    position = card_indexes(secret).index(index)
    assert card.used[position // 8] & (1 << (position % 8))
    assert card.remaining == CARD_SIZE - 1
    [entry] = events(session, "legacy.login")
    assert entry["result"] == "ok"
    assert entry["legacy_user"] == user_id
    text = str(entry)
    assert PASSWORD not in text
    assert code_for(secret, index) not in text


def test_the_shown_index_is_an_unused_position(store: LegacyStore) -> None:
    indexes_used = list(range(CARD_SIZE - 3))
    user_id, secret = add_person(store, used=indexes_used)
    free = {card_indexes(secret)[p] for p in range(CARD_SIZE - 3, CARD_SIZE)}
    assert {store.begin_proof(user_id) for _ in range(40)} == free


def test_every_failed_proof_gives_the_same_public_answer(
    session: Session, store: LegacyStore
) -> None:
    user_id, secret = add_person(store)
    index = store.begin_proof(user_id)
    used = other_index(secret, index)
    store.prove(user_id, PASSWORD, used, code_for(secret, used))  # spends ``used``
    fresh = store.begin_proof(user_id)
    not_used = next(i for i in card_indexes(secret) if i not in (used, fresh))
    wrong = f"{(int(code_for(secret, fresh)) + 1) % 10**6:06d}"
    while wrong in {code_for(secret, i) for i in card_indexes(secret)}:
        wrong = f"{(int(wrong) + 1) % 10**6:06d}"
    cases: list[tuple[type[LegacyProofFailed], Callable[[], object]]] = [
        (
            LegacyWrongPassword,
            lambda: store.prove(user_id, "forkert", fresh, code_for(secret, fresh)),
        ),
        (LegacyCodeUsed, lambda: store.prove(user_id, PASSWORD, fresh, code_for(secret, used))),
        (
            LegacyCodeForOtherIndex,
            lambda: store.prove(user_id, PASSWORD, fresh, code_for(secret, not_used)),
        ),
        (LegacyWrongCode, lambda: store.prove(user_id, PASSWORD, fresh, wrong)),
        (LegacyUnknownUser, lambda: store.prove("nobody-here", PASSWORD, fresh, "123456")),
    ]
    answers = set()
    for expected, attempt in cases:
        with pytest.raises(LegacyProofFailed) as caught:
            attempt()
        assert type(caught.value) is expected
        answers.add((caught.value.code, caught.value.detail))
    assert answers == {("verification-failed", LegacyProofFailed.default_detail)}
    reasons = [entry["reason"] for entry in events(session, "legacy.login") if "reason" in entry]
    assert reasons == [
        "wrong-password",
        "code-used",
        "code-for-other-index",
        "wrong-code",
        "unknown-user",
    ]


def test_a_key_number_that_is_not_on_the_card_fails(store: LegacyStore) -> None:
    user_id, secret = add_person(store)
    foreign = next(f"{n:04d}" for n in range(10**4) if f"{n:04d}" not in card_indexes(secret))
    with pytest.raises(LegacyUnknownIndex):
        store.prove(user_id, PASSWORD, foreign, "000000")


def test_a_malformed_code_fails_but_is_not_counted(session: Session, store: LegacyStore) -> None:
    user_id, _ = add_person(store)
    for code in ("12345", "abcdef", "1234567"):
        with pytest.raises(LegacyMalformedCode):
            store.prove(user_id, PASSWORD, store.begin_proof(user_id), code)
    user = session.get(LegacyUser, user_id)
    assert user is not None
    assert user.failures == 0


def test_an_unknown_user_is_shown_key_numbers_of_one_fixed_decoy_card(
    session: Session, make_store: StoreMaker, store: LegacyStore
) -> None:
    # 3,000 draws show every number of a 148-number card (all but certainly: each is missed
    # with probability (147/148)**3000 < 2e-9); draws from all 10,000 numbers would show more.
    shown = {store.begin_proof("nobody-here") for _ in range(3000)}
    assert all(len(index) == 4 and index.isdigit() for index in shown)
    assert len(shown) == CARD_SIZE
    again = make_store(session)  # another store with the same key: the same decoy card
    assert {again.begin_proof("nobody-here") for _ in range(100)} <= shown
    assert not {store.begin_proof("someone-else") for _ in range(100)} <= shown


def test_secrets_are_sealed_bound_to_their_serial(
    session: Session, store: LegacyStore, box: SecretBox
) -> None:
    user_id, secret = add_person(store)
    card = session.scalars(select(LegacyKeyCard).where(LegacyKeyCard.user_id == user_id)).one()
    assert secret not in card.sealed_secret
    assert box.open(card.sealed_secret, context=f"legacy-card:{card.serial}") == secret
    with pytest.raises(SecretUnreadable):
        box.open(card.sealed_secret, context="legacy-card:KC-other")


def test_add_user_refuses_bad_input(store: LegacyStore) -> None:
    user_id, _ = add_person(store)
    good_hash = hash_legacy_password(PASSWORD, iterations=ITERATIONS)
    with pytest.raises(LegacyUserExists):
        store.add_user(user_id, "020280-1111", "Bo", 1980, good_hash)
    with pytest.raises(LegacyFormatError):
        store.add_user("fresh-id", "020280-1112", "Bo", 1980, "md5$abc")
    with pytest.raises(LegacyFormatError):
        store.add_user("has space", "020280-1113", "Bo", 1980, good_hash)
    with pytest.raises(DomainError):
        store.add_user("fresh-id", "320280-1114", "Bo", 1980, good_hash)


# --- lockout and throttling --------------------------------------------------------------------


def test_failures_throttle_the_user_id_from_that_network_and_lock_no_one(
    session: Session, store: LegacyStore, clock: Clock
) -> None:
    user_id, secret = add_person(store)
    attacker, own = "203.0.113.9", "198.51.100.4"
    for _ in range(SUBJECT_RATE.burst):
        with pytest.raises(LegacyWrongPassword):
            store.prove(user_id, "forkert", store.begin_proof(user_id), "000000", source=attacker)
    with pytest.raises(LegacyThrottled) as throttled:
        prove(store, user_id, secret, source=attacker)  # the right credentials: not checked
    assert throttled.value.retry_after == SUBJECT_RATE.interval.total_seconds()
    user = session.get(LegacyUser, user_id)
    assert user is not None
    assert user.locked_until is None
    prove(store, user_id, secret, source=own)  # the person, from their own address, at once
    clock.now += SUBJECT_RATE.interval.total_seconds()
    prove(store, user_id, secret, source=attacker)  # the throttle drained: one more try


def test_a_success_empties_the_throttle_of_its_network(store: LegacyStore) -> None:
    user_id, secret = add_person(store)
    for _ in range(SUBJECT_RATE.burst - 1):
        with pytest.raises(LegacyWrongPassword):
            store.prove(user_id, "forkert", store.begin_proof(user_id), "000000")
    prove(store, user_id, secret)
    for _ in range(SUBJECT_RATE.burst):
        with pytest.raises(LegacyWrongPassword):
            store.prove(user_id, "forkert", store.begin_proof(user_id), "000000")


def test_an_unknown_user_id_is_throttled_like_a_real_one(store: LegacyStore) -> None:
    user_id, _secret = add_person(store)
    for typed, failure in (("nobody-here", LegacyUnknownUser), (user_id, LegacyWrongPassword)):
        for _ in range(SUBJECT_RATE.burst):
            with pytest.raises(failure):
                store.prove(typed, PASSWORD + "x", store.begin_proof(typed), "000000")
        with pytest.raises(LegacyThrottled):
            store.prove(typed, PASSWORD + "x", store.begin_proof(typed), "000000")


def test_failures_from_one_source_throttle_that_source_only(store: LegacyStore) -> None:
    user_id, secret = add_person(store)
    for number in range(NETWORK_RATE.burst):  # as many user ids: no user id's own throttle
        other = f"guess{number}"
        with pytest.raises(LegacyUnknownUser):
            store.prove(other, PASSWORD, store.begin_proof(other), "000000", source="203.0.113.9")
    with pytest.raises(LegacyThrottled):
        prove(store, user_id, secret, source="203.0.113.9")
    prove(store, user_id, secret, source="198.51.100.4")


def test_failures_from_many_networks_raise_an_alert_and_lock_no_one(
    session: Session, store: LegacyStore
) -> None:
    user_id, secret = add_person(store)
    prove(store, user_id, secret, source="198.51.100.4")  # the person's own network
    for number in range(EVERYWHERE_RATE.burst):
        source = f"203.0.113.{number + 1}"
        with pytest.raises(LegacyWrongPassword):
            store.prove(user_id, "forkert", store.begin_proof(user_id), "000000", source=source)
    alerts = events(session, "authentication.alert")
    assert len(alerts) == 1
    assert alerts[0]["what"] == "legacy login"
    assert alerts[0]["failures"] == EVERYWHERE_RATE.burst
    prove(store, user_id, secret, source="198.51.100.4")  # at once, from their own network
    with pytest.raises(LegacyThrottled):  # a network never used waits while the attack lasts
        prove(store, user_id, secret, source="198.51.100.5")


# --- shutdown, new-only providers, migrated users ----------------------------------------------


def test_legacy_proof_ends_at_the_shutdown_time(
    session: Session, make_store: StoreMaker, clock: Clock
) -> None:
    shutdown = dt.datetime.fromtimestamp(clock.now + 60, dt.UTC)
    store = make_store(session, shutdown_at=shutdown)
    user_id, secret = add_person(store)
    index = store.begin_proof(user_id)
    prove(store, user_id, secret)
    clock.now += 60
    with pytest.raises(LegacyShutDown) as closed:
        store.begin_proof(user_id)
    assert "closed" in closed.value.detail
    assert "new eID" in closed.value.detail
    with pytest.raises(LegacyShutDown):
        store.prove(user_id, PASSWORD, index, code_for(secret, index))


def test_the_shutdown_date_closes_at_danish_midnight() -> None:
    assert closing_time(dt.date(2026, 6, 1)) == dt.datetime(2026, 5, 31, 22, 0, tzinfo=dt.UTC)
    assert closing_time(dt.date(2026, 1, 15)) == dt.datetime(2026, 1, 14, 23, 0, tzinfo=dt.UTC)


def test_new_only_providers_are_refused(session: Session, make_store: StoreMaker) -> None:
    store = make_store(session, new_only_providers=frozenset({"https://new.example"}))
    store.check_provider("https://sp.example")
    with pytest.raises(LegacyNewEidOnly) as refused:
        store.check_provider("https://new.example")
    assert "only the new eID" in refused.value.detail


def test_a_migrated_user_still_proves_before_shutdown(session: Session, store: LegacyStore) -> None:
    user_id, secret = add_person(store)
    identity = Identity(
        person_number="010170-9999",
        name="Ada Jensen",
        identity_assurance=Level.SUBSTANTIAL,
    )
    session.add(identity)
    session.flush()
    store.mark_migrated(user_id, identity.id)
    assert store.mark_migrated(user_id, identity.id).status is LegacyUserStatus.MIGRATED
    with pytest.raises(LegacyAlreadyMigrated):
        store.mark_migrated(user_id, uuid.uuid4())
    proof = prove(store, user_id, secret)
    assert proof.user.identity_id == identity.id
    [migrated] = events(session, "legacy.user.migrated")
    assert migrated == {"legacy_user": user_id, "identity": str(identity.id)}


# --- the card's life ---------------------------------------------------------------------------


def test_a_new_card_is_due_at_twenty_codes_left(session: Session, store: LegacyStore) -> None:
    user_id, secret = add_person(store, used=list(range(CARD_SIZE - 21)))
    proof = prove(store, user_id, secret)
    assert (proof.remaining, proof.new_card_due) == (20, True)
    proof = prove(store, user_id, secret)
    assert (proof.remaining, proof.new_card_due) == (19, True)
    # Audited once, when the card reached 20.
    [due] = events(session, "legacy.card.replacement_due")
    assert due["remaining"] == 20
    assert due["legacy_user"] == user_id


def test_an_exhausted_card_fails_clearly_once_the_password_is_right(
    session: Session, store: LegacyStore
) -> None:
    user_id, secret = add_person(store, used=list(range(CARD_SIZE - 1)))
    proof = prove(store, user_id, secret)
    assert (proof.remaining, proof.new_card_due) == (0, True)
    card = session.scalars(select(LegacyKeyCard).where(LegacyKeyCard.user_id == user_id)).one()
    assert card.status is KeyCardStatus.EXHAUSTED
    assert len(events(session, "legacy.card.exhausted")) == 1
    index = store.begin_proof(user_id)  # a decoy: the card has nothing left to show
    with pytest.raises(LegacyWrongPassword):
        store.prove(user_id, "forkert", index, "000000")
    with pytest.raises(LegacyCardExhausted) as exhausted:
        store.prove(user_id, PASSWORD, index, "000000")
    assert "new key card" in exhausted.value.detail


def test_a_user_without_any_card_is_told_so_after_the_password(store: LegacyStore) -> None:
    store.add_user(
        "cardless", "030390-1234", "Bo", 1990, hash_legacy_password(PASSWORD, iterations=1000)
    )
    index = store.begin_proof("cardless")
    with pytest.raises(LegacyWrongPassword):
        store.prove("cardless", "forkert", index, "000000")
    with pytest.raises(LegacyNoCard):
        store.prove("cardless", PASSWORD, index, "000000")


def test_issuing_a_card_replaces_the_active_one(session: Session, store: LegacyStore) -> None:
    user_id, _old = add_person(store)
    new = new_card_secret()
    store.issue_card(user_id, new, serial="KC-new")
    states = dict(
        session.execute(
            select(LegacyKeyCard.serial, LegacyKeyCard.status).where(
                LegacyKeyCard.user_id == user_id
            )
        ).all()
    )
    assert states.pop("KC-new") is KeyCardStatus.ACTIVE
    assert list(states.values()) == [KeyCardStatus.REPLACED]
    prove(store, user_id, new)


# --- the legacy code token ----------------------------------------------------------------------


def test_a_totp_code_token_proves_once_per_window(store: LegacyStore, clock: Clock) -> None:
    user_id, _ = add_person(store)
    seed = os.urandom(20)
    store.issue_token(user_id, seed, algorithm="totp", serial="CT-1")
    code = hotp(seed, totp_counter(clock.now, 30), 6)
    proof = store.prove_with_token(user_id, PASSWORD, code)
    assert proof.method.value == "code_token"
    with pytest.raises(LegacyTokenRejected):
        store.prove_with_token(user_id, PASSWORD, code)  # the same window again
    with pytest.raises(LegacyWrongPassword):
        store.prove_with_token(user_id, "forkert", code)


def test_an_hotp_code_token_moves_its_counter(session: Session, store: LegacyStore) -> None:
    user_id, _ = add_person(store)
    seed = os.urandom(20)
    token = store.issue_token(user_id, seed, algorithm="hotp", serial="CT-2")
    store.prove_with_token(user_id, PASSWORD, hotp(seed, 0, 6))
    store.prove_with_token(user_id, PASSWORD, hotp(seed, 3, 6))  # within the look-ahead
    assert token.counter == 4
    with pytest.raises(LegacyTokenRejected):
        store.prove_with_token(user_id, PASSWORD, hotp(seed, 3, 6))


def test_a_user_without_a_token_fails_like_a_wrong_code(store: LegacyStore) -> None:
    user_id, _ = add_person(store)
    with pytest.raises(LegacyTokenRejected) as caught:
        store.prove_with_token(user_id, PASSWORD, "123456")
    assert caught.value.detail == LegacyProofFailed.default_detail


# --- concurrency -------------------------------------------------------------------------------


def test_two_sessions_using_one_code_cannot_both_succeed(
    sessions: sessionmaker[Session], make_store: StoreMaker
) -> None:
    """Both read the card before either writes (the later one holds what it read); the one
    that writes second fails on the card's version."""
    with sessions() as setup, setup.begin():
        user_id, secret = add_person(make_store(setup))
        index = make_store(setup).begin_proof(user_id)
    code = code_for(secret, index)
    with sessions() as first, sessions() as second:
        loser = make_store(second)
        # Read before the other commits, and held (the session's identity map is weak).
        read = (loser.find(user_id), loser.active_card(user_id))
        assert None not in read
        make_store(first).prove(user_id, PASSWORD, index, code)
        first.commit()
        with pytest.raises(StaleWrite):
            loser.prove(user_id, PASSWORD, index, code)
        second.rollback()
    with sessions() as check:
        card = check.scalars(select(LegacyKeyCard).where(LegacyKeyCard.user_id == user_id)).one()
        assert card.remaining == CARD_SIZE - 1
        logins = [e for e in events(check, "legacy.login") if e["result"] == "ok"]
        assert len(logins) == 1


def test_concurrent_uses_of_one_code_in_threads_let_exactly_one_succeed(
    sessions: sessionmaker[Session], make_store: StoreMaker
) -> None:
    with sessions() as setup, setup.begin():
        user_id, secret = add_person(make_store(setup))
        index = make_store(setup).begin_proof(user_id)
    code = code_for(secret, index)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        with sessions() as session:
            store = make_store(session)
            read = (store.find(user_id), store.active_card(user_id))
            assert None not in read
            start.wait(timeout=10)
            try:
                store.prove(user_id, PASSWORD, index, code)
                session.commit()
                outcomes.append("ok")
            except (StaleWrite, LegacyCodeUsed) as exc:
                session.rollback()
                outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == 2, outcomes
    assert outcomes.count("ok") == 1, outcomes
