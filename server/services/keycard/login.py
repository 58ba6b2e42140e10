"""The key-card login factor, with decoy key numbers for people who have no card so that the
answers do not tell who has an account."""

from __future__ import annotations

import datetime as dt
import hmac
import math
import random
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from server.domain.errors import FactorRejected
from server.domain.model import AuthenticatorKind, CredentialKind, CredentialState
from server.services.keycard.cards import KeyCardBlocked, KeyCardExhausted, KeyCards
from server.services.keycard.pepper import KeyCardSecrets
from server.services.login.decoys import NOBODY, decoy_subject
from server.services.login.errors import TemporarilyBlocked
from server.services.login.gate import LoginTransactions
from server.services.login.record import Proof, proofs
from server.services.verifiers import (
    CardExhausted,
    CredentialBlocked,
    VerificationFailed,
    challenge,
)
from server.services.verifiers.keycard import CARD_SIZE, INDEX_DIGITS
from server.storage.tables import AuthTransaction


class KeyCardRejected(FactorRejected):
    """One answer for every refused key-card login; ``reason`` is for the audit log only."""


def decoy_indexes(decoy_key: bytes, subject: bytes, size: int = CARD_SIZE) -> list[str]:
    """The key numbers of a card that does not exist: ``size`` distinct 4-digit numbers drawn
    uniformly, as a real card's are, the same for the same ``subject`` (so a person without a
    card is shown numbers from one fixed set of 148, as the holder of a card is)."""
    found: dict[str, None] = {}
    block = 0
    while len(found) < size:
        stream = hmac.digest(decoy_key, b"key-card-decoy|%d|%s" % (block, subject), "sha256")
        for offset in range(0, len(stream), 2):
            value = int.from_bytes(stream[offset : offset + 2])
            if value < 60000:  # 6 * 10**4 of the 65,536 values: uniform modulo 10**4
                found.setdefault(str(value % 10**INDEX_DIGITS).zfill(INDEX_DIGITS), None)
            if len(found) == size:
                break
        block += 1
    return list(found)


class KeyCardLogin:
    """The key-card login factor, in the caller's transaction.

    A login keeps its pending key number as what it waits for (the login gate's ``Pending``:
    beginning another factor replaces it, as it replaces theirs). Every check spends it, right
    or wrong.
    """

    def __init__(
        self,
        session: Session,
        cards: KeyCards,
        keys: KeyCardSecrets,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        max_failures: int,
    ) -> None:
        self._session = session
        self._cards = cards
        self._keys = keys
        self._decoy_key = keys.derive("key-card-decoy")
        self._clock = clock
        self._rng = rng
        self._max_failures = max_failures

    def login_begin(self, transaction_id: uuid.UUID) -> str:
        """The key number to show in an identified login. Asking again before a code is tried
        answers the same number. A person who does not exist, or has no usable card, is shown a
        decoy number from a fixed decoy card of their own, and every code then fails as a wrong
        one does. Only once the login has proven another factor is an exhausted or blocked
        card said to be so: before that, it would tell who has an account."""
        logins = LoginTransactions(self._session, self._now)
        transaction = logins.identified(transaction_id)
        pending = logins.pending(transaction, CredentialKind.KEY_CARD)
        if pending is not None:
            return str(pending.state["index"])
        index = self._login_index(transaction)
        logins.set_pending(transaction, CredentialKind.KEY_CARD, state={"index": index})
        return index

    def login_check(self, transaction_id: uuid.UUID) -> KeyCardCheck:
        """A ``FactorCheck`` for ``{"code": ...}`` against the key number of ``login_begin``."""
        return KeyCardCheck(self, transaction_id)

    def take_index(self, transaction_id: uuid.UUID) -> str | None:
        """The login's pending key number, cleared in the same step: one try per number."""
        logins = LoginTransactions(self._session, self._now)
        pending = logins.take_pending(logins.identified(transaction_id), CredentialKind.KEY_CARD)
        return None if pending is None else str(pending.state["index"])

    def verify_login(
        self,
        transaction_id: uuid.UUID,
        identity_id: uuid.UUID,
        code: str,
        proven: frozenset[uuid.UUID] = frozenset(),
    ) -> Proof:
        """Check the code for the login's pending key number (consumed whatever the outcome)
        against the identity's active card: what it proved, or ``KeyCardRejected`` for every
        failure, after saving what it changed (the failure count; a block for a while, when
        the login proved another factor: ``proven``). A card blocked for a while is not
        tried: a login that proved another factor is told how long to wait."""
        index = self.take_index(transaction_id)
        card = self._cards.usable_card(identity_id)
        if index is None or card is None:
            self.decoy_work(code)
            raise KeyCardRejected("no-challenge" if index is None else "no-card")
        counted = bool(proven - {card.id})
        now = self._now()
        if card.blocked_until is not None and card.blocked_until > now:
            self.decoy_work(code)
            if counted:
                wait = math.ceil((card.blocked_until - now).total_seconds())
                raise TemporarilyBlocked.after(wait)
            raise KeyCardRejected("temporarily-blocked")
        try:
            accepted = self._cards.login_verify(card, index, code, counted=counted, now=now)
        except VerificationFailed as exc:
            if counted and card.blocked_until is not None and card.blocked_until > now:
                wait = math.ceil((card.blocked_until - now).total_seconds())
                raise TemporarilyBlocked.after(wait) from None
            raise KeyCardRejected(exc.code) from None
        self._cards.store(card, accepted)
        return Proof(AuthenticatorKind.KEY_CARD, card.id)

    def refuse_unknown(self, transaction_id: uuid.UUID, code: str) -> None:
        """The work of a check for a person who does not exist: the pending key number is
        consumed, and the card lookup and digest a real check makes are made."""
        self.take_index(transaction_id)
        self._cards.usable_card(NOBODY)
        self.decoy_work(code)

    def decoy_work(self, code: str) -> None:
        """The digest a real check computes, for a check that has no card to compare with."""
        hmac.digest(self._keys.pepper, b"decoy|" + code.encode("utf-8", "replace"), "sha256")

    def _login_index(self, transaction: AuthTransaction) -> str:
        identity_id = transaction.identity_id
        proven = bool(proofs(transaction.factors))
        card = self._cards.usable_card(identity_id or NOBODY)  # looked up for nobody too: timing
        if identity_id is not None:
            now = self._now()
            if card is not None and card.blocked_until is not None and card.blocked_until > now:
                if proven:
                    wait = math.ceil((card.blocked_until - now).total_seconds())
                    raise TemporarilyBlocked.after(wait)
            elif card is not None:
                try:
                    return challenge(
                        self._cards.state(card), self._rng, max_failures=self._max_failures
                    )
                except CardExhausted:
                    if proven:
                        raise KeyCardExhausted from None
                except CredentialBlocked:
                    if proven:
                        raise KeyCardBlocked from None
            elif proven and self._cards.of_identity(identity_id, {CredentialState.BLOCKED}):
                raise KeyCardBlocked
        return self._rng.choice(decoy_indexes(self._decoy_key, decoy_subject(transaction)))

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)


class KeyCardCheck:
    """The key-card login factor of one transaction: a ``FactorCheck`` whose ``on_unknown``
    consumes the pending key number and computes a digest for a person who does not exist, as
    the real check does."""

    def __init__(self, login: KeyCardLogin, transaction_id: uuid.UUID) -> None:
        self._login = login
        self._transaction_id = transaction_id

    def __call__(
        self,
        session: Session,
        identity_id: uuid.UUID,
        submitted: dict[str, Any],
        proven: frozenset[uuid.UUID] = frozenset(),
    ) -> Proof:
        return self._login.verify_login(
            self._transaction_id, identity_id, str(submitted["code"]), proven
        )

    def on_unknown(self, submitted: dict[str, Any]) -> None:
        self._login.refuse_unknown(self._transaction_id, str(submitted.get("code", "")))
