"""A login's binding to the browser that opened its pages, and the pairing code that lets a
program outside that browser (the smartcard's command) take a step: the right code admits it,
a wrong code or another browser's code does not, and a login no browser claimed is open to
any caller as before."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from devices.protocol.otp import totp
from server.domain.model import Level
from server.services.authentication import AuthenticationService
from server.services.factors import otp_check
from server.services.login.errors import LoginBoundElsewhere
from server.services.login.gate import normalise_pairing, pairing_code
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
from server.services.tokens_jwt import SigningKey
from tests.unit.server.people import SEED, Attempt, attempt_factor, seed_person_with_code_display

START = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)
BROWSER = hashlib.sha256(b"this browser").hexdigest()
OTHER_BROWSER = hashlib.sha256(b"another browser").hexdigest()


@dataclass
class World:
    sessions: sessionmaker[Session]
    identity_id: uuid.UUID
    box: SecretBox
    folder: Path
    now: dt.datetime = START

    def clock(self) -> dt.datetime:
        return self.now

    def service(self, session: Session) -> AuthenticationService:
        return AuthenticationService(
            session,
            signer=SigningKey.from_file(self.folder / "signing.pem", create=True).signer(),
            pseudonyms=Pseudonyms.from_file(self.folder / "pseudonym.key", create=True),
            issuer="https://idp.example",
            clock=self.clock,
        )

    def login(self, claimed_by: str | None) -> uuid.UUID:
        """An identified login, claimed by the browser ``claimed_by`` (None: by none)."""
        with self.sessions() as session, session.begin():
            service = self.service(session)
            transaction = service.begin("https://sp.example", Level.LOW)
            if claimed_by is not None:
                service.claim(transaction.id, claimed_by)
            service.identify(transaction.id, self.identity_id, binding=claimed_by)
            return transaction.id

    def code_step(
        self, transaction_id: uuid.UUID, *, binding: str | None = None, pairing: str | None = None
    ) -> Attempt:
        """A right code from the person's code display, sent by whoever shows ``binding`` or
        ``pairing`` (each a new time step, so no code is a replay of the one before)."""
        self.now += dt.timedelta(seconds=30)
        code = totp(SEED, self.now.timestamp())
        with self.sessions() as session, session.begin():
            check = otp_check(self.box, lambda: self.now.timestamp())
            service = self.service(session)
            return attempt_factor(
                lambda: service.verify_factor(
                    transaction_id,
                    check,
                    {"code": code},
                    source="10.0.0.1",
                    binding=binding,
                    pairing=pairing,
                )
            )


@pytest.fixture
def world(sessions: sessionmaker[Session], tmp_path: Path) -> World:
    box = SecretBox.from_file(tmp_path / "kek.bin", create=True)
    return World(sessions, seed_person_with_code_display(sessions, box), box, tmp_path)


# --- the code ---


def test_the_pairing_code_is_short_grouped_and_one_way() -> None:
    code = pairing_code(BROWSER)
    assert re.fullmatch(r"[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}", code), code
    assert pairing_code(BROWSER) == code  # the same browser, the same code on every page
    assert pairing_code(OTHER_BROWSER) != code
    assert normalise_pairing(code) not in BROWSER.upper()  # not a piece of the binding


def test_a_typed_code_ignores_case_dashes_spaces_and_look_alike_digits() -> None:
    assert normalise_pairing(" abcd-efgh ijkl ") == "ABCDEFGHIJKL"
    assert normalise_pairing("0OI1B8") == "OOIIBB"


# --- a login a browser claimed ---


def test_the_claiming_browser_goes_on(world: World) -> None:
    transaction = world.login(BROWSER)
    result = world.code_step(transaction, binding=BROWSER)
    assert result.failure is None
    assert result.factors == ["code_display"]


def test_a_step_without_the_binding_or_a_code_is_refused(world: World) -> None:
    transaction = world.login(BROWSER)
    with pytest.raises(LoginBoundElsewhere):
        world.code_step(transaction)
    with pytest.raises(LoginBoundElsewhere):
        world.code_step(transaction, binding=OTHER_BROWSER)


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param(lambda code: code, id="as shown"),
        pytest.param(lambda code: code.replace("-", "").lower(), id="lower case, no dashes"),
        pytest.param(lambda code: code.replace("-", " "), id="spaces"),
    ],
)
def test_the_right_pairing_code_admits_a_program(world: World, typed: Callable[[str], str]) -> None:
    transaction = world.login(BROWSER)
    shown = pairing_code(BROWSER)
    result = world.code_step(transaction, pairing=typed(shown))
    assert result.failure is None
    assert result.factors == ["code_display"]


def test_a_wrong_pairing_code_is_refused(world: World) -> None:
    transaction = world.login(BROWSER)
    right = normalise_pairing(pairing_code(BROWSER))
    wrong = ("B" if right[0] != "B" else "C") + right[1:]
    for code in (wrong, right[:-1], right + "A", "", "ÆØÅÆØÅÆØÅÆØÅ"):
        with pytest.raises(LoginBoundElsewhere):
            world.code_step(transaction, pairing=code)
    # Refused before any check: the login goes on with the right code afterwards.
    assert world.code_step(transaction, pairing=right).failure is None


def test_the_code_of_another_browsers_login_is_refused(world: World) -> None:
    mine = world.login(BROWSER)
    theirs = world.login(OTHER_BROWSER)
    with pytest.raises(LoginBoundElsewhere):
        world.code_step(mine, pairing=pairing_code(OTHER_BROWSER))
    with pytest.raises(LoginBoundElsewhere):
        world.code_step(theirs, pairing=pairing_code(BROWSER))
    assert world.code_step(theirs, pairing=pairing_code(OTHER_BROWSER)).failure is None


def test_admit_checks_the_same_way(world: World) -> None:
    """The step before a device's factor (its fresh challenge) is admitted alike."""
    transaction = world.login(BROWSER)
    with world.sessions() as session, session.begin():
        service = world.service(session)
        assert service.admit(transaction, binding=BROWSER).id == transaction
        assert service.admit(transaction, pairing=pairing_code(BROWSER)).id == transaction
        with pytest.raises(LoginBoundElsewhere):
            service.admit(transaction)
        with pytest.raises(LoginBoundElsewhere):
            service.admit(transaction, pairing=pairing_code(OTHER_BROWSER))


# --- a login no browser claimed ---


def test_an_unclaimed_login_is_unaffected_by_pairing(world: World) -> None:
    transaction = world.login(None)
    assert world.code_step(transaction).failure is None
    # Any code, or any binding, changes nothing: there is nothing to pair with.
    assert world.code_step(transaction, pairing="AAAA-AAAA-AAAA").failure is None
    assert world.code_step(transaction, binding=OTHER_BROWSER).failure is None
    with world.sessions() as session, session.begin():
        assert world.service(session).admit(transaction, pairing="nonsense").id == transaction
