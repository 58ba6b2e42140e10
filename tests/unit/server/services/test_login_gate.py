"""The login gate: only a login's row is a login, and a login waits for one challenge at a
time, of one factor, spent by the first answer whichever factor it came for."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy.orm import Session, sessionmaker

from server.domain.model import CeremonyKind, CredentialKind, Level
from server.services.login.errors import TransactionClosed, TransactionExpired, TransactionUnknown
from server.services.login.gate import IDENTIFIED, OPEN, LoginTransactions
from server.storage.tables import AuthTransaction

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _row(session: Session, kind: CeremonyKind, state: str = IDENTIFIED) -> uuid.UUID:
    row = AuthTransaction(
        kind=kind,
        service_provider="https://sp.example" if kind is CeremonyKind.LOGIN else "",
        min_level=Level.LOW,
        state=state,
        factors=[],
        created_at=NOW,
        expires_at=NOW + dt.timedelta(minutes=10),
    )
    session.add(row)
    session.flush()
    return row.id


@pytest.mark.parametrize(
    "kind",
    [CeremonyKind.LEGACY_LOGIN, CeremonyKind.FIDO_REGISTRATION, CeremonyKind.PIV_ENROLMENT],
)
def test_no_other_ceremony_is_taken_for_a_login(
    sessions: sessionmaker[Session], kind: CeremonyKind
) -> None:
    with sessions.begin() as session:
        other = _row(session, kind, state=OPEN)
        login = _row(session, CeremonyKind.LOGIN)
        gate = LoginTransactions(session, lambda: NOW)
        with pytest.raises(TransactionUnknown):
            gate.open(other)
        assert gate.identified(login).id == login


def test_a_login_past_its_time_or_finished_or_unidentified_takes_no_step(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        started = _row(session, CeremonyKind.LOGIN, state="started")
        finished = _row(session, CeremonyKind.LOGIN, state="completed")
        gate = LoginTransactions(session, lambda: NOW)
        with pytest.raises(TransactionClosed):
            gate.identified(started)
        with pytest.raises(TransactionClosed):
            gate.open(finished)
        late = LoginTransactions(session, lambda: NOW + dt.timedelta(minutes=10))
        with pytest.raises(TransactionExpired):
            late.open(started)


def test_a_login_waits_for_one_factor_and_the_first_answer_spends_it(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        gate = LoginTransactions(session, lambda: NOW)
        login = gate.identified(_row(session, CeremonyKind.LOGIN))
        gate.set_pending(login, CredentialKind.KEY_CARD, state={"index": "042"})
        assert gate.pending(login, CredentialKind.FIDO2) is None
        # A FIDO2 answer to a key card's challenge is refused, and spends it all the same.
        assert gate.take_pending(login, CredentialKind.FIDO2) is None
        assert gate.pending(login, CredentialKind.KEY_CARD) is None

        gate.set_pending(login, CredentialKind.PIV, challenge=b"\x01" * 32)
        gate.set_pending(login, CredentialKind.FIDO2, challenge=b"\x02" * 32, state={"a": 1})
        assert gate.take_pending(login, CredentialKind.PIV) is None  # replaced by FIDO2's
        assert login.challenge is None


def test_what_a_login_waits_for_survives_the_transaction(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        gate = LoginTransactions(session, lambda: NOW)
        login_id = _row(session, CeremonyKind.LOGIN)
        gate.set_pending(
            gate.identified(login_id), CredentialKind.FIDO2, challenge=b"c" * 32, state={"x": "y"}
        )
    with sessions.begin() as session:
        gate = LoginTransactions(session, lambda: NOW)
        pending = gate.take_pending(gate.identified(login_id), CredentialKind.FIDO2)
        assert pending is not None
        assert (pending.challenge, pending.state) == (b"c" * 32, {"x": "y"})
    with sessions.begin() as session:
        gate = LoginTransactions(session, lambda: NOW)
        assert gate.take_pending(gate.identified(login_id), CredentialKind.FIDO2) is None
