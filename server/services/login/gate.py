"""The login gate: the one place that decides whether a step of a login may run (the row is a
login, open, not expired, identified where the step needs it, and taken from the browser that
claimed it or a program paired with it), and the one place a login's challenge is spent."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from server.domain.model import CeremonyKind, CredentialKind
from server.services.login.errors import (
    LoginBoundElsewhere,
    TransactionClosed,
    TransactionExpired,
    TransactionUnknown,
)
from server.storage.errors import NotFound
from server.storage.repositories import TransactionRepository
from server.storage.tables import AuthTransaction

# A login's state machine, checked below at import.
STARTED, IDENTIFIED, COMPLETED, FAILED = "started", "identified", "completed", "failed"
TRANSITIONS: dict[str, frozenset[str]] = {
    STARTED: frozenset({IDENTIFIED, FAILED}),
    IDENTIFIED: frozenset({IDENTIFIED, COMPLETED, FAILED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
}
assert set().union(*TRANSITIONS.values()) <= TRANSITIONS.keys()  # noqa: S101 - import-time check
# A registration or an enrolment still to be answered (then ``COMPLETED`` or ``FAILED``).
OPEN = "open"

# The pairing code that lets a program outside the browser (the smartcard's command) go on
# with a login a browser claimed: 12 characters of base32, 60 bits, typeable and one-way.
PAIRING_DOMAIN = b"akkreditiv-device-pairing\x00"
PAIRING_LENGTH = 12
PAIRING_GROUP = 4
# Characters people confuse with base32 letters when they type a code they read.
_TYPED_AS = str.maketrans({"0": "O", "1": "I", "8": "B"})


def pairing_code(binding: str) -> str:
    """The code that pairs a device program with the browser of ``binding``: shown on the
    login's pages (to that browser alone) and given to the program, which sends it with its
    steps. Derived one way, so the code does not reveal the binding (nor the browser's
    cookie behind it). Grouped for reading, e.g. ``ABCD-EFGH-JKLM``."""
    return readable_code(hashlib.sha256(PAIRING_DOMAIN + binding.encode("utf-8")).digest())


def readable_code(digest: bytes) -> str:
    """A code people read and type, from a digest: its first base32 letters, in groups
    (``ABCD-EFGH-JKLM``); ``normalise_pairing`` reads it back."""
    code = base64.b32encode(digest).decode("ascii")[:PAIRING_LENGTH]
    return "-".join(
        code[start : start + PAIRING_GROUP] for start in range(0, PAIRING_LENGTH, PAIRING_GROUP)
    )


def normalise_pairing(typed: str) -> str:
    """A typed pairing code as compared: any case, dashes and spaces ignored, and the digits
    people type for look-alike letters (0, 1, 8 for O, I, B) read as those letters."""
    return "".join(typed.split()).replace("-", "").upper().translate(_TYPED_AS)


@dataclass(frozen=True)
class Pending:
    """The one challenge a login waits for an answer to: which factor's, its bytes, and the
    state its library keeps between the steps (python-fido2's), as the library gave it."""

    factor: CredentialKind
    challenge: bytes | None
    state: dict[str, Any]


class LoginTransactions:
    """The logins of one session, as every step of a login sees them."""

    def __init__(self, session: Session, clock: Callable[[], dt.datetime]) -> None:
        self._transactions = TransactionRepository(session)
        self._clock = clock

    def open(self, transaction_id: uuid.UUID) -> AuthTransaction:
        """The login ``transaction_id``, if a step may still run on it."""
        try:
            transaction = self._transactions.get(transaction_id)
        except NotFound as exc:
            raise TransactionUnknown("no such transaction", detail="unknown transaction") from exc
        return self.usable(transaction)

    def usable(self, transaction: AuthTransaction) -> AuthTransaction:
        """``transaction`` if it is a login that is neither finished nor expired."""
        if transaction.kind is not CeremonyKind.LOGIN:
            # Another ceremony's row (a FIDO2 registration, a PIV enrolment): not a login.
            raise TransactionUnknown("not a login transaction", detail="unknown transaction")
        if transaction.state in (COMPLETED, FAILED):
            raise TransactionClosed("transaction closed", detail="this login is finished")
        if self._clock() >= transaction.expires_at:
            raise TransactionExpired("transaction expired", detail="the login took too long")
        return transaction

    def identified(self, transaction_id: uuid.UUID) -> AuthTransaction:
        """The open login ``transaction_id`` once it knows who logs in (a factor's step)."""
        return self.require_identified(self.open(transaction_id))

    @staticmethod
    def require_identified(transaction: AuthTransaction) -> AuthTransaction:
        if transaction.state != IDENTIFIED:
            raise TransactionClosed("not identified", detail="say who is logging in first")
        return transaction

    @staticmethod
    def check_bound(
        transaction: AuthTransaction, binding: str | None, pairing: str | None = None
    ) -> None:
        """Refuse a step from anyone but the browser that claimed the login (the API's
        clients included: a login whose pages a browser opened is that browser's alone), or
        a program that browser paired with: one showing the pairing code of its binding."""
        claimed = transaction.browser_binding
        if claimed is None:
            return
        if binding is not None and hmac.compare_digest(claimed.encode(), binding.encode()):
            return
        if pairing is not None:
            expected = pairing_code(claimed).replace("-", "").encode()
            if hmac.compare_digest(expected, normalise_pairing(pairing).encode("utf-8")):
                return
        raise LoginBoundElsewhere(
            "login claimed by another browser",
            detail="this login was started in another browser; start again there, or give "
            "the program the pairing code that browser's page shows",
        )

    def set_pending(
        self,
        transaction: AuthTransaction,
        factor: CredentialKind,
        *,
        challenge: bytes | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """What the login now waits for: one factor's challenge (and the state its library
        keeps between the steps), replacing whatever it waited for before."""
        transaction.challenge = challenge
        transaction.ceremony_state = {"factor": factor.value, "state": dict(state or {})}
        self._transactions.update(transaction)

    @staticmethod
    def pending(transaction: AuthTransaction, factor: CredentialKind) -> Pending | None:
        """What the login waits for, if it waits for ``factor`` (not spent)."""
        kept = transaction.ceremony_state
        if not kept or kept.get("factor") != factor.value:
            return None
        return Pending(factor, transaction.challenge, dict(kept.get("state") or {}))

    def take_pending(self, transaction: AuthTransaction, factor: CredentialKind) -> Pending | None:
        """What the login waits for, if it waits for ``factor``, spent: whatever the answer,
        it is not accepted again (nor is another factor's challenge it replaced)."""
        found = self.pending(transaction, factor)
        if transaction.challenge is not None or transaction.ceremony_state is not None:
            transaction.challenge, transaction.ceremony_state = None, None
            self._transactions.update(transaction)
        return found
