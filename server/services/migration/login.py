"""Legacy login for service providers: begin (a provider) -> password (user id + password; the
answer is the key number to show, the same for anyone) -> code (the code for that key number, or
a code token's) -> a signed assertion marked ``legacy``.

The login is a ceremony row of kind ``legacy_login`` for the provider, in states of its own
(``legacy-begun``, ``legacy-code``, then ``completed``); the login gate refuses it as unknown.
Between the two steps the row keeps the ``PasswordStep`` (whether the password was right, the
key number shown) sealed in ``challenge`` under ``legacy-login:<transaction id>``. A failed
code sends the login back to the password step with a new key number; the lockout and
throttling rules end guessing.

The assertion's ``sub`` is the provider's pseudonym of the person's new identity once they have
migrated (so a provider sees one person before and after), else a pseudonym of the legacy user.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from server.domain.errors import recorded_failures
from server.domain.model import CeremonyKind, Level
from server.services.identities import AuditHook, no_audit
from server.services.login.errors import TransactionClosed, TransactionExpired, TransactionUnknown
from server.services.login.gate import COMPLETED
from server.services.migration.errors import LegacyError
from server.services.migration.legacy_proof import LegacyProof, Method, PasswordStep, legacy_subject
from server.services.migration.store import LegacyStore
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
from server.services.tokens_jwt import AssertionSigner
from server.storage.errors import NotFound
from server.storage.repositories import TransactionRepository
from server.storage.tables import AuthTransaction

BEGUN, CODE_PENDING = "legacy-begun", "legacy-code"
# The login's state machine, checked at import: a failed code goes back to the password step.
TRANSITIONS: Mapping[str, frozenset[str]] = {
    BEGUN: frozenset({CODE_PENDING}),
    CODE_PENDING: frozenset({BEGUN, COMPLETED}),
    COMPLETED: frozenset(),
}
assert set().union(*TRANSITIONS.values()) <= TRANSITIONS.keys()  # noqa: S101 - import-time check

LEVEL = "substantial"  # what a legacy login proves (password + one-time code)
AMR: Mapping[Method, tuple[str, ...]] = {
    Method.KEY_CARD: ("legacy_password", "legacy_key_card"),
    Method.CODE_TOKEN: ("legacy_password", "legacy_code_token"),
}
MAX_PROVIDER = 115  # the provider ids legacy login has always taken (its row once prefixed them)


class ProviderNameTooLong(LegacyError):
    code = "invalid-provider"
    default_detail = f"a provider id for legacy login has at most {MAX_PROVIDER} characters"


@dataclass(frozen=True)
class LegacyLogin:
    """A completed legacy login: the signed assertion and what the person is told."""

    transaction: AuthTransaction
    proof: LegacyProof
    assertion: str


class LegacyLoginService:
    def __init__(
        self,
        session: Session,
        store: LegacyStore,
        secrets_box: SecretBox,
        *,
        signer: AssertionSigner,
        pseudonyms: Pseudonyms,
        issuer: str,
        transaction_lifetime: dt.timedelta = dt.timedelta(minutes=10),
        assertion_lifetime: dt.timedelta = dt.timedelta(minutes=5),
        audit: AuditHook = no_audit,
    ) -> None:
        self._store = store
        self._box = secrets_box
        self._transactions = TransactionRepository(session)
        self._signer = signer
        self._pseudonyms = pseudonyms
        self._issuer = issuer
        self._transaction_lifetime = transaction_lifetime
        self._assertion_lifetime = assertion_lifetime
        self._audit = audit

    @recorded_failures(LegacyError)
    def begin(self, provider: str) -> AuthTransaction:
        """A legacy login for ``provider``; refused for new-only providers and after the
        shutdown date."""
        if len(provider) > MAX_PROVIDER:
            raise ProviderNameTooLong(f"provider id of {len(provider)} characters")
        try:
            self._store.check_provider(provider)
            self._store.require_open()
        except LegacyError as exc:
            self._audit("legacy.login.refused", {"provider": provider, "reason": exc.code})
            raise
        now = self._store.now()
        transaction = AuthTransaction(
            kind=CeremonyKind.LEGACY_LOGIN,
            service_provider=provider,
            min_level=Level.SUBSTANTIAL,
            state=BEGUN,
            factors=[],
            challenge=None,
            created_at=now,
            expires_at=now + self._transaction_lifetime,
        )
        self._transactions.add(transaction)
        self._audit(
            "legacy.login.begin", {"transaction": str(transaction.id), "provider": provider}
        )
        return transaction

    @recorded_failures(LegacyError)
    def password(
        self, transaction_id: uuid.UUID, user_id: str, password: str, *, source: str | None
    ) -> str:
        """Check the password and answer the key number to show. The answer has the same form
        whether or not the user exists or the password was right: that is told at the code."""
        transaction = self._open(transaction_id, BEGUN)
        try:
            self._store.check_provider(self._provider(transaction))
            step = self._store.check_password(user_id, password, source=source)
        except LegacyError as exc:
            self._audit(
                "legacy.login.refused", {"transaction": str(transaction.id), "reason": exc.code}
            )
            raise
        transaction.challenge = self._box.seal(step.to_bytes(), context=self._context(transaction))
        self._move(transaction, CODE_PENDING)
        # The outcome is recorded with the code step, where it is decided.
        self._audit("legacy.login.password", {"transaction": str(transaction.id)})
        assert step.index is not None  # noqa: S101 - check_password picks one when not given
        return step.index

    @recorded_failures(LegacyError)
    def code(
        self,
        transaction_id: uuid.UUID,
        code: str,
        *,
        method: Method = Method.KEY_CARD,
        source: str | None,
    ) -> LegacyLogin:
        """Check the code (once: success completes the login, a failure sends it back to the
        password step) and sign the assertion. Raises the store's errors after writing what a
        failure changed to the session; the caller commits, then answers."""
        transaction = self._open(transaction_id, CODE_PENDING)
        provider = self._provider(transaction)
        sealed, transaction.challenge = transaction.challenge, None
        step = PasswordStep.from_bytes(
            self._box.open(sealed or b"", context=self._context(transaction))
        )
        try:
            self._store.check_provider(provider)
            proof = self._store.complete_proof(
                step,
                code,
                method=method,
                source=source,
                context={"transaction": str(transaction.id), "provider": provider},
            )
        except LegacyError:
            self._move(transaction, BEGUN)
            raise
        transaction.identity_id = proof.user.identity_id
        transaction.factors = list(AMR[method])
        self._move(transaction, COMPLETED)
        return LegacyLogin(transaction, proof, self._sign(transaction, provider, proof))

    # --- the transaction ------------------------------------------------------------------------

    def _open(self, transaction_id: uuid.UUID, state: str) -> AuthTransaction:
        try:
            transaction = self._transactions.get(transaction_id)
        except NotFound:
            transaction = None
        if transaction is None or transaction.kind is not CeremonyKind.LEGACY_LOGIN:
            raise TransactionUnknown("no such legacy login", detail="unknown transaction")
        if transaction.state not in TRANSITIONS or not TRANSITIONS[transaction.state]:
            raise TransactionClosed("legacy login finished", detail="this login is finished")
        if self._store.now() >= transaction.expires_at:
            raise TransactionExpired("legacy login expired", detail="the login took too long")
        if transaction.state != state:
            detail = (
                "type the code for the key number shown"
                if transaction.state == CODE_PENDING
                else "enter user ID and password first"
            )
            raise TransactionClosed(f"legacy login is {transaction.state}", detail=detail)
        return transaction

    def _move(self, transaction: AuthTransaction, state: str) -> None:
        if state not in TRANSITIONS[transaction.state]:
            raise TransactionClosed(f"{transaction.state} -> {state}", detail="not now")
        transaction.state = state
        self._transactions.update(transaction)

    @staticmethod
    def _provider(transaction: AuthTransaction) -> str:
        return transaction.service_provider

    @staticmethod
    def _context(transaction: AuthTransaction) -> str:
        return f"legacy-login:{transaction.id}"

    def _sign(self, transaction: AuthTransaction, provider: str, proof: LegacyProof) -> str:
        user = proof.user
        subject = user.identity_id if user.identity_id is not None else legacy_subject(user.user_id)
        now = self._store.now()
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": str(self._pseudonyms.pseudonym(subject, provider)),
            "aud": provider,
            "iat": int(now.timestamp()),
            "exp": int((now + self._assertion_lifetime).timestamp()),
            "auth_time": int(now.timestamp()),
            "loa": LEVEL,
            "amr": list(AMR[proof.method]),
            "legacy": True,
            "txn": str(transaction.id),
            "name": user.name,
        }
        return self._signer.sign(claims)
