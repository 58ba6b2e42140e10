"""Legacy key cards as credentials: issuing a printed card (its codes leave the service once, for
the print shop), activation with the code for a key number the service picks, and the key-card
login factor, with decoy key numbers for people who have no card so that the answers do not
tell who has an account.

Stored convention for a ``key_card`` credential: ``serial`` is the card's serial; the verifier's
digests (peppered HMACs, ``verifiers.keycard``) and the card's salt are sealed with the
``SecretBox`` in ``secret_ciphertext`` under ``credential:<id>``; ``public_data`` holds
``size``, ``code_digits``, ``used`` (the key numbers spent, sorted), ``remaining``,
``replacement_due`` and, while an activation is begun, ``activation_index``; ``failures`` is the
count of wrong codes in a row. The pepper lives in a file outside the database
(``KeyCardSecrets``).

A login keeps its pending key number on the transaction's ``challenge`` column as
``b"key-card:" + number`` (the FIDO2 factor keeps its challenge there too; beginning one
factor replaces the other's pending challenge). Every check consumes it, right or wrong.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import random
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from server.domain.errors import DomainError
from server.domain.model import AuthenticatorKind, CredentialKind, CredentialState, IdentityStatus
from server.services.credentials import CredentialService
from server.services.errors import KeyMaterialRejected, SecretUnreadable
from server.services.fido import NOBODY, decoy_subject, login_transaction
from server.services.identities import STOCK_IDENTITY_ID, AuditHook, no_audit
from server.services.lifecycle_errors import (
    ActivationCodeRejected,
    IdentityNotActive,
    IdentityNotFound,
    InvalidTransition,
    UnsupportedCredential,
)
from server.services.secretbox import SecretBox, read_private_file
from server.services.verifiers import (
    CardExhausted,
    CredentialBlocked,
    KeyCard,
    KeyCardState,
    VerificationFailed,
    WrongCode,
    challenge,
    verify_keycard,
)
from server.services.verifiers.keycard import CARD_SIZE, INDEX_DIGITS, LEGACY_CODE_DIGITS
from server.services.verifiers.otp import DEFAULT_MAX_FAILURES
from server.storage.repositories import CredentialRepository, TransactionRepository
from server.storage.tables import AuthTransaction, Credential, Identity

PEPPER_BYTES = 32
PENDING_PREFIX = b"key-card:"
_BLOB_VERSION = 1
_SALT_BYTES = 16
_DIGEST_BYTES = 32
_ENTRY_BYTES = INDEX_DIGITS + _DIGEST_BYTES


# --- errors -------------------------------------------------------------------------------


class KeyCardExhausted(DomainError):
    """Every code on the card is used: the holder needs the new card."""

    code = "card-exhausted"
    default_detail = "every code on this key card has been used; use your new key card"


class KeyCardBlocked(DomainError):
    """Too many wrong codes in a row blocked the card; it is replaced, never unblocked."""

    code = "credential-blocked"
    default_detail = "this key card is blocked after too many wrong codes; a new one is needed"


class ActivationNotBegun(DomainError):
    """A code was sent for an activation without a key number asked for first."""

    code = "conflict"
    default_detail = "ask for the key number first, then type the code printed beside it"


class KeyCardRejected(DomainError):
    """One answer for every refused key-card login; ``reason`` is for the audit log only."""

    code = "verification-failed"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, detail="the login did not succeed")
        self.reason = reason


# --- the pepper ---------------------------------------------------------------------------


class KeyCardSecrets:
    """The server's key-card pepper, read from an owner-only file outside the database, and the
    keys derived from it for decoy answers (one per purpose, so a decoy never reveals a digest).

    Derivation is HMAC-SHA-256 of ``"akkreditiv-derived-key|" + purpose`` under the pepper; a
    code digest's message starts with the card's 16 random salt bytes and then ``|``, and the
    label has no ``|`` at that position, so the two uses never share an input.
    """

    __slots__ = ("_pepper",)

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < PEPPER_BYTES:
            raise KeyMaterialRejected(f"a key-card pepper has at least {PEPPER_BYTES} bytes")
        self._pepper = pepper

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False) -> KeyCardSecrets:
        """The pepper in ``path`` (mode 0600); with ``create`` a random one is made if missing,
        as ``SecretBox.from_file`` makes the key-encryption key."""
        maker = (lambda: os.urandom(PEPPER_BYTES)) if create else None
        return cls(read_private_file(path, create=maker))

    @property
    def pepper(self) -> bytes:
        return self._pepper

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (such as ``"fido2-decoy"``)."""
        return hmac.digest(self._pepper, b"akkreditiv-derived-key|" + purpose.encode(), "sha256")

    def __repr__(self) -> str:
        return "KeyCardSecrets(pepper=<hidden>)"


# --- storage form -------------------------------------------------------------------------


def encode_digests(state: KeyCardState) -> bytes:
    """``version | code digits | salt (16) | count (2) | (index (4 ASCII) | digest (32))*``."""
    parts = [bytes((_BLOB_VERSION, state.code_digits)), state.salt, len(state.digests).to_bytes(2)]
    for index, digest in state.digests:
        parts.append(index.encode("ascii") + digest)
    return b"".join(parts)


def decode_digests(blob: bytes) -> tuple[int, bytes, tuple[tuple[str, bytes], ...]]:
    """The code digits, salt and digests of ``encode_digests``; ``SecretUnreadable`` if the
    blob is not one."""
    header = 2 + _SALT_BYTES + 2
    if len(blob) < header or blob[0] != _BLOB_VERSION:
        raise SecretUnreadable("key card digests: unknown format")
    count = int.from_bytes(blob[2 + _SALT_BYTES : header])
    if len(blob) != header + count * _ENTRY_BYTES:
        raise SecretUnreadable("key card digests: wrong length")
    digests = []
    for offset in range(header, len(blob), _ENTRY_BYTES):
        index = blob[offset : offset + INDEX_DIGITS]
        if not (index.isascii() and index.isdigit()):
            raise SecretUnreadable("key card digests: bad key number")
        digests.append((index.decode("ascii"), blob[offset + INDEX_DIGITS : offset + _ENTRY_BYTES]))
    return blob[1], blob[2 : 2 + _SALT_BYTES], tuple(digests)


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


def pending_index(challenge: bytes | None) -> str | None:
    """The key number a login waits for, if its pending challenge is a key card's."""
    if challenge is None or not challenge.startswith(PENDING_PREFIX):
        return None
    return challenge[len(PENDING_PREFIX) :].decode("ascii", "replace")


@dataclass(frozen=True)
class IssuedCard:
    """A card just issued: the credential, and the card with its codes, to print once."""

    credential: Credential
    card: KeyCard


# --- the service --------------------------------------------------------------------------


class KeyCardService:
    """Key-card issuance, activation and the login factor, in the caller's transaction."""

    def __init__(
        self,
        session: Session,
        box: SecretBox,
        credentials: CredentialService,
        keys: KeyCardSecrets,
        *,
        clock: Callable[[], float],
        audit: AuditHook = no_audit,
        rng: random.Random | None = None,
        code_digits: int = LEGACY_CODE_DIGITS,
        max_failures: int = DEFAULT_MAX_FAILURES,
    ) -> None:
        self._session = session
        self._box = box
        self._lifecycle = credentials
        self._repository = CredentialRepository(session)
        self._transactions = TransactionRepository(session)
        self._keys = keys
        self._decoy_key = keys.derive("key-card-decoy")
        self._clock = clock
        self._audit = audit
        self._rng = rng if rng is not None else secrets.SystemRandom()
        self._code_digits = code_digits
        self._max_failures = max_failures

    # --- issuance ---

    def issue(self, identity_id: uuid.UUID, *, label: str = "") -> IssuedCard:
        """A new card for the identity, shipped (mailed) at once. It fills an open key-card
        order (for example the one ``replace`` makes), else it is ordered here, within the
        kind's limit. The codes are in the answer only; the service keeps their digests."""
        self._active_identity(identity_id)
        ordered = [
            c
            for c in self._repository.for_identity(identity_id, {CredentialState.ORDERED})
            if c.kind is CredentialKind.KEY_CARD
        ]
        credential = (
            ordered[0] if ordered else self._lifecycle.order(identity_id, CredentialKind.KEY_CARD)
        )
        card = KeyCard.new(f"KC-{secrets.randbelow(10**10):010d}", code_digits=self._code_digits)
        state = card.state(self._keys.pepper)
        credential.serial = card.serial
        if label:
            credential.label = label
        credential.secret_ciphertext = self._box.seal(
            encode_digests(state), context=f"credential:{credential.id}"
        )
        credential.public_data = {
            **credential.public_data,
            "size": state.size,
            "code_digits": state.code_digits,
            "used": [],
            "remaining": state.remaining,
            "replacement_due": state.replacement_due,
        }
        self._lifecycle.transition(credential.id, CredentialState.SHIPPED)
        self._audit(
            "credential.issued",
            {
                "credential_id": str(credential.id),
                "identity_id": str(identity_id),
                "kind": CredentialKind.KEY_CARD.value,
                "serial": card.serial,
                "size": state.size,
                "digits": state.code_digits,
            },
        )
        return IssuedCard(credential, card)

    # --- activation ---

    def activation_begin(self, credential_id: uuid.UUID) -> str:
        """The key number whose code activates the card. A shipped card moves to activation
        pending; asking again before a code is tried answers the same number."""
        credential = self._card(credential_id)
        self._active_identity(credential.identity_id)
        if credential.state is CredentialState.SHIPPED:
            self._lifecycle.transition(credential.id, CredentialState.ACTIVATION_PENDING)
        elif credential.state is not CredentialState.ACTIVATION_PENDING:
            raise InvalidTransition(
                "credential", credential.state.value, CredentialState.ACTIVE.value
            )
        pending = credential.public_data.get("activation_index")
        if isinstance(pending, str):
            return pending
        index = self._challenge(self._state(credential))
        credential.public_data = {**credential.public_data, "activation_index": index}
        self._repository.update(credential)
        return index

    def activation_complete(self, credential_id: uuid.UUID, code: str) -> Credential:
        """Activate the card with the code for the key number of ``activation_begin``. Each
        try uses up that number's turn (ask for a new one after a wrong code); a wrong code is
        counted, and ``ActivationCodeRejected`` is raised after the count is updated on the
        credential: the caller commits before answering, so three wrong codes block the card."""
        credential = self._card(credential_id)
        if credential.state is not CredentialState.ACTIVATION_PENDING:
            raise InvalidTransition(
                "credential", credential.state.value, CredentialState.ACTIVE.value
            )
        self._active_identity(credential.identity_id)
        data = dict(credential.public_data)
        index = data.pop("activation_index", None)
        if not isinstance(index, str):
            raise ActivationNotBegun
        credential.public_data = data
        try:
            accepted = self._verify(credential, index, code)
        except VerificationFailed as exc:
            self._audit(
                "credential.activation_failed",
                {"credential_id": str(credential.id), "reason": exc.code},
            )
            detail = str(exc.detail)
            if isinstance(exc, WrongCode) and exc.attempts_left is not None:
                detail = f"{detail} {exc.attempts_left} attempt(s) left."
            raise ActivationCodeRejected(exc.code, detail) from None
        self._store(credential, accepted)
        return self._lifecycle.activate_proven(credential.id)

    # --- login ---

    def login_begin(self, transaction_id: uuid.UUID) -> str:
        """The key number to show in an identified login. Asking again before a code is tried
        answers the same number. A person who does not exist, or has no usable card, is shown a
        decoy number from a fixed decoy card of their own, and every code then fails as a wrong
        one does. Only once the login has proven another factor is an exhausted or blocked
        card said to be so: before that, it would tell who has an account."""
        transaction = login_transaction(self._session, transaction_id, self._now())
        pending = pending_index(transaction.challenge)
        if pending is not None:
            return pending
        index = self._login_index(transaction)
        transaction.challenge = PENDING_PREFIX + index.encode("ascii")
        self._transactions.update(transaction)
        return index

    def login_check(self, transaction_id: uuid.UUID) -> KeyCardCheck:
        """A ``FactorCheck`` for ``{"code": ...}`` against the key number of ``login_begin``."""
        return KeyCardCheck(self, transaction_id)

    def take_index(self, transaction_id: uuid.UUID) -> str | None:
        """The login's pending key number, cleared in the same step: one try per number."""
        transaction = login_transaction(self._session, transaction_id, self._now())
        index = pending_index(transaction.challenge)
        if transaction.challenge is not None:
            transaction.challenge = None
            self._transactions.update(transaction)
        return index

    def verify_login(self, transaction_id: uuid.UUID, identity_id: uuid.UUID, code: str) -> None:
        """Check the code for the login's pending key number (consumed whatever the outcome)
        against the identity's active card; raises ``KeyCardRejected`` for every failure,
        after saving what it changed (the failure count; a block)."""
        index = self.take_index(transaction_id)
        card = self.usable_card(identity_id)
        if index is None or card is None:
            self.decoy_work(code)
            raise KeyCardRejected("no-challenge" if index is None else "no-card")
        try:
            accepted = self._verify(card, index, code)
        except VerificationFailed as exc:
            raise KeyCardRejected(exc.code) from None
        self._store(card, accepted)

    def decoy_work(self, code: str) -> None:
        """The digest a real check computes, for a check that has no card to compare with."""
        hmac.digest(self._keys.pepper, b"decoy|" + code.encode("utf-8", "replace"), "sha256")

    # --- helpers ---

    def _login_index(self, transaction: AuthTransaction) -> str:
        identity_id = transaction.identity_id
        proven = bool(transaction.factors)
        card = self.usable_card(identity_id or NOBODY)  # looked up for nobody too: timing
        if identity_id is not None:
            if card is not None:
                try:
                    return challenge(self._state(card), self._rng, max_failures=self._max_failures)
                except CardExhausted:
                    if proven:
                        raise KeyCardExhausted from None
                except CredentialBlocked:
                    if proven:
                        raise KeyCardBlocked from None
            elif proven and self._cards(identity_id, {CredentialState.BLOCKED}):
                raise KeyCardBlocked
        return self._rng.choice(decoy_indexes(self._decoy_key, decoy_subject(transaction)))

    def _verify(self, credential: Credential, index: str, code: str) -> KeyCardState:
        """Run the verifier; on a failure save the state it carries (and block the card when
        it says so) before re-raising, so the caller's commit keeps the count."""
        try:
            return verify_keycard(
                self._state(credential),
                index,
                code,
                pepper=self._keys.pepper,
                max_failures=self._max_failures,
            )
        except VerificationFailed as exc:
            credential.failures = exc.state.failures
            self._repository.update(credential)
            if isinstance(exc, CredentialBlocked):
                self._lifecycle.transition(credential.id, CredentialState.BLOCKED)
            raise

    def _store(self, credential: Credential, state: KeyCardState) -> None:
        """Save an accepted code's state; flag the card for replacement when it reaches the
        replacement point, and say so in the audit log once."""
        was_due = bool(credential.public_data.get("replacement_due"))
        credential.public_data = {
            **credential.public_data,
            "used": sorted(state.used),
            "remaining": state.remaining,
            "replacement_due": state.replacement_due,
        }
        credential.failures = state.failures
        self._repository.update(credential)
        details: dict[str, Any] = {
            "credential_id": str(credential.id),
            "identity_id": str(credential.identity_id),
            "kind": CredentialKind.KEY_CARD.value,
            "remaining": state.remaining,
        }
        if state.replacement_due and not was_due:
            self._audit("credential.replacement_due", details)
        if state.remaining == 0:
            self._audit("credential.exhausted", details)

    def _challenge(self, state: KeyCardState) -> str:
        try:
            return challenge(state, self._rng, max_failures=self._max_failures)
        except CardExhausted:
            raise KeyCardExhausted from None
        except CredentialBlocked:
            raise KeyCardBlocked from None

    def _state(self, credential: Credential) -> KeyCardState:
        blob = self._box.open(
            credential.secret_ciphertext or b"", context=f"credential:{credential.id}"
        )
        code_digits, salt, digests = decode_digests(blob)
        return KeyCardState(
            serial=credential.serial or "",
            salt=salt,
            digests=digests,
            code_digits=code_digits,
            used=frozenset(str(index) for index in credential.public_data.get("used", [])),
            failures=credential.failures,
        )

    def _card(self, credential_id: uuid.UUID) -> Credential:
        credential = self._lifecycle.get(credential_id)
        if credential.kind is not CredentialKind.KEY_CARD:
            raise UnsupportedCredential("this credential is not a key card")
        if credential.secret_ciphertext is None:
            raise InvalidTransition(
                "credential",
                credential.state.value,
                CredentialState.ACTIVE.value,
                reason="no card has been issued for this order",
            )
        return credential

    def _cards(self, identity_id: uuid.UUID, states: set[CredentialState]) -> list[Credential]:
        return [
            c
            for c in self._repository.for_identity(identity_id, states)
            if c.kind is CredentialKind.KEY_CARD
        ]

    def usable_card(self, identity_id: uuid.UUID) -> Credential | None:
        """The identity's active key card, if it has one."""
        cards = self._cards(identity_id, {CredentialState.ACTIVE})
        return cards[0] if cards else None

    def _active_identity(self, identity_id: uuid.UUID) -> Identity:
        identity = (
            None if identity_id == STOCK_IDENTITY_ID else self._session.get(Identity, identity_id)
        )
        if identity is None:
            raise IdentityNotFound
        if identity.status is not IdentityStatus.ACTIVE:
            raise IdentityNotActive
        return identity

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)


class KeyCardCheck:
    """The key-card login factor of one transaction: a ``FactorCheck`` whose ``on_unknown``
    consumes the pending key number and computes a digest for a person who does not exist, as
    the real check does."""

    def __init__(self, service: KeyCardService, transaction_id: uuid.UUID) -> None:
        self._service = service
        self._transaction_id = transaction_id

    def __call__(
        self, session: Session, identity_id: uuid.UUID, submitted: dict[str, Any]
    ) -> AuthenticatorKind:
        self._service.verify_login(self._transaction_id, identity_id, str(submitted["code"]))
        return AuthenticatorKind.KEY_CARD

    def on_unknown(self, submitted: dict[str, Any]) -> None:
        self._service.take_index(self._transaction_id)
        self._service.usable_card(NOBODY)  # the lookup a real check makes
        self._service.decoy_work(str(submitted.get("code", "")))
