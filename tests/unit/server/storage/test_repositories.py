"""Repositories on SQLite and PostgreSQL: constraints, optimistic locking, audit order, JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Uuid, literal, select, text
from sqlalchemy.orm import Session, sessionmaker

from server.domain.model import (
    CredentialKind,
    CredentialState,
    IdentityStatus,
    Level,
    ProofingChannel,
)
from server.storage.audit_repositories import AuditRepository
from server.storage.errors import DuplicatePersonNumber, NotFound, StaleWrite
from server.storage.repositories import (
    CredentialRepository,
    IdentityRepository,
    TransactionRepository,
    _AccountLimitKey,
    account_limit_key,
    network_throttle_key,
    subject_throttle_key,
)
from server.storage.sweep_repositories import SweepRepository
from server.storage.tables import (
    AuditEntry,
    AuthTransaction,
    Credential,
    Identity,
    ProofingRecord,
    RateLimit,
)
from server.storage.throttle_repositories import (
    RateLimitRepository,
    ThrottleRepository,
    ThrottleState,
)

GENESIS = "0" * 64
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def _identity(person_number: str = "0101901234") -> Identity:
    return Identity(person_number=person_number, name="Karen Blixen", identity_assurance=Level.LOW)


def _new_identity(sessions: sessionmaker[Session], person_number: str = "0101901234") -> uuid.UUID:
    with sessions.begin() as session:
        return IdentityRepository(session).add(_identity(person_number)).id


def _new_credential(sessions: sessionmaker[Session]) -> uuid.UUID:
    identity_id = _new_identity(sessions)
    with sessions.begin() as session:
        credential = Credential(
            identity_id=identity_id, kind=CredentialKind.CODE_DISPLAY, serial="CD-1"
        )
        return CredentialRepository(session).add(credential).id


def _entry(prev_hash: str, event: str, seq: int | None = None) -> AuditEntry:
    digest = hashlib.sha256(f"{prev_hash}|{event}".encode()).hexdigest()
    return AuditEntry(
        seq=seq, event=event, actor="system", details={"n": event}, prev_hash=prev_hash, hash=digest
    )


def _fail(
    repository: RateLimitRepository, key: str, now: dt.datetime, max_failures: int = 5
) -> RateLimit:
    return repository.record_failure(
        key,
        now,
        window=dt.timedelta(minutes=15),
        max_failures=max_failures,
        lockout=dt.timedelta(hours=1),
    )


def test_identity_round_trips_when_added(sessions: sessionmaker[Session]) -> None:
    identity_id = _new_identity(sessions)
    with sessions() as session:
        identity = IdentityRepository(session).get(identity_id)
        assert identity.status is IdentityStatus.ACTIVE
        assert identity.identity_assurance is Level.LOW
        assert identity.created_at.tzinfo == dt.UTC
        assert IdentityRepository(session).by_person_number("0101901234").id == identity_id


def test_add_raises_duplicate_person_number_when_number_taken(
    sessions: sessionmaker[Session],
) -> None:
    _new_identity(sessions)
    with sessions() as session:
        repository = IdentityRepository(session)
        with pytest.raises(DuplicatePersonNumber):
            repository.add(_identity())
        # The failed insert ran in a savepoint: the unit of work goes on.
        repository.add(_identity("0202902345"))
        session.commit()
    with sessions() as session:
        assert session.scalar(text("SELECT count(*) FROM identities")) == 2


def test_lookups_raise_not_found_when_missing(session: Session) -> None:
    with pytest.raises(NotFound):
        IdentityRepository(session).get(uuid.uuid4())
    with pytest.raises(NotFound):
        IdentityRepository(session).by_person_number("nobody")
    with pytest.raises(NotFound):
        CredentialRepository(session).get(uuid.uuid4())
    with pytest.raises(NotFound):
        TransactionRepository(session).get(uuid.uuid4())


def test_set_status_persists_when_committed(sessions: sessionmaker[Session]) -> None:
    identity_id = _new_identity(sessions)
    with sessions.begin() as session:
        IdentityRepository(session).set_status(identity_id, IdentityStatus.SUSPENDED)
    with sessions() as session:
        assert IdentityRepository(session).get(identity_id).status is IdentityStatus.SUSPENDED


def test_proofing_operator_ids_round_trip_when_stored_as_json(
    sessions: sessionmaker[Session],
) -> None:
    identity_id = _new_identity(sessions)
    with sessions.begin() as session:
        IdentityRepository(session).add_proofing(
            ProofingRecord(
                identity_id=identity_id,
                channel=ProofingChannel.SERVICE_CENTRE,
                document_kind="passport",
                operator_ids=["op-17", "op-23"],
                level=Level.HIGH,
            )
        )
    with sessions() as session:
        (record,) = IdentityRepository(session).proofing_for(identity_id)
        assert record.operator_ids == ["op-17", "op-23"]
        assert record.level is Level.HIGH


def test_credential_add_raises_not_found_when_identity_missing(session: Session) -> None:
    with pytest.raises(NotFound):
        CredentialRepository(session).add(
            Credential(identity_id=uuid.uuid4(), kind=CredentialKind.FIDO2)
        )


def test_credential_columns_round_trip_when_stored(sessions: sessionmaker[Session]) -> None:
    identity_id = _new_identity(sessions)
    ciphertext = bytes(range(256)) + b"\x00\x00"  # NULs and high bytes, as AES-GCM output has
    public_data = {"credential_id": "q83v", "alg": -7, "transports": ["usb", "nfc"], "rk": True}
    with sessions.begin() as session:
        credential_id = (
            CredentialRepository(session)
            .add(
                Credential(
                    identity_id=identity_id,
                    kind=CredentialKind.FIDO2,
                    state=CredentialState.ACTIVE,
                    label="Blå nøgle",
                    secret_ciphertext=ciphertext,
                    public_data=public_data,
                    counter=2**40,
                    last_used_window=59_000_000,
                )
            )
            .id
        )
    with sessions() as session:
        stored = CredentialRepository(session).get(credential_id)
        assert stored.secret_ciphertext == ciphertext
        assert isinstance(stored.secret_ciphertext, bytes)
        assert stored.public_data == public_data
        assert (stored.counter, stored.last_used_window, stored.label) == (
            2**40,
            59_000_000,
            "Blå nøgle",
        )
        assert stored.version == 1


def test_for_identity_filters_by_state_when_states_given(sessions: sessionmaker[Session]) -> None:
    identity_id = _new_identity(sessions)
    with sessions.begin() as session:
        repository = CredentialRepository(session)
        for kind, state in [
            (CredentialKind.PASSWORD, CredentialState.ACTIVE),
            (CredentialKind.CODE_DISPLAY, CredentialState.BLOCKED),
            (CredentialKind.AUDIO_READER, CredentialState.ORDERED),
        ]:
            repository.add(Credential(identity_id=identity_id, kind=kind, state=state))
    with sessions() as session:
        repository = CredentialRepository(session)
        assert len(repository.for_identity(identity_id)) == 3
        usable = repository.for_identity(identity_id, {CredentialState.ACTIVE})
        assert [credential.kind for credential in usable] == [CredentialKind.PASSWORD]


def test_update_bumps_version_when_nobody_else_wrote(sessions: sessionmaker[Session]) -> None:
    credential_id = _new_credential(sessions)
    with sessions.begin() as session:
        repository = CredentialRepository(session)
        credential = repository.get(credential_id)
        credential.failures = 1
        assert repository.update(credential, expected_version=1).version == 2
    with sessions() as session:
        assert CredentialRepository(session).get(credential_id).failures == 1


def test_update_raises_stale_write_when_two_sessions_update_same_credential(
    sessions: sessionmaker[Session],
) -> None:
    credential_id = _new_credential(sessions)
    with sessions() as first, sessions() as second:
        mine = CredentialRepository(first).get(credential_id)
        theirs = CredentialRepository(second).get(credential_id)
        theirs.state = CredentialState.BLOCKED
        CredentialRepository(second).update(theirs)
        second.commit()

        mine.failures = 1
        with pytest.raises(StaleWrite):
            CredentialRepository(first).update(mine)
        first.rollback()
    with sessions() as session:
        stored = CredentialRepository(session).get(credential_id)
        assert (stored.state, stored.failures, stored.version) == (CredentialState.BLOCKED, 0, 2)


def test_update_raises_stale_write_when_version_read_in_earlier_transaction(
    sessions: sessionmaker[Session],
) -> None:
    credential_id = _new_credential(sessions)
    with sessions() as first:
        mine = CredentialRepository(first).get(credential_id)
        first.commit()  # the read ended, as at the end of an HTTP request
        with sessions.begin() as second:
            theirs = CredentialRepository(second).get(credential_id)
            theirs.counter = 5
            CredentialRepository(second).update(theirs)
        mine.counter = 4
        with pytest.raises(StaleWrite):
            CredentialRepository(first).update(mine)


def test_update_raises_stale_write_when_expected_version_differs(session: Session) -> None:
    identity = IdentityRepository(session).add(_identity())
    credential = CredentialRepository(session).add(
        Credential(identity_id=identity.id, kind=CredentialKind.PIV)
    )
    with pytest.raises(StaleWrite):
        CredentialRepository(session).update(credential, expected_version=7)


def test_audit_entries_come_back_in_append_order(sessions: sessionmaker[Session]) -> None:
    events = [f"event-{n}" for n in range(12)]
    prev = GENESIS
    for event in events:
        with sessions.begin() as session:
            repository = AuditRepository(session)
            last = repository.last()
            assert (last.hash if last else GENESIS) == prev
            prev = repository.append(_entry(prev, event)).hash
    with sessions() as session:
        entries = AuditRepository(session).all_in_order()
        assert [entry.event for entry in entries] == events
        assert [entry.seq for entry in entries] == sorted(entry.seq for entry in entries)
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
        assert entries[0].details == {"n": "event-0"}
        tail = AuditRepository(session).all_in_order(after_seq=entries[9].seq)
        assert [entry.event for entry in tail] == events[10:]


def test_append_raises_stale_write_when_chain_would_fork(sessions: sessionmaker[Session]) -> None:
    with sessions() as first, sessions() as second:
        assert AuditRepository(first).last() is None
        assert AuditRepository(second).last() is None
        AuditRepository(second).append(_entry(GENESIS, "theirs"))
        second.commit()
        with pytest.raises(StaleWrite):
            AuditRepository(first).append(_entry(GENESIS, "mine"))
        first.rollback()
    with sessions() as session:
        assert [e.event for e in AuditRepository(session).all_in_order()] == ["theirs"]


def test_append_raises_stale_write_when_explicit_seq_is_taken(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        first = AuditRepository(session).append(_entry(GENESIS, "one", seq=1))
    with sessions() as session:
        with pytest.raises(StaleWrite):
            AuditRepository(session).append(_entry(GENESIS.replace("0", "1"), "two", seq=1))
        AuditRepository(session).append(_entry(first.hash, "two", seq=2))
        session.commit()
    with sessions() as session:
        entries = AuditRepository(session).all_in_order()
        assert [(e.seq, e.event) for e in entries] == [(1, "one"), (2, "two")]


def test_transaction_step_raises_stale_write_when_completed_twice(
    sessions: sessionmaker[Session],
) -> None:
    identity_id = _new_identity(sessions)
    with sessions.begin() as session:
        transaction_id = (
            TransactionRepository(session)
            .add(
                AuthTransaction(
                    service_provider="https://sp.example",
                    min_level=Level.SUBSTANTIAL,
                    state="pending",
                    challenge=b"\x00\xffchallenge",
                    expires_at=NOW + dt.timedelta(minutes=5),
                )
            )
            .id
        )
    with sessions() as first, sessions() as second:
        mine = TransactionRepository(first).get(transaction_id)
        theirs = TransactionRepository(second).get(transaction_id)
        for step in (theirs, mine):
            step.identity_id = identity_id
            step.factors = [*step.factors, "password"]
            step.state = "identified"
        TransactionRepository(second).update(theirs)
        second.commit()
        with pytest.raises(StaleWrite):
            TransactionRepository(first).update(mine)
        first.rollback()
    with sessions() as session:
        stored = TransactionRepository(session).get(transaction_id)
        assert (stored.state, stored.factors, stored.version) == ("identified", ["password"], 2)
        assert stored.challenge == b"\x00\xffchallenge"
        assert stored.expires_at == NOW + dt.timedelta(minutes=5)


def test_delete_expired_removes_only_expired_transactions(session: Session) -> None:
    repository = TransactionRepository(session)
    for minutes in (-1, 0, 1):
        repository.add(
            AuthTransaction(
                service_provider="sp",
                min_level=Level.LOW,
                state="pending",
                expires_at=NOW + dt.timedelta(minutes=minutes),
            )
        )
    assert repository.delete_expired(NOW) == 2


def test_record_failure_locks_when_max_failures_reached(session: Session) -> None:
    repository = RateLimitRepository(session)
    limits = {
        "window": dt.timedelta(minutes=15),
        "max_failures": 3,
        "lockout": dt.timedelta(hours=1),
    }
    for n in (1, 2):
        state = repository.record_failure("otp:abc", NOW + dt.timedelta(seconds=n), **limits)
        assert (state.failures, state.locked_until) == (n, None)
    state = repository.record_failure("otp:abc", NOW + dt.timedelta(seconds=3), **limits)
    assert state.failures == 3
    assert state.locked_until == NOW + dt.timedelta(seconds=3, hours=1)
    assert state.window_start == NOW + dt.timedelta(seconds=1)
    stored = repository.get("otp:abc")
    assert stored is not None
    assert stored.failures == 3


def test_record_failure_starts_new_window_when_window_elapsed(session: Session) -> None:
    repository = RateLimitRepository(session)
    limits = {
        "window": dt.timedelta(minutes=15),
        "max_failures": 5,
        "lockout": dt.timedelta(hours=1),
    }
    repository.record_failure("pw:x", NOW, **limits)
    repository.record_failure("pw:x", NOW + dt.timedelta(minutes=1), **limits)
    later = NOW + dt.timedelta(minutes=16)
    state = repository.record_failure("pw:x", later, **limits)
    assert (state.failures, state.window_start) == (1, later)


def test_record_failure_locks_at_once_when_max_failures_is_one(session: Session) -> None:
    state = RateLimitRepository(session).record_failure(
        "k", NOW, window=dt.timedelta(minutes=1), max_failures=1, lockout=dt.timedelta(minutes=5)
    )
    assert state.locked_until == NOW + dt.timedelta(minutes=5)


def test_reset_forgets_failures_when_called(session: Session) -> None:
    repository = RateLimitRepository(session)
    repository.record_failure(
        "k", NOW, window=dt.timedelta(minutes=1), max_failures=3, lockout=dt.timedelta(minutes=5)
    )
    repository.reset("k")
    assert repository.get("k") is None


# --- the login path's statements -------------------------------------------------------------


def test_audit_head_follows_every_insert_whoever_inserts(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert AuditRepository(session).head(lock=False) == (0, GENESIS)
        first = AuditRepository(session).append(_entry(GENESIS, "orm"))
        assert AuditRepository(session).head(lock=True) == (first.seq, first.hash)
    second = _entry(first.hash, "core", seq=first.seq + 1)
    with sessions.begin() as session:
        AuditRepository(session).insert_next(
            {
                "seq": second.seq,
                "at": NOW,
                "event": second.event,
                "actor": second.actor,
                "subject": "-",
                "details": second.details,
                "prev_hash": second.prev_hash,
                "hash": second.hash,
            }
        )
    with sessions() as session:
        assert AuditRepository(session).head(lock=False) == (second.seq, second.hash)
        assert [e.event for e in AuditRepository(session).all_in_order()] == ["orm", "core"]


def test_audit_head_stays_when_its_insert_is_rolled_back(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        AuditRepository(session).append(_entry(GENESIS, "undone"))
        assert AuditRepository(session).head(lock=False)[0] == 1
        session.rollback()
    with sessions() as session:
        assert AuditRepository(session).head(lock=False) == (0, GENESIS)


def test_insert_next_raises_stale_write_when_seq_taken(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        taken = AuditRepository(session).append(_entry(GENESIS, "one"))
    values = {
        "seq": taken.seq,
        "at": NOW,
        "event": "two",
        "actor": "system",
        "subject": "-",
        "details": {},
        "prev_hash": taken.hash,
        "hash": "1" * 64,
    }
    with sessions() as session:
        with pytest.raises(StaleWrite):
            AuditRepository(session).insert_next(values)
        session.rollback()


def _active_display(sessions: sessionmaker[Session], **columns: object) -> uuid.UUID:
    identity_id = _new_identity(sessions)
    with sessions.begin() as session:
        for kind, state in (
            (CredentialKind.PASSWORD, CredentialState.ACTIVE),
            (CredentialKind.CODE_DISPLAY, CredentialState.BLOCKED),
            (CredentialKind.CODE_DISPLAY, CredentialState.ACTIVE),
        ):
            CredentialRepository(session).add(
                Credential(identity_id=identity_id, kind=kind, state=state, **columns)
            )
    return identity_id


def test_factor_states_are_the_active_credentials_of_the_kinds_asked(
    sessions: sessionmaker[Session],
) -> None:
    identity_id = _active_display(
        sessions, secret_ciphertext=b"\x01sealed", public_data={"algorithm": "totp"}, counter=7
    )
    with sessions() as session:
        (state,) = CredentialRepository(session).factor_states(
            identity_id, {CredentialKind.CODE_DISPLAY, CredentialKind.OTP_TOKEN}
        )
    assert (state.kind, state.state, state.version) == (
        CredentialKind.CODE_DISPLAY,
        CredentialState.ACTIVE,
        1,
    )
    assert (state.secret_ciphertext, state.public_data) == (b"\x01sealed", {"algorithm": "totp"})
    assert (state.counter, state.failures, state.drift, state.last_used_window) == (7, 0, 0, None)
    assert "sealed" not in repr(state)


def test_save_factor_state_writes_nothing_when_nothing_changed(
    sessions: sessionmaker[Session],
) -> None:
    identity_id = _active_display(sessions)
    with sessions.begin() as session:
        repository = CredentialRepository(session)
        (read,) = repository.factor_states(identity_id, {CredentialKind.CODE_DISPLAY})
        repository.save_factor_state(read, dataclasses.replace(read))
    with sessions() as session:
        (after,) = CredentialRepository(session).factor_states(
            identity_id, {CredentialKind.CODE_DISPLAY}
        )
    assert after == read


def test_save_factor_state_writes_changes_and_bumps_the_version(
    sessions: sessionmaker[Session],
) -> None:
    identity_id = _active_display(sessions)
    with sessions.begin() as session:
        repository = CredentialRepository(session)
        (read,) = repository.factor_states(identity_id, {CredentialKind.CODE_DISPLAY})
        changed = dataclasses.replace(read, failures=3, last_used_window=55, drift=-1)
        repository.save_factor_state(
            read, dataclasses.replace(changed, state=CredentialState.BLOCKED)
        )
    with sessions() as session:
        stored = CredentialRepository(session).get(read.id)
    assert (stored.failures, stored.last_used_window, stored.drift) == (3, 55, -1)
    assert (stored.state, stored.version) == (CredentialState.BLOCKED, read.version + 1)


def test_save_factor_state_raises_stale_write_when_another_writer_was_first(
    sessions: sessionmaker[Session],
) -> None:
    identity_id = _active_display(sessions)
    with sessions() as first, sessions() as second:
        (mine,) = CredentialRepository(first).factor_states(
            identity_id, {CredentialKind.CODE_DISPLAY}
        )
        theirs = CredentialRepository(second).get(mine.id)
        theirs.counter = 99
        CredentialRepository(second).update(theirs)
        second.commit()
        with pytest.raises(StaleWrite):
            CredentialRepository(first).save_factor_state(
                mine, dataclasses.replace(mine, counter=1)
            )
        first.rollback()
    with sessions() as session:
        assert CredentialRepository(session).get(mine.id).counter == 99


def test_rate_limit_states_reads_several_keys_at_once(session: Session) -> None:
    repository = RateLimitRepository(session)
    _fail(repository, "source:a", NOW)
    _fail(repository, "account:b", NOW, max_failures=1)
    states = repository.states(["source:a", "account:b", "source:none"])
    assert states["source:a"] == (1, None)
    assert states["account:b"] == (1, NOW + dt.timedelta(hours=1))
    assert "source:none" not in states
    assert repository.states(["source:a"]) == {"source:a": (1, None)}


def test_login_context_comes_with_identity_status_and_both_throttles(
    sessions: sessionmaker[Session],
) -> None:
    identity_id = _new_identity(sessions)
    other = _new_identity(sessions, "0202902345")
    at = int(NOW.timestamp() * 1000)
    with sessions.begin() as session:
        IdentityRepository(session).set_status(identity_id, IdentityStatus.SUSPENDED)
        throttles = ThrottleRepository(session)
        throttles.charge(network_throttle_key("10.0.0.1"), at, 1000)
        throttles.charge(subject_throttle_key(account_limit_key(identity_id), "10.0.0.1"), at, 5)
        throttles.charge(subject_throttle_key("typed-digest", "10.0.0.2"), at, 7)
        # Counters of another network and another person are not this login's.
        throttles.charge(network_throttle_key("10.0.0.2"), at, 9)
        throttles.charge(subject_throttle_key(account_limit_key(other), "10.0.0.1"), at, 11)
        repository = TransactionRepository(session)
        ids = [
            repository.add(
                AuthTransaction(
                    service_provider="sp",
                    min_level=Level.LOW,
                    state="identified",
                    identity_id=who,
                    subject_digest=digest,
                    expires_at=NOW,
                )
            ).id
            for who, digest in ((identity_id, None), (None, "typed-digest"))
        ]
    with sessions() as session:
        repository = TransactionRepository(session)
        context = repository.login_context(ids[0], "10.0.0.1")
        assert context.transaction.identity_id == identity_id
        assert context.identity_status is IdentityStatus.SUSPENDED
        assert context.network_limit == ThrottleState(at + 1000, 1)
        assert context.subject_limit == ThrottleState(at + 5, 1)
        assert repository.get(ids[0]) is context.transaction  # one object in the session
        elsewhere = repository.login_context(ids[0], "10.9.9.9")
        assert (elsewhere.network_limit, elsewhere.subject_limit) == (None, None)
        nobody = repository.login_context(ids[1], "10.0.0.2")
        assert nobody.identity_status is None
        assert nobody.network_limit == ThrottleState(at + 9, 1)
        assert nobody.subject_limit == ThrottleState(at + 7, 1)
        with pytest.raises(NotFound):
            repository.login_context(uuid.uuid4(), "10.0.0.1")


def test_a_throttle_drains_and_counts_its_run(session: Session) -> None:
    throttles = ThrottleRepository(session)
    assert throttles.charge("k", 1_000, 100) == ThrottleState(1_100, 1)
    assert throttles.charge("k", 1_000, 100) == ThrottleState(1_200, 2)  # from where it stood
    assert throttles.charge("k", 1_150, 100) == ThrottleState(1_300, 3)
    assert throttles.charge("k", 5_000, 100) == ThrottleState(5_100, 1)  # empty: a new run
    assert throttles.states(["k", "none"]) == {"k": ThrottleState(5_100, 1)}
    throttles.charge("k2", 1_000, 100)
    assert SweepRepository(session).throttles(5_000, limit=10) == 1  # k2 has drained
    assert throttles.clear_prefix("k") == 1
    assert throttles.states(["k", "k2"]) == {}


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(identity_id=st.uuids())
def test_the_account_key_built_in_sql_is_the_one_built_in_python(
    session: Session, identity_id: uuid.UUID
) -> None:
    # The login's first statement finds a person's counter by a key it builds in SQL from
    # the id as the database keeps it; the counter is written under account_limit_key. The
    # two must agree on every database, or a locked account would look unlocked.
    stored = literal(identity_id, Uuid())  # bound as the column's type keeps it
    assert session.scalar(select(_AccountLimitKey(stored))) == account_limit_key(identity_id)
