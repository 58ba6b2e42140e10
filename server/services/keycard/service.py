"""``KeyCardService``: issuing a printed key card (its codes leave the service once, for the
print shop), activating it with the code for a key number the service picks, and the login
factor (``login``). The pepper lives in a file outside the database (``pepper``)."""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from server.domain.errors import ConflictingState
from server.domain.model import CredentialKind, CredentialState
from server.services.credentials import CredentialService
from server.services.credentials.admission import AddedBy
from server.services.credentials.sealing import secret_context
from server.services.identities import AuditHook, no_audit
from server.services.keycard.cards import (
    KeyCardBlocked,
    KeyCardExhausted,
    KeyCards,
    encode_digests,
)
from server.services.keycard.login import KeyCardCheck, KeyCardLogin
from server.services.keycard.pepper import KeyCardSecrets
from server.services.lifecycle_errors import ActivationCodeRejected, InvalidTransition
from server.services.secretbox import SecretBox
from server.services.verifiers import (
    CardExhausted,
    CredentialBlocked,
    KeyCard,
    KeyCardState,
    VerificationFailed,
    WrongCode,
    challenge,
)
from server.services.verifiers.keycard import LEGACY_CODE_DIGITS
from server.services.verifiers.otp import DEFAULT_MAX_FAILURES
from server.storage.repositories import CredentialRepository
from server.storage.tables import Credential


class ActivationNotBegun(ConflictingState):
    """A code was sent for an activation without a key number asked for first."""

    code = "conflict"
    default_detail = "ask for the key number first, then type the code printed beside it"


@dataclass(frozen=True)
class IssuedCard:
    """A card just issued: the credential, and the card with its codes, to print once."""

    credential: Credential
    card: KeyCard


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
        self._box = box
        self._lifecycle = credentials
        self._repository = CredentialRepository(session)
        self._keys = keys
        self._audit = audit
        self._rng = rng if rng is not None else secrets.SystemRandom()
        self._code_digits = code_digits
        self._max_failures = max_failures
        self._cards = KeyCards(
            session, box, credentials, keys, audit=audit, max_failures=max_failures
        )
        self._login = KeyCardLogin(
            session, self._cards, keys, clock=clock, rng=self._rng, max_failures=max_failures
        )

    # --- issuance ---

    def issue(self, identity_id: uuid.UUID, *, label: str = "") -> IssuedCard:
        """A new card for the identity, shipped (mailed) at once. It fills an open key-card
        order (for example the one ``replace`` makes), else it is ordered here, within the
        kind's limit. The codes are in the answer only; the service keeps their digests."""
        self._lifecycle.active_identity(identity_id)
        ordered = self._cards.of_identity(identity_id, {CredentialState.ORDERED})
        credential = (
            ordered[0] if ordered else self._lifecycle.order(identity_id, CredentialKind.KEY_CARD)
        )
        card = KeyCard.new(f"KC-{secrets.randbelow(10**10):010d}", code_digits=self._code_digits)
        state = card.state(self._keys.pepper)
        credential.serial = card.serial
        if label:
            credential.label = label
        credential.secret_ciphertext = self._box.seal(
            encode_digests(state), context=secret_context(credential.id)
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
        credential = self._cards.card(credential_id)
        self._lifecycle.active_identity(credential.identity_id)
        if credential.state is CredentialState.SHIPPED:
            self._lifecycle.transition(credential.id, CredentialState.ACTIVATION_PENDING)
        elif credential.state is not CredentialState.ACTIVATION_PENDING:
            raise InvalidTransition(
                "credential", credential.state.value, CredentialState.ACTIVE.value
            )
        pending = credential.public_data.get("activation_index")
        if isinstance(pending, str):
            return pending
        index = self._challenge(self._cards.state(credential))
        credential.public_data = {**credential.public_data, "activation_index": index}
        self._repository.update(credential)
        return index

    def activation_complete(
        self, credential_id: uuid.UUID, code: str, *, added_by: AddedBy
    ) -> Credential:
        """Activate the card with the code for the key number of ``activation_begin``. Each
        try uses up that number's turn (ask for a new one after a wrong code); a wrong code is
        counted, and ``ActivationCodeRejected`` is raised after the count is updated on the
        credential: the caller commits before answering, so three wrong codes block the card.
        ``added_by``: who activates it, for the level it is admitted at (``admission``)."""
        credential = self._cards.card(credential_id)
        if credential.state is not CredentialState.ACTIVATION_PENDING:
            raise InvalidTransition(
                "credential", credential.state.value, CredentialState.ACTIVE.value
            )
        self._lifecycle.active_identity(credential.identity_id)
        data = dict(credential.public_data)
        index = data.pop("activation_index", None)
        if not isinstance(index, str):
            raise ActivationNotBegun
        credential.public_data = data
        try:
            accepted = self._cards.verify(credential, index, code)
        except VerificationFailed as exc:
            self._audit(
                "credential.activation_failed",
                {"credential_id": str(credential.id), "reason": exc.code},
            )
            detail = str(exc.detail)
            if isinstance(exc, WrongCode) and exc.attempts_left is not None:
                detail = f"{detail} {exc.attempts_left} attempt(s) left."
            raise ActivationCodeRejected(exc.code, detail) from None
        self._cards.store(credential, accepted)
        return self._lifecycle.activate_proven(credential.id, added_by=added_by)

    def _challenge(self, state: KeyCardState) -> str:
        try:
            return challenge(state, self._rng, max_failures=self._max_failures)
        except CardExhausted:
            raise KeyCardExhausted from None
        except CredentialBlocked:
            raise KeyCardBlocked from None

    # --- login ---

    def login_begin(self, transaction_id: uuid.UUID) -> str:
        """See ``KeyCardLogin.login_begin``."""
        return self._login.login_begin(transaction_id)

    def login_check(self, transaction_id: uuid.UUID) -> KeyCardCheck:
        """See ``KeyCardLogin.login_check``."""
        return self._login.login_check(transaction_id)

    def take_index(self, transaction_id: uuid.UUID) -> str | None:
        """See ``KeyCardLogin.take_index``."""
        return self._login.take_index(transaction_id)

    def verify_login(self, transaction_id: uuid.UUID, identity_id: uuid.UUID, code: str) -> None:
        """See ``KeyCardLogin.verify_login``."""
        self._login.verify_login(transaction_id, identity_id, code)

    def decoy_work(self, code: str) -> None:
        """See ``KeyCardLogin.decoy_work``."""
        self._login.decoy_work(code)

    def usable_card(self, identity_id: uuid.UUID) -> Credential | None:
        """The identity's active key card, if it has one."""
        return self._cards.usable_card(identity_id)
