"""The guided migration flow on SQLite and PostgreSQL, through the service layer: the whole flow
on each channel, every step in its own transaction (as a restart between steps leaves it),
every step repeated, the legacy proof's failures and limits, mismatched details, a completed
person starting again, two concurrent attempts, a failed token activation and its retry with
no partial identity, devices enrolled apart, abandonment and resumption, and the step events."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from akkreditiv.cli import app
from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpGenerator, OtpTokenState
from server.domain.errors import DomainError
from server.domain.model import CredentialKind, CredentialState, Level, ProofingChannel
from server.services.audit import AuditLog
from server.services.credentials import CredentialService
from server.services.errors import InvalidPersonNumber, WeakPassword
from server.services.identities import IdentityService
from server.services.lifecycle_errors import ActivationCodeRejected, TokenNotFound
from server.services.migration.errors import (
    LegacyCodeForOtherIndex,
    LegacyCodeUsed,
    LegacyProofFailed,
    LegacyThrottled,
    LegacyUnknownUser,
    LegacyWrongPassword,
)
from server.services.migration.flow import MigrationFlows
from server.services.migration.flow_errors import (
    ActivationIncomplete,
    ActivationInputMissing,
    AlreadyMigrated,
    CredentialNotUsable,
    DetailsMismatch,
    FlowChanged,
    InvalidChoice,
    ProofRequired,
    StartAgain,
    StepNotAvailable,
)
from server.services.migration.flow_model import (
    TRANSITIONS,
    Authenticator,
    FlowState,
    FlowView,
    NextAction,
    choice_problem,
    validate_flow_transitions,
)
from server.services.migration.flow_sweep import sweep_abandoned
from server.services.migration.formats import (
    card_indexes,
    code_for,
    hash_legacy_password,
    new_card_secret,
)
from server.services.migration.legacy_proof import LegacyPolicy
from server.services.migration.store import LegacyStore
from server.services.passwords import Passwords
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
from server.services.throttles import SUBJECT_RATE
from server.storage.migration_tables import (
    LegacyUser,
    LegacyUserStatus,
    MigrationEvent,
    MigrationFlow,
    MigrationInvitation,
    MigrationWave,
)
from server.storage.tables import AuditEntry, Credential, Identity, ProofingRecord
from tests.unit.server.services.test_passwords import FAST

PASSWORD = "hyldeblomst og citron"  # noqa: S105 - a test legacy password
NEW_PASSWORD = "Ny adgangskode til MitID 2026"  # noqa: S105 - a test password
NAME = "Inger Christensen"
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC).timestamp()
ITERATIONS = 1000
_serials = itertools.count(3000)
T = TypeVar("T")
A = Authenticator
S = FlowState


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """The services of one transaction, as a request builds them."""

    session: Session
    store: LegacyStore
    credentials: CredentialService
    flows: MigrationFlows


@dataclass
class Person:
    user_id: str
    person_number: str
    secret: bytes
    shown: str = ""  # the key number the last start (or failure) showed

    def code(self, index: str | None = None) -> str:
        return code_for(self.secret, index or self.shown)


class Env:
    """Builds a ``World`` per transaction over the test database, with shared keys and clock."""

    def __init__(self, sessions: sessionmaker[Session], **policy: Any) -> None:
        self.sessions = sessions
        self.box = SecretBox([os.urandom(32)])
        self.decoy_key = os.urandom(32)
        self.pseudonyms = Pseudonyms(os.urandom(32))
        self.passwords = Passwords(FAST)
        self.clock = Clock()
        self.policy = LegacyPolicy(decoy_iterations=ITERATIONS, **policy)

    def world(self, session: Session) -> World:
        log = AuditLog(session, self.clock)

        def audit(event: str, details: dict[str, Any]) -> None:
            log.append(event, actor="test", subject="-", details=details)

        store = LegacyStore(
            session, self.box, self.clock, audit, decoy_key=self.decoy_key, policy=self.policy
        )
        credentials = CredentialService(
            session, self.box, self.passwords, clock=self.clock, audit=audit
        )
        identities = IdentityService(session, self.pseudonyms, audit=audit)
        flows = MigrationFlows(
            session,
            store,
            identities,
            credentials,
            decoy_key=self.decoy_key,
            clock=self.clock,
            audit=audit,
        )
        return World(session, store, credentials, flows)

    @contextmanager
    def transaction(self) -> Iterator[World]:
        """A new session and services, committed at the end: each step a request of its own."""
        with self.sessions() as session, session.begin():
            yield self.world(session)

    def run(self, step: Callable[[MigrationFlows], T]) -> T:
        """One step in its own transaction; a recorded failure is committed, then raised."""
        with self.sessions() as session:
            session.begin()
            try:
                result = step(self.world(session).flows)
            except DomainError as exc:
                if exc.recorded:
                    session.commit()
                else:
                    session.rollback()
                raise
            except BaseException:
                session.rollback()
                raise
            session.commit()
            return result

    def add_person(self, *, used: list[int] | None = None) -> Person:
        serial = next(_serials)
        user_id = f"legacy{serial}"
        number = f"030480-{serial}"
        secret = new_card_secret()
        with self.transaction() as world:
            world.store.add_user(
                user_id,
                number,
                NAME,
                1980,
                hash_legacy_password(PASSWORD, iterations=ITERATIONS),
            )
            world.store.issue_card(user_id, secret, serial=f"KC{serial}", used_positions=used or [])
        return Person(user_id, number, secret)

    def stock_token(self, model: Model = Model.DISPLAY) -> OtpTokenState:
        token = otp_token.new_state(model)
        with self.transaction() as world:
            world.credentials.import_batch(pskc.write_pskc([token.pskc_key()]))
        return token

    def code_of(self, token: OtpTokenState) -> str:
        return OtpGenerator(token, lambda _: None, clock=self.clock).totp_now()

    def start(
        self,
        person: Person,
        channel: ProofingChannel = ProofingChannel.SELF_SERVICE,
        **assisted: Any,
    ) -> uuid.UUID:
        started = self.run(lambda flows: flows.start(person.user_id, channel, **assisted))
        person.shown = started.index
        return started.view.id

    def prove(self, flow_id: uuid.UUID, person: Person) -> FlowView:
        return self.run(lambda flows: flows.prove(flow_id, person.user_id, PASSWORD, person.code()))

    def confirm(self, flow_id: uuid.UUID, person: Person) -> FlowView:
        return self.run(lambda flows: flows.confirm(flow_id, person.person_number, NAME))

    def to_chosen(self, person: Person, kinds: list[A] | None = None, **assisted: Any) -> uuid.UUID:
        flow_id = self.start(person, **assisted)
        self.prove(flow_id, person)
        self.confirm(flow_id, person)
        self.run(lambda flows: flows.choose(flow_id, kinds))
        return flow_id

    def migrate(self, person: Person, **assisted: Any) -> uuid.UUID:
        """The whole flow with the proposal (code display and password)."""
        token = self.stock_token()
        flow_id = self.to_chosen(person, **assisted)
        self.run(
            lambda flows: flows.activate(
                flow_id, password=NEW_PASSWORD, serial=token.serial, code=self.code_of(token)
            )
        )
        self.run(lambda flows: flows.complete(flow_id))
        return flow_id

    # --- reading the database ---

    def count(self, table: type[Any]) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(table)) or 0)

    def identities(self) -> int:
        """Identities of people (the token stock's reserved identity is not one)."""
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Identity)
                    .where(Identity.person_number != "token-stock")
                )
                or 0
            )

    def flow(self, flow_id: uuid.UUID) -> MigrationFlow:
        with self.sessions() as session:
            flow = session.get(MigrationFlow, flow_id)
            assert flow is not None
            session.expunge(flow)
            return flow

    def events(self, flow_id: uuid.UUID) -> list[tuple[str, str, str | None]]:
        with self.sessions() as session:
            rows = session.execute(
                select(MigrationEvent.step, MigrationEvent.outcome, MigrationEvent.kind)
                .where(MigrationEvent.flow_id == flow_id)
                .order_by(MigrationEvent.id)
            )
            return [(step, outcome, kind) for step, outcome, kind in rows]


@pytest.fixture
def env(sessions: sessionmaker[Session]) -> Env:
    return Env(sessions)


@dataclass(frozen=True)
class Recorded:
    """A failed step whose record was kept: the error and the members it adds to the answer."""

    error: DomainError
    extra: Mapping[str, Any]


def recorded(call: Callable[[], object]) -> Recorded:
    with pytest.raises(DomainError) as caught:
        call()
    assert caught.value.recorded
    return Recorded(caught.value, caught.value.extra)


# --- the state machine ---------------------------------------------------------------------------


def test_the_transition_table_is_checked_at_import() -> None:
    validate_flow_transitions(TRANSITIONS, {S.STARTED}, {S.COMPLETED})
    # Everything reachable, but a loop between choosing and activating with no way out.
    stuck = {
        **TRANSITIONS,
        S.LEGACY_PROVEN: frozenset({S.DETAILS_CONFIRMED, S.COMPLETED}),
        S.ACTIVATION_PENDING: frozenset({S.AUTHENTICATOR_CHOSEN}),
    }
    with pytest.raises(RuntimeError, match="cannot reach the end"):
        validate_flow_transitions(stuck, {S.STARTED}, {S.COMPLETED})
    looping = {**TRANSITIONS, S.STARTED: frozenset({S.STARTED, S.LEGACY_PROVEN})}
    with pytest.raises(RuntimeError, match="itself"):
        validate_flow_transitions(looping, {S.STARTED}, {S.COMPLETED})
    skipping = {**TRANSITIONS, S.STARTED: frozenset({S.DETAILS_CONFIRMED})}
    with pytest.raises(RuntimeError, match="unreachable"):
        validate_flow_transitions(skipping, {S.STARTED}, {S.COMPLETED})
    missing: dict[FlowState, frozenset[FlowState]] = {
        k: v for k, v in TRANSITIONS.items() if k is not S.COMPLETED
    }
    with pytest.raises(RuntimeError, match="missing"):
        validate_flow_transitions(missing, {S.STARTED}, {S.COMPLETED})


@pytest.mark.parametrize(
    ("kinds", "problem"),
    [
        ([], "at least one"),
        ([A.PASSWORD], "password alone"),
        ([A.CODE_DISPLAY, A.AUDIO_READER], "cannot be used together"),
        ([A.FIDO2, A.FIDO2], "once"),
    ],
)
def test_choices_that_cannot_be_made(kinds: list[A], problem: str) -> None:
    assert problem in (choice_problem(kinds) or "")


# --- the whole flow ------------------------------------------------------------------------------


def test_self_service_flow_makes_a_substantial_identity_step_by_step(env: Env) -> None:
    person = env.add_person()
    token = env.stock_token()
    flow_id = env.start(person)
    assert env.run(lambda flows: flows.view(flow_id)).next_action is NextAction.PROVE

    proven = env.prove(flow_id, person)
    assert (proven.state, proven.step, proven.of) == (S.LEGACY_PROVEN, 2, 5)
    assert proven.next_action is NextAction.CONFIRM
    assert (proven.name, proven.person_number) == (NAME, "030480-****")

    confirmed = env.confirm(flow_id, person)
    assert confirmed.next_action is NextAction.CHOOSE
    assert confirmed.proposal == (A.CODE_DISPLAY, A.PASSWORD)

    chosen = env.run(lambda flows: flows.choose(flow_id))  # the proposal, just confirmed
    assert chosen.chosen == (A.CODE_DISPLAY, A.PASSWORD)
    assert chosen.needed == ("serial", "code", "password")

    activated = env.run(
        lambda flows: flows.activate(
            flow_id, password=NEW_PASSWORD, serial=token.serial, code=env.code_of(token)
        )
    )
    assert (activated.state, activated.next_action, activated.step) == (
        S.ACTIVATION_PENDING,
        NextAction.COMPLETE,
        5,
    )
    assert activated.identity_id is not None
    done = env.run(lambda flows: flows.complete(flow_id))
    assert (done.state, done.next_action, done.completed_at) == (
        S.COMPLETED,
        None,
        dt.datetime.fromtimestamp(START, dt.UTC),
    )

    with env.sessions() as session:
        identity = session.get(Identity, activated.identity_id)
        assert identity is not None
        assert identity.identity_assurance is Level.SUBSTANTIAL
        assert identity.person_number == person.person_number
        [proofing] = session.scalars(select(ProofingRecord))
        assert (proofing.channel, proofing.document_kind) == (
            ProofingChannel.SELF_SERVICE,
            "legacy_eid",
        )
        credentials = session.scalars(
            select(Credential).where(Credential.identity_id == identity.id)
        ).all()
        assert {(c.kind, c.state) for c in credentials} == {
            (CredentialKind.CODE_DISPLAY, CredentialState.ACTIVE),
            (CredentialKind.PASSWORD, CredentialState.ACTIVE),
        }
        assert set(done.credential_ids) == {c.id for c in credentials}
        user = session.get(LegacyUser, person.user_id)
        assert user is not None
        assert (user.status, user.identity_id) == (LegacyUserStatus.MIGRATED, identity.id)
        audit = " ".join(str(entry.details) for entry in session.scalars(select(AuditEntry)))
    for secret in (PASSWORD, NEW_PASSWORD, person.person_number, env.code_of(token)):
        assert secret not in audit
    assert env.events(flow_id) == [
        ("started", "ok", None),
        ("legacy_proven", "ok", None),
        ("details_confirmed", "ok", None),
        ("authenticator_chosen", "ok", "code_display"),
        ("authenticator_chosen", "ok", "password"),
        ("activated", "ok", "code_display"),
        ("activated", "ok", "password"),
        ("completed", "ok", None),
    ]


@pytest.mark.parametrize(
    ("channel", "operators", "level"),
    [
        (ProofingChannel.BANK, ("bank-op",), Level.SUBSTANTIAL),
        (ProofingChannel.BANK, ("bank-op", "bank-op-2"), Level.SUBSTANTIAL),
        (ProofingChannel.SERVICE_CENTRE, ("centre-op",), Level.SUBSTANTIAL),
        # High only when a second operator approves with their own key (the flow itself takes
        # operator ids as typed): tests/unit/server/test_operator_approval.py.
        (ProofingChannel.SERVICE_CENTRE, ("centre-op", "centre-op-2"), Level.SUBSTANTIAL),
    ],
)
def test_assisted_flows_record_what_the_operators_checked(
    env: Env, channel: ProofingChannel, operators: tuple[str, ...], level: Level
) -> None:
    person = env.add_person()
    flow_id = env.migrate(person, channel=channel, document_kind="passport", operator_ids=operators)
    flow = env.flow(flow_id)
    assert (flow.channel, flow.checks, flow.operator_ids) == (
        channel,
        {"document_kind": "passport"},
        list(operators),
    )
    with env.sessions() as session:
        identity = session.get(Identity, flow.identity_id)
        assert identity is not None
        assert identity.identity_assurance is level
        [proofing] = session.scalars(select(ProofingRecord))
        # High only in person at a citizen service centre; a bank's check adds to the legacy
        # proof, which is what the identity rests on.
        expected = "passport" if channel is ProofingChannel.SERVICE_CENTRE else "legacy_eid"
        assert (proofing.channel, proofing.document_kind) == (channel, expected)
        assert proofing.operator_ids == list(operators)
        channels = set(session.scalars(select(MigrationEvent.channel)))
    assert channels == {channel}


def test_every_step_repeated_answers_the_same_and_changes_nothing(env: Env) -> None:
    person = env.add_person()
    token = env.stock_token()
    flow_id = env.start(person)
    steps: list[Callable[[MigrationFlows], FlowView]] = [
        lambda flows: flows.prove(flow_id, person.user_id, PASSWORD, person.code()),
        lambda flows: flows.confirm(flow_id, person.person_number, NAME),
        lambda flows: flows.choose(flow_id),
        lambda flows: flows.activate(
            flow_id, password=NEW_PASSWORD, serial=token.serial, code=env.code_of(token)
        ),
        lambda flows: flows.complete(flow_id),
    ]
    for step in steps:
        first = env.run(step)
        before = (env.flow(flow_id).version, env.events(flow_id), env.count(AuditEntry))
        env.clock.now += 31  # a new TOTP window: a second activation would need a new code
        again = env.run(step)
        assert again == first
        assert (env.flow(flow_id).version, env.events(flow_id), env.count(AuditEntry)) == before
    assert env.identities() == 1
    assert env.count(Credential) == 2  # the password and the code display


def test_steps_out_of_order_are_refused_with_the_next_step(env: Env) -> None:
    person = env.add_person()
    flow_id = env.start(person)
    env.prove(flow_id, person)
    with pytest.raises(StepNotAvailable) as caught:
        env.run(lambda flows: flows.choose(flow_id))
    assert caught.value.next_action == "confirm"
    with pytest.raises(StepNotAvailable):
        env.run(lambda flows: flows.activate(flow_id, password=NEW_PASSWORD))
    with pytest.raises(StepNotAvailable):
        env.run(lambda flows: flows.complete(flow_id))
    env.confirm(flow_id, person)
    env.run(lambda flows: flows.choose(flow_id, [A.CODE_DISPLAY]))
    with pytest.raises(ActivationInputMissing) as missing:
        env.run(lambda flows: flows.activate(flow_id, serial="123"))
    assert missing.value.missing == ("code",)
    assert env.identities() == 0


# --- the legacy proof -----------------------------------------------------------------------------


def test_nothing_but_the_proof_before_the_proof(env: Env) -> None:
    person = env.add_person()
    flow_id = env.start(person)
    for step in (
        lambda flows: flows.confirm(flow_id, person.person_number, NAME),
        lambda flows: flows.choose(flow_id),
        lambda flows: flows.activate(flow_id, password=NEW_PASSWORD),
        lambda flows: flows.complete(flow_id),
    ):
        with pytest.raises(ProofRequired):
            env.run(step)


@pytest.mark.parametrize("mistake", ["password", "used code", "code for another index"])
def test_a_failed_proof_is_one_answer_with_a_new_key_number(env: Env, mistake: str) -> None:
    person = env.add_person()
    flow_id = env.start(person)
    shown = person.shown
    other = next(i for i in card_indexes(person.secret) if i != shown)
    password, code = PASSWORD, person.code()
    expected: type[LegacyProofFailed]
    if mistake == "password":
        password, expected = "forkert", LegacyWrongPassword
    elif mistake == "used code":
        with env.transaction() as world:  # legacy login spends the code first
            world.store.prove(person.user_id, PASSWORD, shown, code)
        expected = LegacyCodeUsed
    else:
        code, expected = person.code(other), LegacyCodeForOtherIndex
    failure = recorded(
        lambda: env.run(lambda flows: flows.prove(flow_id, person.user_id, password, code))
    )
    assert type(failure.error) is expected
    assert (failure.error.code, failure.error.detail) == (
        "verification-failed",
        LegacyProofFailed.default_detail,
    )
    new_index = failure.extra["index"]
    assert new_index in card_indexes(person.secret)
    assert env.flow(flow_id).pending_index == new_index
    assert env.events(flow_id)[-1] == ("legacy_proven", "failed", None)
    with env.sessions() as session:
        user = session.get(LegacyUser, person.user_id)
        assert user is not None
        assert (user.failures, user.locked_until) == (0, None)  # throttled, never locked
    with env.transaction() as world:
        assert world.store.failures_counted(person.user_id) == 1
    person.shown = new_index
    assert env.prove(flow_id, person).state is S.LEGACY_PROVEN


def test_a_throttled_legacy_user_is_told_to_wait_and_is_not_locked(env: Env) -> None:
    person = env.add_person()
    flow_id = env.start(person)
    for _ in range(SUBJECT_RATE.burst):
        failure = recorded(
            lambda: env.run(lambda flows: flows.prove(flow_id, person.user_id, "forkert", "000000"))
        )
        person.shown = failure.extra.get("index", person.shown)
    throttled = recorded(lambda: env.prove(flow_id, person))
    assert isinstance(throttled.error, LegacyThrottled)
    assert throttled.error.code == "rate-limited"
    assert env.flow(flow_id).state == S.STARTED
    env.clock.now += SUBJECT_RATE.interval.total_seconds()
    assert env.prove(flow_id, person).state is S.LEGACY_PROVEN


def test_an_unknown_user_id_looks_like_any_other_until_the_proof(env: Env) -> None:
    person = env.add_person()
    real = env.run(lambda flows: flows.start(person.user_id))
    decoy = env.run(lambda flows: flows.start("nobody-at-all"))
    again = env.run(lambda flows: flows.start("nobody-at-all"))
    assert decoy.view.id == again.view.id != real.view.id
    assert decoy.view == env.run(lambda flows: flows.view(decoy.view.id))
    assert {k: v for k, v in vars(decoy.view).items() if k != "id"} == {
        k: v for k, v in vars(real.view).items() if k != "id"
    }
    assert len(decoy.index) == 4
    assert decoy.index.isdigit()
    assert env.count(MigrationFlow) == 1
    with pytest.raises(ProofRequired):
        env.run(lambda flows: flows.confirm(decoy.view.id, person.person_number, NAME))
    # Failures count against the typed id as in legacy login: throttled like a real one.
    for _ in range(SUBJECT_RATE.burst):
        failure = recorded(
            lambda: env.run(
                lambda flows: flows.prove(decoy.view.id, "nobody-at-all", PASSWORD, "123456")
            )
        )
        assert isinstance(failure.error, LegacyUnknownUser)
        assert len(failure.extra["index"]) == 4
    locked = recorded(
        lambda: env.run(
            lambda flows: flows.prove(decoy.view.id, "nobody-at-all", PASSWORD, "123456")
        )
    )
    assert isinstance(locked.error, LegacyThrottled)


def test_a_proof_on_another_users_flow_id_fails_and_counts_for_the_typed_id(env: Env) -> None:
    victim, intruder = env.add_person(), env.add_person()
    flow_id = env.start(victim)
    env.start(intruder)
    failure = recorded(
        lambda: env.run(
            lambda flows: flows.prove(flow_id, intruder.user_id, PASSWORD, intruder.code())
        )
    )
    assert failure.error.code == "verification-failed"
    assert env.flow(flow_id).pending_index == victim.shown
    with env.transaction() as world:
        counts = {
            person.user_id: world.store.failures_counted(person.user_id)
            for person in (victim, intruder)
        }
    assert counts == {victim.user_id: 0, intruder.user_id: 1}


def test_starting_again_needs_the_proof_again_and_resumes_where_it_stopped(env: Env) -> None:
    person = env.add_person()
    flow_id = env.to_chosen(person, [A.CODE_DISPLAY])
    assert env.start(person) == flow_id  # found again by user id, proof re-armed
    assert env.run(lambda flows: flows.view(flow_id)).next_action is NextAction.PROVE
    with pytest.raises(ProofRequired):
        env.run(lambda flows: flows.choose(flow_id, [A.AUDIO_READER]))
    resumed = env.prove(flow_id, person)
    assert (resumed.state, resumed.next_action) == (S.AUTHENTICATOR_CHOSEN, NextAction.ACTIVATE)
    assert resumed.chosen == (A.CODE_DISPLAY,)


def test_a_person_who_migrated_cannot_start_again(env: Env) -> None:
    person = env.add_person()
    flow_id = env.migrate(person)
    assert env.start(person) == flow_id
    refused = recorded(lambda: env.prove(flow_id, person))
    assert isinstance(refused.error, AlreadyMigrated)
    assert refused.error.code == "already-migrated"
    flow = env.flow(flow_id)
    assert (flow.state, flow.pending_index) == (S.COMPLETED.value, None)
    assert env.run(lambda flows: flows.view(flow_id)).state is S.COMPLETED
    assert env.identities() == 1
    assert [e for e in env.events(flow_id) if e[0] == "completed"] == [("completed", "ok", None)]


# --- details -------------------------------------------------------------------------------------


def test_a_mismatched_person_number_creates_nothing(env: Env) -> None:
    person = env.add_person()
    flow_id = env.start(person)
    env.prove(flow_id, person)
    wrong = "030480-" + ("0000" if not person.person_number.endswith("0000") else "1111")
    failure = recorded(lambda: env.run(lambda flows: flows.confirm(flow_id, wrong, NAME)))
    assert isinstance(failure.error, DetailsMismatch)
    assert failure.error.field == "person_number"
    assert wrong[-4:] not in failure.error.detail
    name = recorded(
        lambda: env.run(lambda flows: flows.confirm(flow_id, person.person_number, "Karen"))
    )
    assert isinstance(name.error, DetailsMismatch)
    assert name.error.field == "name"
    with pytest.raises(InvalidPersonNumber):
        env.run(lambda flows: flows.confirm(flow_id, "not a number", NAME))
    assert env.flow(flow_id).state == S.LEGACY_PROVEN
    assert env.identities() == 0
    assert env.events(flow_id)[-2:] == [("details_confirmed", "failed", None)] * 2
    # Case and spacing of the name do not matter.
    confirmed = env.run(
        lambda flows: flows.confirm(flow_id, person.person_number, "  inger   CHRISTENSEN ")
    )
    assert confirmed.state is S.DETAILS_CONFIRMED


def test_three_failed_steps_in_a_row_want_the_legacy_proof_again(env: Env) -> None:
    person = env.add_person()
    flow_id = env.start(person)
    env.prove(flow_id, person)
    wrong = "030480-" + ("0000" if not person.person_number.endswith("0000") else "1111")
    for attempt in range(3):
        failure = recorded(lambda: env.run(lambda flows: flows.confirm(flow_id, wrong, NAME)))
        assert ("index" in failure.extra) is (attempt == 2)
    person.shown = failure.extra["index"]
    assert env.run(lambda flows: flows.view(flow_id)).next_action is NextAction.PROVE
    assert env.prove(flow_id, person).state is S.LEGACY_PROVEN


def test_a_step_that_succeeds_ends_the_run_of_failures(env: Env) -> None:
    """In a row means in a row: a mistyped CPR number, then the right one, then two wrong
    activation codes are two failures in a row, not three."""
    person = env.add_person()
    token = env.stock_token()
    flow_id = env.start(person)
    env.prove(flow_id, person)
    wrong = "030480-" + ("0000" if not person.person_number.endswith("0000") else "1111")
    recorded(lambda: env.run(lambda flows: flows.confirm(flow_id, wrong, NAME)))
    assert env.flow(flow_id).failures == 1
    env.confirm(flow_id, person)
    assert env.flow(flow_id).failures == 0
    env.run(lambda flows: flows.choose(flow_id, [A.CODE_DISPLAY]))
    for attempt in (1, 2):
        failure = recorded(
            lambda: env.run(lambda flows: flows.activate(flow_id, serial=token.serial, code="1"))
        )
        assert "proof_required" not in failure.extra
        assert env.flow(flow_id).failures == attempt
    view = env.run(
        lambda flows: flows.activate(flow_id, serial=token.serial, code=env.code_of(token))
    )
    assert view.next_action is NextAction.COMPLETE


# --- activation ---------------------------------------------------------------------------------


def test_a_failed_token_activation_leaves_no_identity_and_can_be_retried(env: Env) -> None:
    person = env.add_person()
    token, other = env.stock_token(), env.stock_token()
    flow_id = env.to_chosen(person)
    right = env.code_of(token)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    failure = recorded(
        lambda: env.run(
            lambda flows: flows.activate(
                flow_id, password=NEW_PASSWORD, serial=token.serial, code=wrong
            )
        )
    )
    assert isinstance(failure.error, ActivationCodeRejected)
    unknown = recorded(
        lambda: env.run(
            lambda flows: flows.activate(
                flow_id, password=NEW_PASSWORD, serial="0000000000", code=right
            )
        )
    )
    assert isinstance(unknown.error, TokenNotFound)
    flow = env.flow(flow_id)
    assert (flow.state, flow.identity_id, flow.credential_ids) == (
        S.ACTIVATION_PENDING.value,
        None,
        [],
    )
    assert env.identities() == 0
    with env.sessions() as session:
        assigned = select(Credential.kind).where(Credential.state != CredentialState.SHIPPED)
        kinds = set(session.scalars(assigned))
    assert kinds == set()  # no password, no assigned token
    assert env.events(flow_id)[-2:] == [("activated", "failed", "code_display")] * 2
    assert env.run(lambda flows: flows.view(flow_id)).next_action is NextAction.ACTIVATE
    # Another token works (the first stays in stock).
    view = env.run(
        lambda flows: flows.activate(
            flow_id, password=NEW_PASSWORD, serial=other.serial, code=env.code_of(other)
        )
    )
    assert view.next_action is NextAction.COMPLETE
    assert env.identities() == 1


def test_a_weak_password_or_a_taken_person_number_creates_nothing(env: Env) -> None:
    person = env.add_person()
    token = env.stock_token()
    flow_id = env.to_chosen(person)
    weak = recorded(
        lambda: env.run(
            lambda flows: flows.activate(
                flow_id,
                password="kort",  # noqa: S106 - a test password, too short on purpose
                serial=token.serial,
                code=env.code_of(token),
            )
        )
    )
    assert isinstance(weak.error, WeakPassword)
    assert env.events(flow_id)[-1] == ("activated", "failed", "password")
    assert env.identities() == 0


def test_too_many_wrong_activation_codes_want_the_legacy_proof_again(env: Env) -> None:
    person = env.add_person()
    token = env.stock_token()
    flow_id = env.to_chosen(person, [A.CODE_DISPLAY])
    for _ in range(3):
        failure = recorded(
            lambda: env.run(lambda flows: flows.activate(flow_id, serial=token.serial, code="1"))
        )
    assert failure.extra["proof_required"] is True
    with pytest.raises(ProofRequired):
        env.run(lambda flows: flows.activate(flow_id, serial=token.serial, code=env.code_of(token)))


def test_a_device_enrolled_apart_is_recorded_before_completion(env: Env) -> None:
    person = env.add_person()
    flow_id = env.to_chosen(person, [A.FIDO2, A.PASSWORD])
    view = env.run(lambda flows: flows.activate(flow_id, password=NEW_PASSWORD))
    assert (view.next_action, view.needed, view.still_to_activate) == (
        NextAction.ENROL,
        ("fido2",),
        (A.FIDO2,),
    )
    identity_id = view.identity_id
    assert identity_id is not None
    with pytest.raises(ActivationIncomplete):
        env.run(lambda flows: flows.complete(flow_id))
    stranger = env.migrate(env.add_person())
    with env.transaction() as world:
        key = world.credentials.add_proven(
            identity_id, CredentialKind.FIDO2, serial="fido:test", public_data={}, admitted=None
        )
        foreign = world.credentials.add_proven(
            env.flow(stranger).identity_id or uuid.uuid4(),
            CredentialKind.FIDO2,
            serial="fido:stranger",
            public_data={},
            admitted=None,
        )
        key_id, foreign_id = key.id, foreign.id
    for wrong in (foreign_id, uuid.uuid4()):

        def record(flows: MigrationFlows, wrong: uuid.UUID = wrong) -> FlowView:
            return flows.record_credential(flow_id, wrong)

        with pytest.raises(CredentialNotUsable):
            env.run(record)
    recorded_view = env.run(lambda flows: flows.record_credential(flow_id, key_id))
    assert recorded_view.next_action is NextAction.COMPLETE
    assert env.run(lambda flows: flows.record_credential(flow_id, key_id)) == recorded_view
    assert env.run(lambda flows: flows.complete(flow_id)).state is S.COMPLETED
    assert env.events(flow_id)[-2:] == [("activated", "ok", "fido2"), ("completed", "ok", None)]


def test_choosing_again_after_a_failed_activation_goes_back_a_step(env: Env) -> None:
    person = env.add_person()
    reader = env.stock_token(Model.AUDIO)
    flow_id = env.to_chosen(person, [A.CODE_DISPLAY])
    recorded(lambda: env.run(lambda flows: flows.activate(flow_id, serial="0", code="123456")))
    view = env.run(lambda flows: flows.choose(flow_id, [A.AUDIO_READER]))
    assert (view.state, view.chosen) == (S.AUTHENTICATOR_CHOSEN, (A.AUDIO_READER,))
    done = env.run(
        lambda flows: flows.activate(flow_id, serial=reader.serial, code=env.code_of(reader))
    )
    assert done.next_action is NextAction.COMPLETE
    with pytest.raises(InvalidChoice):
        env.run(lambda flows: flows.choose(flow_id, [A.PASSWORD]))


# --- concurrency ---------------------------------------------------------------------------------


def test_a_second_browser_racing_the_first_gets_a_conflict_not_an_identity(env: Env) -> None:
    person = env.add_person()
    token = env.stock_token()
    flow_id = env.to_chosen(person)
    code = env.code_of(token)
    with env.sessions() as first, env.sessions() as second:
        first.begin()
        second.begin()
        one, two = env.world(first).flows, env.world(second).flows
        # Both requests have read the flow (and hold it, mid-step) before either writes, as
        # two browsers sending the same step at once do.
        held = [session.get(MigrationFlow, flow_id) for session in (first, second)]
        assert all(flow is not None and flow.identity_id is None for flow in held)
        assert one.view(flow_id).next_action is NextAction.ACTIVATE
        assert two.view(flow_id).next_action is NextAction.ACTIVATE
        one.activate(flow_id, password=NEW_PASSWORD, serial=token.serial, code=code)
        first.commit()
        with pytest.raises(FlowChanged) as caught:
            two.activate(flow_id, password=NEW_PASSWORD, serial=token.serial, code=code)
        assert caught.value.code == "concurrent-change"
        second.rollback()
    assert env.identities() == 1
    assert env.run(lambda flows: flows.view(flow_id)).next_action is NextAction.COMPLETE


def test_two_concurrent_activations_in_threads_make_one_identity(env: Env) -> None:
    person = env.add_person()
    token = env.stock_token()
    flow_id = env.to_chosen(person, [A.CODE_DISPLAY])
    code = env.code_of(token)
    read = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        with env.sessions() as session:
            session.begin()
            flows = env.world(session).flows
            flows.view(flow_id)
            read.wait(timeout=10)
            try:
                flows.activate(flow_id, serial=token.serial, code=code)
                session.commit()
                outcomes.append("ok")
            except DomainError as exc:
                session.rollback()
                outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["concurrent-change", "ok"]
    assert env.identities() == 1


# --- abandonment ---------------------------------------------------------------------------------


def test_an_idle_flow_is_dropped_once_at_its_step_and_resumes_there(env: Env) -> None:
    person, done_person, fresh_person = env.add_person(), env.add_person(), env.add_person()
    flow_id = env.to_chosen(person, [A.CODE_DISPLAY])
    done = env.migrate(done_person)
    env.clock.now += 13 * 86400
    fresh = env.start(fresh_person)
    env.clock.now += 2 * 86400

    def sweep() -> int:
        with env.transaction() as world:
            now = dt.datetime.fromtimestamp(env.clock.now, dt.UTC)
            return sweep_abandoned(world.session, idle=dt.timedelta(days=14), now=now)

    assert sweep() == 1
    assert sweep() == 0  # once
    assert env.events(flow_id)[-1] == ("authenticator_chosen", "dropped", "code_display")
    assert [e for e in env.events(done) if e[1] == "dropped"] == []
    assert [e for e in env.events(fresh) if e[1] == "dropped"] == []
    view = env.run(lambda flows: flows.view(flow_id))
    assert (view.abandoned, view.next_action, view.state) == (
        True,
        NextAction.START,
        S.AUTHENTICATOR_CHOSEN,
    )
    with pytest.raises(StartAgain):
        env.run(lambda flows: flows.activate(flow_id, serial="1", code="1"))
    assert env.start(person) == flow_id
    resumed = env.prove(flow_id, person)
    assert (resumed.abandoned, resumed.state, resumed.chosen) == (
        False,
        S.AUTHENTICATOR_CHOSEN,
        (A.CODE_DISPLAY,),
    )
    assert env.flow(flow_id).abandoned_at is None


def test_a_flow_belongs_to_the_wave_its_person_was_invited_in(env: Env) -> None:
    person = env.add_person()
    with env.transaction() as world:
        wave = MigrationWave(
            name="1980s",
            cohort={},
            starts_on=dt.date(2026, 3, 1),
            deadline=dt.date(2026, 6, 1),
            quota=10,
        )
        world.session.add(wave)
        world.session.flush()
        world.session.add(
            MigrationInvitation(
                user_id=person.user_id,
                wave_id=wave.id,
                invited_at=dt.datetime.fromtimestamp(START, dt.UTC),
                reminders=0,
            )
        )
        wave_id = wave.id
    flow_id = env.start(person)
    assert env.flow(flow_id).wave_id == wave_id
    with env.sessions() as session:
        assert set(session.scalars(select(MigrationEvent.wave_id))) == {wave_id}


def test_the_sweep_command_marks_idle_flows_once(env: Env, database_url: str) -> None:
    env.clock.now = dt.datetime(2020, 1, 6, tzinfo=dt.UTC).timestamp()  # long idle by now
    person = env.add_person()
    flow_id = env.start(person)
    runner = CliRunner()
    command = ["migration", "flow", "sweep", "--database-url", database_url, "--json"]
    first = runner.invoke(app, command)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["dropped"] == 1
    again = runner.invoke(app, [*command[:-1], "--days", "30"])
    assert again.exit_code == 0, again.output
    assert again.output.startswith("0 flow(s) idle for 30 days")
    assert env.events(flow_id)[-1] == ("started", "dropped", None)
    with env.sessions() as session:
        [entry] = session.scalars(
            select(AuditEntry).where(AuditEntry.event == "migration.flow.swept")
        )
    assert entry.details["dropped"] == 1
    assert entry.actor.startswith("cli")
