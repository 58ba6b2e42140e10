"""Identity and credential services on SQLite and PostgreSQL: the transition table, the rules
between kinds, PSKC token batches, activation with simulator codes, and passwords."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import Parameters, Type
from sqlalchemy.orm import Session

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Algorithm, Model, OtpGenerator, OtpTokenState
from server.domain.errors import FactorRejected
from server.domain.model import (
    STOCK_IDENTITY_ID,
    AuthenticatorKind,
    CredentialKind,
    CredentialState,
    IdentityStatus,
    Level,
    ProofingChannel,
)
from server.services.credentials import CredentialService
from server.services.credentials.admission import IN_PERSON
from server.services.credentials.passwords import PasswordVerdict, fingerprint
from server.services.credentials.rules import (
    INITIAL_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    validate_transitions,
)
from server.services.errors import InvalidPersonNumber, WeakPassword, WrongPassword
from server.services.factors import otp_check
from server.services.identities import Enrolment, IdentityService, approved_level
from server.services.lifecycle_errors import (
    ActivationCodeRejected,
    ConflictingCredential,
    CredentialLimitReached,
    DuplicateIdentity,
    DuplicateSerial,
    IdentityNotActive,
    InsufficientProofing,
    InvalidTokenBatch,
    InvalidTransition,
    TokenNotFound,
)
from server.services.passwords import Passwords
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
from server.storage.engine import create_engine_for, migrate, session_factory
from server.storage.repositories import CredentialRepository
from server.storage.tables import Credential, Identity
from tests.unit.server.storage.databases import postgres_schema

K = CredentialKind
S = CredentialState
FAST = Parameters(
    type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=8, parallelism=1
)
NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, details: dict[str, Any]) -> None:
        self.events.append((event, details))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture(params=["sqlite", "postgresql"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    def run(url: str) -> Iterator[Session]:
        engine = create_engine_for(url)
        try:
            migrate(engine)
            with session_factory(engine)() as session, session.begin():
                yield session
        finally:
            engine.dispose()

    if request.param == "sqlite":
        yield from run(f"sqlite+pysqlite:///{tmp_path / 'services.db'}")
    else:
        with postgres_schema() as url:
            yield from run(url)


@pytest.fixture
def audit() -> Recorder:
    return Recorder()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([os.urandom(32)])


@pytest.fixture
def credentials(
    session: Session, box: SecretBox, clock: Clock, audit: Recorder
) -> CredentialService:
    return CredentialService(session, box, Passwords(FAST), clock=clock, audit=audit)


@pytest.fixture
def identities(
    session: Session, credentials: CredentialService, audit: Recorder
) -> IdentityService:
    pseudonyms = Pseudonyms(os.urandom(32))
    return IdentityService(session, pseudonyms, audit=audit, on_close=credentials.revoke_all)


_numbers = itertools.count(1000)


def enrol(identities: IdentityService, **changes: Any) -> Identity:
    fields: dict[str, Any] = {
        "person_number": f"010190-{next(_numbers)}",
        "name": "Karen Blixen",
        "channel": ProofingChannel.SELF_SERVICE,
        "document_kind": "passport_chip",
    }
    fields.update(changes)
    return identities.enrol(Enrolment(**fields))


def token(model: Model = Model.DISPLAY, algorithm: Algorithm | None = None) -> OtpTokenState:
    return otp_token.new_state(model, algorithm)


def generator(state: OtpTokenState, clock: Clock) -> OtpGenerator:
    return OtpGenerator(state, lambda _: None, clock=clock)


def imported(credentials: CredentialService, *states: OtpTokenState) -> list[Credential]:
    return credentials.import_batch(pskc.write_pskc([s.pskc_key() for s in states]))


def state_of(credential: Credential) -> CredentialState:
    # A function call stops mypy narrowing the state across the calls that change it.
    return credential.state


def put(
    session: Session, identity: Identity, kind: CredentialKind, state: CredentialState
) -> Credential:
    """A credential stored directly in ``state``, bypassing the service's rules."""
    credential = Credential(id=uuid.uuid4(), identity_id=identity.id, kind=kind, state=state)
    return CredentialRepository(session).add(credential)


def move(credentials: CredentialService, credential: Credential, target: CredentialState) -> None:
    if target is S.REPLACED:
        credentials.replace(credential.id)
    else:
        credentials.transition(credential.id, target)


# --- the transition table -------------------------------------------------------------------


def test_transition_table_is_valid_at_import() -> None:
    validate_transitions(TRANSITIONS, INITIAL_STATES, TERMINAL_STATES)
    assert all(not TRANSITIONS[state] for state in TERMINAL_STATES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({S.LOST: frozenset({S.ACTIVE}), S.REVOKED: frozenset({S.ACTIVE})}, "terminal"),
        ({S.LOST: frozenset()}, "dead end"),
        ({S.SHIPPED: frozenset({S.SHIPPED})}, "itself"),
    ],
)
def test_validate_transitions_refuses_broken_tables(
    change: dict[CredentialState, frozenset[CredentialState]], message: str
) -> None:
    table: dict[CredentialState, frozenset[CredentialState]] = {**TRANSITIONS, **change}
    with pytest.raises(RuntimeError, match=message):
        validate_transitions(table, INITIAL_STATES, TERMINAL_STATES)


def test_validate_transitions_refuses_unreachable_and_missing_states() -> None:
    with pytest.raises(RuntimeError, match="unreachable"):
        validate_transitions(TRANSITIONS, {S.REVOKED}, TERMINAL_STATES)
    partial: dict[CredentialState, frozenset[CredentialState]] = {
        state: targets for state, targets in TRANSITIONS.items() if state is not S.LOST
    }
    with pytest.raises(RuntimeError, match="missing"):
        validate_transitions(partial, INITIAL_STATES, TERMINAL_STATES)


def test_every_transition_is_enforced(
    session: Session, identities: IdentityService, credentials: CredentialService
) -> None:
    for current, target in itertools.product(S, S):
        if current is target or (target is S.ACTIVE and current is S.ACTIVATION_PENDING):
            continue  # activation needs a code: tested below
        identity = enrol(identities)
        credential = put(session, identity, K.FIDO2, current)
        allowed = target in TRANSITIONS[current]
        if target is S.ACTIVE and current is not S.BLOCKED:
            allowed = False
        if allowed:
            move(credentials, credential, target)
            assert state_of(credential) is target, (current, target)
        else:
            with pytest.raises(InvalidTransition):
                move(credentials, credential, target)
            assert state_of(credential) is current


# --- identities -----------------------------------------------------------------------------


def test_enrol_records_proofing_and_refuses_a_second_identity(
    identities: IdentityService, audit: Recorder
) -> None:
    identity = enrol(identities, person_number="0101901234")
    assert identity.person_number == "010190-1234"
    assert identity.identity_assurance is Level.SUBSTANTIAL
    assert identities.proofing(identity.id)[0].document_kind == "passport_chip"
    with pytest.raises(DuplicateIdentity) as caught:
        enrol(identities, person_number="010190-1234")
    assert "1234" not in str(caught.value)
    assert "1234" not in caught.value.detail
    assert "010190" not in repr(audit.events)


def test_enrol_refuses_an_impossible_date(identities: IdentityService) -> None:
    with pytest.raises(InvalidPersonNumber):
        enrol(identities, person_number="310290-1234")


def test_high_assurance_needs_two_different_operators_in_person(
    identities: IdentityService,
) -> None:
    high = {"channel": ProofingChannel.SERVICE_CENTRE, "document_kind": "passport"}
    # Operator ids are text: two of them prove no second person (that takes a second key).
    identity = enrol(identities, operator_ids=("op-1", "op-2"), **high)
    assert identity.identity_assurance is Level.SUBSTANTIAL
    level = approved_level(ProofingChannel.SERVICE_CENTRE, "passport", "op-1", "op-2")
    assert level is Level.HIGH
    raised = identities.record_proofing(
        identity.id, ProofingChannel.SERVICE_CENTRE, "passport", ("op-1", "op-2"), level=level
    )
    assert raised.identity_assurance is Level.HIGH
    one = enrol(identities, operator_ids=("op-1", "op-1"), **high)
    assert one.identity_assurance is Level.SUBSTANTIAL
    with pytest.raises(InsufficientProofing):
        enrol(identities, operator_ids=("op-1",), required_level=Level.HIGH, **high)
    with pytest.raises(InsufficientProofing):
        enrol(identities, channel=ProofingChannel.SELF_SERVICE, document_kind="passport")
    low = enrol(identities, document_kind="cpr_questions")
    assert low.identity_assurance is Level.LOW


def test_identity_status_transitions(
    session: Session, identities: IdentityService, audit: Recorder
) -> None:
    identity = enrol(identities)
    credential = put(session, identity, K.FIDO2, S.ACTIVE)
    identities.suspend(identity.id)
    with pytest.raises(InvalidTransition):
        identities.suspend(identity.id)
    identities.resume(identity.id)
    identities.close(identity.id)
    assert identity.status is IdentityStatus.CLOSED
    assert state_of(credential) is S.REVOKED
    for step in (identities.resume, identities.suspend, identities.close):
        with pytest.raises(InvalidTransition):
            step(identity.id)
    assert {"identity.suspended", "identity.resumed", "identity.closed"} <= set(audit.names())


def test_pseudonyms_differ_per_provider(identities: IdentityService) -> None:
    identity = enrol(identities)
    one = identities.pseudonym(identity.id, "sp-one")
    assert one == identities.pseudonym(identity.id, "sp-one")
    assert one != identities.pseudonym(identity.id, "sp-two")


# --- token batches and activation ---------------------------------------------------------


def test_import_seals_secrets_and_ships_unassigned_tokens(
    credentials: CredentialService, box: SecretBox, audit: Recorder
) -> None:
    display, reader, usb = token(), token(Model.AUDIO), token(Model.USB)
    tokens = imported(credentials, display, reader, usb)
    assert [t.kind for t in tokens] == [K.CODE_DISPLAY, K.AUDIO_READER, K.OTP_TOKEN]
    for credential, state in zip(tokens, (display, reader, usb), strict=True):
        assert state_of(credential) is S.SHIPPED
        assert credential.identity_id == STOCK_IDENTITY_ID
        assert credential.serial == state.serial
        blob = credential.secret_ciphertext or b""
        assert state.secret not in blob
        opened = box.open(blob, context=f"credential:{credential.id}")
        assert opened.startswith(state.secret)
    assert state.secret.hex() not in repr(audit.events)


def test_import_refuses_duplicates_and_garbage(credentials: CredentialService) -> None:
    display = token()
    imported(credentials, display)
    with pytest.raises(DuplicateSerial):
        imported(credentials, display)
    with pytest.raises(InvalidTokenBatch):
        credentials.import_batch(b"<not-pskc/>")
    with pytest.raises(InvalidTokenBatch):
        credentials.import_batch(pskc.write_pskc([token().pskc_key()], psk=os.urandom(16)))


def test_yubico_private_id_is_sealed_with_the_key(
    credentials: CredentialService, box: SecretBox
) -> None:
    usb = token(Model.USB)
    (credential,) = imported(credentials, usb)
    assert "private_id" not in credential.public_data
    assert usb.private_id.hex() not in repr(credential.public_data)
    blob = credential.secret_ciphertext or b""
    assert usb.private_id not in blob
    assert box.open(blob, context=f"credential:{credential.id}") == usb.secret + usb.private_id


def test_yubico_row_stored_before_sealing_the_private_id_still_logs_in(
    identities: IdentityService,
    credentials: CredentialService,
    clock: Clock,
    session: Session,
    box: SecretBox,
) -> None:
    usb = token(Model.USB)
    identity = enrol(identities)
    credential_id = uuid.uuid4()
    CredentialRepository(session).add(
        Credential(
            id=credential_id,
            identity_id=identity.id,
            kind=K.OTP_TOKEN,
            state=S.ACTIVE,
            serial=usb.serial,
            secret_ciphertext=box.seal(usb.secret, context=f"credential:{credential_id}"),
            public_data={
                "algorithm": "yubico",
                "public_id": usb.public_id.hex(),
                "private_id": usb.private_id.hex(),
            },
        )
    )
    codes = generator(usb, clock)
    check = otp_check(box, clock)
    code = codes.next_code()
    assert check(session, identity.id, {"code": code}).kind is AuthenticatorKind.OTP_TOKEN
    with pytest.raises(FactorRejected, match="code-replayed"):
        check(session, identity.id, {"code": code})
    assert (
        check(session, identity.id, {"code": codes.next_code()}).kind is AuthenticatorKind.OTP_TOKEN
    )


def test_import_with_pre_shared_key(credentials: CredentialService) -> None:
    psk = os.urandom(32)
    display = token()
    (credential,) = credentials.import_batch(
        pskc.write_pskc([display.pskc_key()], psk=psk), psk=psk
    )
    assert credential.serial == display.serial


@pytest.mark.parametrize(
    ("model", "algorithm"),
    [(Model.DISPLAY, None), (Model.DISPLAY, Algorithm.HOTP), (Model.USB, None)],
)
def test_assign_and_activate_with_a_code_from_the_simulator(
    identities: IdentityService,
    credentials: CredentialService,
    clock: Clock,
    audit: Recorder,
    session: Session,
    box: SecretBox,
    model: Model,
    algorithm: Algorithm | None,
) -> None:
    state = token(model, algorithm)
    imported(credentials, state)
    identity = enrol(identities)
    credential = credentials.assign(identity.id, state.serial)
    assert state_of(credential) is S.ACTIVATION_PENDING
    assert credential.identity_id == identity.id
    code = generator(state, clock).next_code()
    credentials.activate(credential.id, code, added_by=IN_PERSON)
    assert state_of(credential) is S.ACTIVE
    if algorithm is Algorithm.HOTP:
        assert credential.counter == 1
    elif model is Model.DISPLAY:
        assert credential.last_used_window == int(NOW // 30)
    else:
        assert credential.counter >> 8 == 1
    assert {"credential.assigned", "credential.activated"} <= set(audit.names())
    assert code not in repr(audit.events)
    # The login factor reads what activation stored: the next code logs in.
    clock.now += 30
    check = otp_check(box, clock)
    assert check(session, identity.id, {"code": generator(state, clock).next_code()})


def test_three_wrong_codes_block_a_code_display(
    identities: IdentityService, credentials: CredentialService, clock: Clock
) -> None:
    state = token()
    imported(credentials, state)
    credential = credentials.assign(enrol(identities).id, state.serial)
    right = generator(state, clock).next_code()
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(3):
        with pytest.raises(ActivationCodeRejected):
            credentials.activate(credential.id, wrong, added_by=IN_PERSON)
    assert state_of(credential) is S.BLOCKED
    assert credential.failures == 3
    with pytest.raises(InvalidTransition):
        credentials.activate(credential.id, right, added_by=IN_PERSON)


def test_assign_refuses_unknown_and_assigned_tokens(
    identities: IdentityService, credentials: CredentialService
) -> None:
    state = token()
    imported(credentials, state)
    identity = enrol(identities)
    with pytest.raises(TokenNotFound):
        credentials.assign(identity.id, "no-such-serial")
    credentials.assign(identity.id, state.serial)
    with pytest.raises(TokenNotFound):
        credentials.assign(enrol(identities).id, state.serial)


def test_suspended_identity_gets_no_tokens(
    identities: IdentityService, credentials: CredentialService
) -> None:
    state = token()
    imported(credentials, state)
    identity = enrol(identities)
    identities.suspend(identity.id)
    with pytest.raises(IdentityNotActive):
        credentials.assign(identity.id, state.serial)


# --- rules between kinds ----------------------------------------------------------------------


def test_only_one_active_code_display(
    session: Session,
    identities: IdentityService,
    credentials: CredentialService,
) -> None:
    identity = enrol(identities)
    put(session, identity, K.CODE_DISPLAY, S.ACTIVE)
    state = token()
    imported(credentials, state)
    with pytest.raises(CredentialLimitReached):
        credentials.assign(identity.id, state.serial)
    # Even past the limit (data from before the rule), activation checks exclusivity itself.
    pending = put(session, identity, K.CODE_DISPLAY, S.ACTIVATION_PENDING)
    pending.secret_ciphertext = b"sealed"  # refused before the secret is ever opened
    with pytest.raises(ConflictingCredential):
        credentials.activate(pending.id, "000000", added_by=IN_PERSON)


def test_code_display_and_audio_reader_are_not_active_together(
    session: Session, identities: IdentityService, credentials: CredentialService, clock: Clock
) -> None:
    identity = enrol(identities)
    display = put(session, identity, K.CODE_DISPLAY, S.ACTIVE)
    reader_state = token(Model.AUDIO)
    imported(credentials, reader_state)
    reader = credentials.assign(identity.id, reader_state.serial)
    with pytest.raises(ConflictingCredential):
        credentials.activate(
            reader.id, generator(reader_state, clock).next_code(), added_by=IN_PERSON
        )
    credentials.transition(display.id, S.REVOKED)
    credentials.activate(reader.id, generator(reader_state, clock).next_code(), added_by=IN_PERSON)
    assert state_of(reader) is S.ACTIVE


@pytest.mark.parametrize(
    ("kind", "limit"), [(K.FIDO2, 5), (K.PIV, 2), (K.KEY_CARD, 1), (K.OTP_TOKEN, 5)]
)
def test_limits_per_kind(
    identities: IdentityService, credentials: CredentialService, kind: CredentialKind, limit: int
) -> None:
    identity = enrol(identities)
    ordered = [credentials.order(identity.id, kind) for _ in range(limit)]
    with pytest.raises(CredentialLimitReached):
        credentials.order(identity.id, kind)
    credentials.transition(ordered[0].id, S.REVOKED)
    credentials.order(identity.id, kind)


def test_blocked_code_display_is_replaced_not_reused(
    identities: IdentityService, credentials: CredentialService, clock: Clock, audit: Recorder
) -> None:
    first, second = token(), token()
    imported(credentials, first, second)
    identity = enrol(identities)
    old = credentials.assign(identity.id, first.serial)
    credentials.activate(old.id, generator(first, clock).next_code(), added_by=IN_PERSON)
    credentials.transition(old.id, S.BLOCKED)
    with pytest.raises(InvalidTransition):
        credentials.transition(old.id, S.ACTIVE)
    new = credentials.replace(old.id, second.serial)
    assert state_of(old) is S.REPLACED
    assert state_of(new) is S.ACTIVATION_PENDING
    assert new.id != old.id
    assert new.public_data["replaces"] == str(old.id)
    clock.now += 60
    credentials.activate(new.id, generator(second, clock).next_code(), added_by=IN_PERSON)
    assert state_of(new) is S.ACTIVE
    assert "credential.replaced" in audit.names()


def test_replacement_without_a_token_orders_one_that_assignment_fulfils(
    session: Session, identities: IdentityService, credentials: CredentialService
) -> None:
    identity = enrol(identities)
    lost = put(session, identity, K.CODE_DISPLAY, S.LOST)
    order = credentials.replace(lost.id)
    assert state_of(order) is S.ORDERED
    assert order.kind is K.CODE_DISPLAY
    state = token()
    imported(credentials, state)
    assigned = credentials.assign(identity.id, state.serial)
    assert state_of(order) is S.REVOKED
    assert state_of(assigned) is S.ACTIVATION_PENDING


def test_blocked_security_key_may_be_unblocked(
    session: Session, identities: IdentityService, credentials: CredentialService
) -> None:
    key = put(session, enrol(identities), K.FIDO2, S.BLOCKED)
    credentials.transition(key.id, S.ACTIVE)
    assert state_of(key) is S.ACTIVE


# --- passwords --------------------------------------------------------------------------------


def test_password_set_check_and_change(
    identities: IdentityService, credentials: CredentialService, audit: Recorder
) -> None:
    identity = enrol(identities)
    first, second = "correct horse battery staple", "another long passphrase"
    credential = credentials.set_password(identity.id, first, added_by=IN_PERSON)
    assert credential.kind is K.PASSWORD
    assert state_of(credential) is S.ACTIVE
    assert b"argon2id" not in (credential.secret_ciphertext or b"")
    credentials.check_password(identity.id, first)
    with pytest.raises(WrongPassword):
        credentials.check_password(identity.id, second)
    with pytest.raises(WrongPassword):
        credentials.set_password(identity.id, second, added_by=IN_PERSON)
    with pytest.raises(WrongPassword):
        credentials.set_password(identity.id, second, current_password=second, added_by=IN_PERSON)
    assert (
        credentials.set_password(identity.id, second, current_password=first, added_by=IN_PERSON)
        is credential
    )
    credentials.check_password(identity.id, second)
    with pytest.raises(WeakPassword):
        credentials.set_password(identity.id, "short", current_password=second, added_by=IN_PERSON)
    assert {"password.set", "password.changed"} <= set(audit.names())
    assert first not in repr(audit.events)


def test_a_password_verdict_stands_only_for_the_unchanged_credential(
    identities: IdentityService, credentials: CredentialService
) -> None:
    identity = enrol(identities)
    first, second = "correct horse battery staple", "another long passphrase"
    credential = credentials.set_password(identity.id, first, added_by=IN_PERSON)
    # A verdict on this credential as stored stands in for the hashing, either way.
    right = PasswordVerdict(credential.id, fingerprint(credential), right=True)
    assert credentials.check_password(identity.id, "ignored", verdict=right) is credential
    wrong = PasswordVerdict(credential.id, fingerprint(credential), right=False)
    with pytest.raises(WrongPassword):
        credentials.check_password(identity.id, first, verdict=wrong)
    # The password changed since: the verdict no longer holds and the password is hashed.
    credentials.set_password(identity.id, second, current_password=first, added_by=IN_PERSON)
    with pytest.raises(WrongPassword):
        credentials.check_password(identity.id, first, verdict=right)
    assert credentials.check_password(identity.id, second, verdict=wrong) is credential
    # A verdict on nobody's password (the decoy) stands for no credential.
    nobody = PasswordVerdict(None, b"", right=False)
    assert credentials.check_password(identity.id, second, verdict=nobody) is credential
