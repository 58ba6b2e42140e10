"""The stored key card: how a ``key_card`` credential holds its card, and reading, checking and
saving that card's state."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.orm import Session

from server.domain.errors import ConflictingState
from server.domain.model import CredentialKind, CredentialState
from server.services.credentials import CredentialService
from server.services.credentials.sealing import secret_context
from server.services.errors import SecretUnreadable
from server.services.identities import AuditHook, no_audit
from server.services.keycard.pepper import KeyCardSecrets
from server.services.lifecycle_errors import InvalidTransition, UnsupportedCredential
from server.services.secretbox import SecretBox
from server.services.throttles import block_length
from server.services.verifiers import (
    CredentialBlocked,
    KeyCardState,
    VerificationFailed,
    verify_keycard,
)
from server.services.verifiers.keycard import INDEX_DIGITS
from server.storage.repositories import CredentialRepository
from server.storage.tables import Credential

_BLOB_VERSION = 1
_SALT_BYTES = 16
_DIGEST_BYTES = 32
_ENTRY_BYTES = INDEX_DIGITS + _DIGEST_BYTES


class KeyCardExhausted(ConflictingState):
    """Every code on the card is used: the holder needs the new card."""

    code = "card-exhausted"
    default_detail = "every code on this key card has been used; use your new key card"


class KeyCardBlocked(ConflictingState):
    """Too many wrong codes in a row blocked the card; it is replaced, never unblocked."""

    code = "credential-blocked"
    default_detail = "this key card is blocked after too many wrong codes; a new one is needed"


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


class KeyCards:
    """The key-card credentials, in the caller's transaction: finding a card, opening its
    state, and checking a code against it (saving what the check changed).

    ``serial`` is the card's serial; the verifier's digests (peppered HMACs,
    ``verifiers.keycard``) and the card's salt are sealed in ``secret_ciphertext`` (see
    ``encode_digests``); ``public_data`` holds ``size``, ``code_digits``, ``used`` (the key
    numbers spent, sorted), ``remaining``, ``replacement_due`` and, while an activation is
    begun, ``activation_index``; ``failures`` is the count of wrong codes in a row.
    """

    def __init__(
        self,
        session: Session,
        box: SecretBox,
        credentials: CredentialService,
        keys: KeyCardSecrets,
        *,
        audit: AuditHook = no_audit,
        max_failures: int,
    ) -> None:
        self._box = box
        self._lifecycle = credentials
        self._repository = CredentialRepository(session)
        self._keys = keys
        self._audit = audit
        self._max_failures = max_failures

    def card(self, credential_id: uuid.UUID) -> Credential:
        """The key card ``credential_id``, which must have been issued (not just ordered)."""
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

    def of_identity(self, identity_id: uuid.UUID, states: set[CredentialState]) -> list[Credential]:
        return [
            c
            for c in self._repository.for_identity(identity_id, states)
            if c.kind is CredentialKind.KEY_CARD
        ]

    def usable_card(self, identity_id: uuid.UUID) -> Credential | None:
        """The identity's active key card, if it has one."""
        cards = self.of_identity(identity_id, {CredentialState.ACTIVE})
        return cards[0] if cards else None

    def state(self, credential: Credential) -> KeyCardState:
        blob = self._box.open(
            credential.secret_ciphertext or b"", context=secret_context(credential.id)
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

    def _check(self, credential: Credential, index: str, code: str) -> KeyCardState:
        return verify_keycard(
            self.state(credential),
            index,
            code,
            pepper=self._keys.pepper,
            max_failures=self._max_failures,
        )

    def verify(self, credential: Credential, index: str, code: str) -> KeyCardState:
        """Run the verifier; on a failure save the state it carries (and block the card when
        it says so) before re-raising, so the caller's commit keeps the count."""
        try:
            return self._check(credential, index, code)
        except VerificationFailed as exc:
            credential.failures = exc.state.failures
            self._repository.update(credential)
            if isinstance(exc, CredentialBlocked):
                self._lifecycle.transition(credential.id, CredentialState.BLOCKED)
            raise

    def login_verify(
        self, credential: Credential, index: str, code: str, *, counted: bool, now: dt.datetime
    ) -> KeyCardState:
        """The verifier for a login: a wrong code counts against the card only when the login
        proved another factor first (``counted``), and the last one allowed blocks it for a
        while (``block_length``), never for good. A success ends the run of blocks."""
        try:
            accepted = self._check(credential, index, code)
        except VerificationFailed as exc:
            if counted:
                credential.failures = exc.state.failures
                if isinstance(exc, CredentialBlocked):
                    credential.failures = 0
                    credential.blocked_until = now + block_length(credential.blocks)
                    credential.blocks += 1
                    self._audit(
                        "credential.temporarily_blocked",
                        {
                            "credential_id": str(credential.id),
                            "identity_id": str(credential.identity_id),
                            "until": credential.blocked_until.isoformat(),
                        },
                    )
                self._repository.update(credential)
            raise
        credential.blocks = 0
        credential.blocked_until = None
        return accepted

    def store(self, credential: Credential, state: KeyCardState) -> None:
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
