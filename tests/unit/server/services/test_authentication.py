"""Authentication transactions on SQLite and PostgreSQL: factors, assurance, step-up, limits,
and the signed assertion."""

from __future__ import annotations

import datetime as dt
import itertools
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
from server.services.authentication import (
    ACCOUNT_LOCKOUT,
    ACCOUNT_MAX_FAILURES,
    SOURCE_MAX_FAILURES,
    AuthenticationService,
)
from server.services.credentials import CredentialService
from server.services.factors import PasswordCheck, otp_check
from server.services.login.errors import StepUpRequired, Throttled, TransactionExpired
from server.services.passwords import Passwords
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
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


def test_three_wrong_codes_block_the_code_display_and_it_is_saved(
    world: tuple, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    sessions, identity_id, _, clock = world
    for _ in range(3):
        _, result = login(world, tmp_path, "000000")
        assert result.failure is not None
        assert result.failure.code == "verification-failed"
    with sessions() as session:
        (credential,) = CredentialRepository(session).for_identity(identity_id)
        assert credential.state is CredentialState.BLOCKED
    assert login(world, tmp_path, totp(SEED, clock.seconds()))[1].failure is not None


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
    _, _, _, clock = world
    for _ in range(SOURCE_MAX_FAILURES):
        login(world, tmp_path, "000000", source="192.0.2.66")
    with pytest.raises(Throttled):
        login(world, tmp_path, "000000", source="192.0.2.66")
    clock.now += dt.timedelta(seconds=31)
    # The person's own code display is blocked by now (3 wrong codes), but another source is
    # still heard: the answer is a verification failure, not throttling.
    assert login(world, tmp_path, "000000", source="198.51.100.7")[1].failure is not None


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


def test_a_locked_account_answers_as_a_person_who_does_not_exist(
    world: tuple,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    sessions, identity_id, box, clock = world
    passwords = Passwords(FAST_ARGON2)
    with sessions.begin() as session:
        CredentialService(session, box, passwords, clock=clock.seconds).set_password(
            identity_id, PASSWORD
        )
    check = PasswordCheck(
        box, passwords, clock.seconds, decoy_hash=PasswordCheck.make_decoy(passwords)
    )
    sources = (f"10.9.{n // 10}.{n % 10}" for n in itertools.count())  # under each source's limit

    def attempt(who: uuid.UUID | None, password: str) -> Attempt:
        with sessions() as session, session.begin():
            auth = service(session, clock, tmp_path)
            transaction = auth.begin("https://sp.example", Level.LOW)
            auth.identify(transaction.id, who)
            return attempt_factor(
                lambda: auth.verify_factor(
                    transaction.id, check, {"password": password}, source=next(sources)
                )
            )

    # 99 failures in a row, then a success ends the run: the account never locks.
    for _ in range(ACCOUNT_MAX_FAILURES - 1):
        assert attempt(identity_id, "a wrong passphrase").failure is not None
    assert attempt(identity_id, PASSWORD).failure is None
    # 100 in a row lock it: the right password then fails, just as for nobody at all.
    for _ in range(ACCOUNT_MAX_FAILURES):
        assert attempt(identity_id, "a wrong passphrase").failure is not None
    locked, unknown = attempt(identity_id, PASSWORD), attempt(None, PASSWORD)
    assert locked.failure is not None
    assert unknown.failure is not None
    assert (locked.failure.code, locked.failure.detail) == (
        unknown.failure.code,
        unknown.failure.detail,
    )
    # Tries while locked do not extend the lock: it ends a day after the 100th failure.
    clock.now += ACCOUNT_LOCKOUT / 2
    assert attempt(identity_id, PASSWORD).failure is not None
    clock.now += ACCOUNT_LOCKOUT / 2 + dt.timedelta(seconds=1)
    assert attempt(identity_id, PASSWORD).failure is None


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

    # The transaction with its identity's status and both rate limits, the active
    # credentials, the credential's new state, (the first time) the factor added to the
    # transaction, the chain's head and the audit entry.
    assert verify() == ["SELECT", "SELECT", "UPDATE", "UPDATE", "SELECT", "INSERT"]
    assert verify() == ["SELECT", "SELECT", "UPDATE", "SELECT", "INSERT"]
    with sessions() as session:
        assert verify_database(session) == 2
