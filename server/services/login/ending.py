"""How a login ends before its level is reached, as its pages need it: the person cancels it
(the login is closed and the cancellation audited), or it ran out of time, or the browser
that opened it lost its session; and what the pages may still say of it then (whom it was
for, where the person goes back to), which ``LoginTrace`` holds."""

from __future__ import annotations

import datetime as dt
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from server.domain.model import CeremonyKind, Level
from server.services.login.errors import TransactionClosed, TransactionUnknown
from server.services.login.gate import COMPLETED, FAILED, TRANSITIONS, LoginTransactions
from server.storage.errors import NotFound
from server.storage.repositories import TransactionRepository
from server.storage.tables import AuthTransaction


@dataclass(frozen=True)
class LoginTrace:
    """What may be said of a login whatever its state: the provider, the level it asked
    for, where the browser goes back to, whether it is finished (completed, failed or
    cancelled) or expired, and which browser opened it (``claimed_by``)."""

    transaction_id: uuid.UUID
    provider: str
    level: Level
    return_url: str | None
    completed: bool
    finished: bool
    expired: bool
    _binding: str | None

    def claimed_by(self, binding: str | None) -> bool:
        """Whether the browser of ``binding`` opened this login's pages."""
        if self._binding is None or binding is None:
            return False
        return hmac.compare_digest(self._binding.encode(), binding.encode())

    @property
    def claimed(self) -> bool:
        return self._binding is not None


class LoginEnding:
    """Cancelling a login, and reading one that ended, in the caller's transaction."""

    def __init__(
        self,
        session: Session,
        clock: Callable[[], dt.datetime],
        audit: Callable[[str, dict[str, Any]], None] = lambda event, details: None,
    ) -> None:
        self._transactions = TransactionRepository(session)
        self._logins = LoginTransactions(session, clock)
        self._clock = clock
        self._audit = audit

    def cancel(self, transaction_id: uuid.UUID, binding: str | None) -> AuthTransaction:
        """The person gives up the open login ``transaction_id`` (from the browser that
        opened it): it is closed, so no factor and no ``complete`` goes on with it."""
        transaction = self._logins.open(transaction_id)
        self._logins.check_bound(transaction, binding)
        if FAILED not in TRANSITIONS[transaction.state]:  # pragma: no cover - open() refuses
            raise TransactionClosed("transaction closed", detail="this login is finished")
        transaction.state = FAILED
        transaction.challenge, transaction.ceremony_state = None, None
        self._transactions.update(transaction)
        self._audit(
            "authentication.cancelled",
            {"transaction": str(transaction.id), "provider": transaction.service_provider},
        )
        return transaction

    def trace(self, transaction_id: uuid.UUID) -> LoginTrace:
        """What the pages may say of the login ``transaction_id`` in any state."""
        try:
            transaction = self._transactions.get(transaction_id)
        except NotFound as exc:
            raise TransactionUnknown("no such transaction", detail="unknown transaction") from exc
        if transaction.kind is not CeremonyKind.LOGIN:
            raise TransactionUnknown("not a login transaction", detail="unknown transaction")
        return LoginTrace(
            transaction_id=transaction.id,
            provider=transaction.service_provider,
            level=transaction.min_level,
            return_url=transaction.return_url,
            completed=transaction.state == COMPLETED,
            finished=transaction.state in (COMPLETED, FAILED),
            expired=self._clock() >= transaction.expires_at,
            _binding=transaction.browser_binding,
        )
