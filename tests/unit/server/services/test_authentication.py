"""Authentication transactions on SQLite and PostgreSQL: factors, assurance, step-up, limits,
and the signed assertion."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from argon2 import Parameters, Type
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from devices.protocol.otp import totp
from server.domain.model import CredentialState, Level
from server.services.audit import AuditLog, verify_database
from server.services.authentication import AuthenticationService
from server.services.credentials import CredentialService
from server.services.credentials.admission import IN_PERSON
from server.services.factors import PasswordCheck, otp_check
from server.services.login.errors import (
    StepUpRequired,
    TemporarilyBlocked,
    Throttled,
    TransactionExpired,
)
from server.services.passwords import Passwords
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
from server.services.throttles import EVERYWHERE_RATE, NETWORK_RATE, SUBJECT_RATE, TOKEN_BLOCK
from server.services.tokens_jwt import SigningKey
from server.storage.repositories import CredentialRepository
from tests.unit.server.people import (
    SEED,
    Attempt,
    attempt_factor,
    seed_person_with_code_display,
)

START = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def seconds(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def world(
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> tuple[sessionmaker[Session], uuid.UUID, SecretBox, Clock]:
    box = SecretBox.from_file(tmp_path / "kek.bin", create=True)
    identity_id = seed_person_with_code_display(sessions, box)
    return sessions, identity_id, box, Clock()


def service(session: Session, clock: Clock, tmp_path: Path) -> AuthenticationService:
    return AuthenticationService(
        session,
        signer=SigningKey.from_file(tmp_path / "signing.pem", create=True).signer(),
        pseudonyms=Pseudonyms.from_file(tmp_path / "pseudonym.key", create=True),
        issuer="https://idp.example",
        clock=clock,
    )


def login(
    world: tuple,
    tmp_path: Path,
    code: str,
    *,
    provider: str = "https://sp.example",
    level: Level = Level.LOW,
    source: str = "10.0.0.1",
):  # type: ignore[no-untyped-def]
    sessions, identity_id, box, clock = world
    with sessions() as session, session.begin():
        auth = service(session, clock, tmp_path)
        transaction = auth.begin(provider, level)
        auth.identify(transaction.id, identity_id)
        result = attempt_factor(
            lambda: auth.verify_factor(
                transaction.id, otp_check(box, clock.seconds), {"code": code}, source=source
            )
        )
        transaction_id = transaction.id
    return transaction_id, result


def test_totp_login_gives_a_signed_assertion_with_oidc_claims(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    sessions, identity_id, _, clock = world
    transaction_id, result = login(world, tmp_path, totp(SEED, clock.seconds()))
    assert result.failure is None
    assert result.factors == ["code_display"]
    with sessions() as session, session.begin():
        outcome = service(session, clock, tmp_path).complete(transaction_id)
    signer = SigningKey.from_file(tmp_path / "signing.pem").signer()
    key = jwt.PyJWK(signer.jwks()["keys"][0])
    claims = jwt.decode(
        outcome.assertion,
        key,
        algorithms=["ES256"],
        audience="https://sp.example",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["loa"] == "low"
    assert claims["ial"] == "substantial"
    assert claims["amr"] == ["code_display"]
    assert claims["txn"] == str(transaction_id)
    assert claims["sub"] != str(identity_id)  # a pseudonym, never the identity id


def test_pseudonym_differs_between_providers_and_is_stable(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    sessions, _, _, clock = world
    subjects = []
    for provider in ("https://a.example", "https://b.example", "https://a.example"):
        clock.now += dt.timedelta(seconds=30)
        transaction_id, _ = login(world, tmp_path, totp(SEED, clock.seconds()), provider=provider)
        with sessions() as session, session.begin():
            assertion = service(session, clock, tmp_path).complete(transaction_id).assertion
        subjects.append(jwt.decode(assertion, options={"verify_signature": False})["sub"])
    assert subjects[0] == subjects[2]
    assert subjects[0] != subjects[1]


def test_one_code_display_is_not_enough_for_substantial(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    sessions, _, _, clock = world
    transaction_id, _ = login(world, tmp_path, totp(SEED, clock.seconds()), level=Level.SUBSTANTIAL)
    with sessions() as session, session.begin(), pytest.raises(StepUpRequired) as step_up:
        service(session, clock, tmp_path).complete(transaction_id)
    assert step_up.value.achieved is Level.LOW
    assert step_up.value.required is Level.SUBSTANTIAL


def test_a_code_is_accepted_once(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    _, _, _, clock = world
    code = totp(SEED, clock.seconds())
    assert login(world, tmp_path, code)[1].failure is None
    assert login(world, tmp_path, code)[1].failure is not None


def test_three_anonymous_wrong_codes_leave_the_code_display_working(
    world: tuple, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    # The attack: logins that prove nothing else, with wrong codes. Nothing of the code
    # display changes; the person's own code works at once.
    sessions, identity_id, _, clock = world
    for _ in range(3):
        _, result = login(world, tmp_path, "000000")
        assert result.failure is not None
        assert result.failure.code == "verification-failed"
    with sessions() as session:
        (credential,) = CredentialRepository(session).for_identity(identity_id)
        assert (credential.state, credential.failures) == (CredentialState.ACTIVE, 0)
    assert login(world, tmp_path, totp(SEED, clock.seconds()), source="10.0.0.2")[1].failure is None


def test_unknown_person_fails_exactly_like_a_wrong_code(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    sessions, _, box, clock = world
    _, wrong = login(world, tmp_path, "000000")
    with sessions() as session, session.begin():
        auth = service(session, clock, tmp_path)
        transaction = auth.begin("https://sp.example", Level.LOW)
        auth.identify(transaction.id, None)
        unknown = attempt_factor(
            lambda: auth.verify_factor(
                transaction.id, otp_check(box, clock.seconds), {"code": "123456"}, source="10.0.0.2"
            )
        )
    assert wrong.failure is not None
    assert unknown.failure is not None
    assert unknown.failure.code == wrong.failure.code
    assert unknown.failure.detail == wrong.failure.detail


def test_one_source_is_throttled_without_locking_out_others(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    sessions, _, box, clock = world

    def nobody(source: str) -> Attempt:
        with sessions() as session, session.begin():
            auth = service(session, clock, tmp_path)
            transaction = auth.begin("https://sp.example", Level.LOW)
            auth.identify(transaction.id, None, subject_digest=uuid.uuid4().hex)
            return attempt_factor(
                lambda: auth.verify_factor(
                    transaction.id, otp_check(box, clock.seconds), {"code": "1"}, source=source
                )
            )

    for _ in range(NETWORK_RATE.burst):  # many people, one source
        assert nobody("192.0.2.66").failure is not None
    with pytest.raises(Throttled) as throttled:
        login(world, tmp_path, totp(SEED, clock.seconds()), source="192.0.2.66")
    assert throttled.value.retry_after == NETWORK_RATE.interval.total_seconds()
    assert (
        login(world, tmp_path, totp(SEED, clock.seconds()), source="198.51.100.7")[1].failure
        is None
    )
    # The throttle decays: one interval later the source is heard again.
    clock.now += NETWORK_RATE.interval
    assert nobody("192.0.2.66").failure is not None


def test_an_ipv6_source_is_throttled_by_its_64(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    _, _, _, clock = world
    for host in range(SUBJECT_RATE.burst):
        login(world, tmp_path, "000000", source=f"2001:db8:1:2::{host + 1:x}")
    with pytest.raises(Throttled):
        login(world, tmp_path, totp(SEED, clock.seconds()), source="2001:db8:1:2:ffff::9")
    assert (
        login(world, tmp_path, totp(SEED, clock.seconds()), source="2001:db8:1:3::1")[1].failure
        is None
    )


def test_an_expired_transaction_is_refused(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    sessions, identity_id, _, clock = world
    with sessions() as session, session.begin():
        transaction_id = service(session, clock, tmp_path).begin("https://sp.example", Level.LOW).id
    clock.now += dt.timedelta(minutes=11)
    with sessions() as session, session.begin(), pytest.raises(TransactionExpired):
        service(session, clock, tmp_path).identify(transaction_id, identity_id)


FAST_ARGON2 = Parameters(
    type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=8, parallelism=1
)
PASSWORD = "an entirely ordinary passphrase"  # noqa: S105 - a test person's password


def with_password(world: tuple) -> PasswordCheck:  # type: ignore[type-arg]
    """Give the world's person ``PASSWORD``: the password check to log in with."""
    sessions, identity_id, box, clock = world
    passwords = Passwords(FAST_ARGON2)
    with sessions.begin() as session:
        CredentialService(session, box, passwords, clock=clock.seconds).set_password(
            identity_id, PASSWORD, added_by=IN_PERSON
        )
    return PasswordCheck(
        box, passwords, clock.seconds, decoy_hash=PasswordCheck.make_decoy(passwords)
    )


def test_a_hundred_wrong_passwords_from_six_addresses_lock_no_one_out(
    world: tuple,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    sessions, identity_id, _box, clock = world
    check = with_password(world)
    events: list[tuple[str, dict[str, Any]]] = []

    def attempt(password: str, source: str) -> Attempt:
        with sessions() as session, session.begin():
            auth = service(session, clock, tmp_path)
            auth.throttles = type(auth.throttles)(session, lambda e, d: events.append((e, d)))
            transaction = auth.begin("https://sp.example", Level.LOW)
            auth.identify(transaction.id, identity_id)
            return attempt_factor(
                lambda: auth.verify_factor(
                    transaction.id, check, {"password": password}, source=source
                )
            )

    own = "198.51.100.20"
    assert attempt(PASSWORD, own).failure is None  # the person's own network, known before
    attackers = [f"203.0.113.{n}" for n in range(1, 7)]
    refused = 0
    for n in range(100):
        try:
            assert attempt("a wrong passphrase", attackers[n % 6]).failure is not None
        except Throttled:
            refused += 1
        if n % 6 == 5:
            clock.now += dt.timedelta(seconds=25)  # 100 tries in about seven minutes
    # Each attacking address was slowed to its subject's rate; most tries were not checked.
    assert refused >= 100 - 6 * (SUBJECT_RATE.burst + 4)
    # The person, from their own address, at once: the right password works.
    assert attempt(PASSWORD, own).failure is None
    # The failures from many addresses are an alert in the audit log, for the operators...
    alerts = [details for event, details in events if event == "authentication.alert"]
    assert [alert["identity"] for alert in alerts] == [str(identity_id)]
    # ... and, while they last, a network the person never logged in from waits too.
    with pytest.raises(Throttled) as slowed:
        attempt(PASSWORD, "198.51.100.99")
    assert slowed.value.retry_after is not None
    assert slowed.value.retry_after <= EVERYWHERE_RATE.interval.total_seconds()


def test_wrong_codes_after_a_password_block_the_code_display_for_a_while(
    world: tuple,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    sessions, identity_id, box, clock = world
    check = with_password(world)
    with sessions() as session, session.begin():
        auth = service(session, clock, tmp_path)
        transaction_id = auth.begin("https://sp.example", Level.SUBSTANTIAL).id
        auth.identify(transaction_id, identity_id)

    def step(factor: Any, submitted: dict[str, str]) -> Attempt:
        with sessions() as session, session.begin():
            auth = service(session, clock, tmp_path)
            return attempt_factor(
                lambda: auth.verify_factor(transaction_id, factor, submitted, source="10.0.0.1")
            )

    assert step(check, {"password": PASSWORD}).failure is None
    code_check = otp_check(box, clock.seconds)
    for _ in range(2):
        assert step(code_check, {"code": "000000"}).failure is not None
    blocked = step(code_check, {"code": "000000"}).failure
    assert isinstance(blocked, TemporarilyBlocked)
    assert blocked.retry_after == TOKEN_BLOCK.total_seconds()
    with sessions() as session:
        (display,) = [
            c
            for c in CredentialRepository(session).for_identity(identity_id)
            if c.kind.value == "code_display"
        ]
        assert (display.state, display.blocks) == (CredentialState.ACTIVE, 1)
    waiting = step(code_check, {"code": totp(SEED, clock.seconds())}).failure
    assert isinstance(waiting, TemporarilyBlocked)  # the right code waits too
    clock.now += TOKEN_BLOCK
    assert step(code_check, {"code": totp(SEED, clock.seconds())}).failure is None


def test_an_otp_check_takes_five_statements(
    world: tuple,  # type: ignore[type-arg]
    tmp_path: Path,
    engine: Engine,
) -> None:
    sessions, identity_id, box, clock = world
    with sessions() as session, session.begin():
        auth = service(session, clock, tmp_path)
        transaction_id = auth.begin("https://sp.example", Level.LOW).id
        auth.identify(transaction_id, identity_id)

    def verify() -> list[str]:
        statements: list[str] = []

        def record(*args: Any) -> None:
            words = str(args[2]).split()
            if words[0] not in ("BEGIN", "COMMIT"):
                statements.append(words[0])

        event.listen(engine, "before_cursor_execute", record)
        try:
            with sessions() as session, session.begin():
                log = AuditLog(session, clock.seconds)
                auth = AuthenticationService(
                    session,
                    signer=SigningKey.from_file(tmp_path / "signing.pem", create=True).signer(),
                    pseudonyms=Pseudonyms.from_file(tmp_path / "pseudonym.key", create=True),
                    issuer="https://idp.example",
                    clock=clock,
                    audit=lambda name, details: log.append(
                        name, actor="test", subject="-", details=details
                    ),
                )
                result = attempt_factor(
                    lambda: auth.verify_factor(
                        transaction_id,
                        otp_check(box, clock.seconds),
                        {"code": totp(SEED, clock.seconds())},
                        source="10.0.0.1",
                    )
                )
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert result.failure is None
        clock.now += dt.timedelta(seconds=30)  # the next code
        return statements

    # The transaction with its identity's status and its throttles, the active credentials,
    # the credential's new state, (the first time) the network remembered as the person's own
    # and the factor added to the transaction, the chain's head and the audit entry.
    first = ["SELECT", "SELECT", "UPDATE", "INSERT", "UPDATE", "SELECT", "INSERT"]
    assert verify() == first
    assert verify() == ["SELECT", "SELECT", "UPDATE", "SELECT", "INSERT"]
    with sessions() as session:
        assert verify_database(session) == 2
