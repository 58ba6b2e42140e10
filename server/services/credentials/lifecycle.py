"""The credential lifecycle: ordering, shipping, assigning, blocking, losing, revoking and
replacing a credential along the transition table of ``rules``, with the rules between kinds."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from server.domain.model import (
    STOCK_IDENTITY_ID,
    CredentialKind,
    CredentialState,
    IdentityStatus,
    Level,
)
from server.services.credentials.admission import (
    IN_PERSON,
    AddedBy,
    admitted_level,
    record,
    recorded_level,
    with_level,
)
from server.services.credentials.rules import (
    LIMITS,
    LIVE_STATES,
    REPLACED_WHEN_BLOCKED,
    TRANSITIONS,
)
from server.services.identities import AuditHook, no_audit
from server.services.lifecycle_errors import (
    ConcurrentChange,
    ConflictingCredential,
    CredentialLimitReached,
    CredentialNotFound,
    DuplicateSerial,
    IdentityNotActive,
    IdentityNotFound,
    InvalidTransition,
    TokenNotFound,
    UnsupportedCredential,
)
from server.storage.errors import NotFound, StaleWrite
from server.storage.repositories import CredentialRepository, IdentityRepository
from server.storage.tables import Credential, Identity

K = CredentialKind
S = CredentialState


class CredentialLifecycle:
    """Every state change of a credential, in the caller's transaction; each change is audited.
    Token batches, activation and passwords (the other parts of ``CredentialService``) make
    their changes through ``move``, ``add`` and ``update`` here. Unassigned tokens belong to
    the reserved stock identity (``STOCK_IDENTITY_ID``) until assigned."""

    def __init__(self, session: Session, *, audit: AuditHook = no_audit) -> None:
        self._session = session
        self._credentials = CredentialRepository(session)
        self._identities = IdentityRepository(session)
        self._audit = audit

    # --- reading ---

    def get(self, credential_id: uuid.UUID) -> Credential:
        try:
            return self._credentials.get(credential_id)
        except NotFound:
            raise CredentialNotFound from None

    def for_identity(self, identity_id: uuid.UUID) -> list[Credential]:
        self._identity(identity_id)
        return self._credentials.for_identity(identity_id)

    # --- lifecycle ---

    def transition(
        self, credential_id: uuid.UUID, target: CredentialState, *, reason: str = ""
    ) -> Credential:
        """Move a credential by hand (ship, block, lose, revoke, unblock), with the ``reason``
        an operator gave in the audit entry. Activation has its own step with a code, and
        replacement its own with the new credential."""
        credential = self.get(credential_id)
        if target is S.REPLACED:
            raise InvalidTransition(
                "credential", credential.state.value, target.value, reason="use replace"
            )
        if target is S.ACTIVE and credential.state is not S.BLOCKED:
            raise InvalidTransition(
                "credential", credential.state.value, target.value, reason="activate it"
            )
        self.move(credential, target, reason=reason)
        return credential

    def order(self, identity_id: uuid.UUID, kind: CredentialKind, label: str = "") -> Credential:
        """A device ordered for an identity (sent, then activated by the kind's own flow)."""
        if kind is K.PASSWORD:
            raise UnsupportedCredential("a password is set, not ordered")
        identity = self.lock_identity(identity_id)
        self.require_active(identity)
        self.check_limit(identity_id, kind)
        credential = self.add(
            Credential(id=uuid.uuid4(), identity_id=identity_id, kind=kind, label=label)
        )
        self._audit(
            "credential.ordered",
            {"credential_id": str(credential.id), "identity_id": str(identity_id), "kind": kind},
        )
        return credential

    def assign(
        self, identity_id: uuid.UUID, serial: str, *, kind: CredentialKind | None = None
    ) -> Credential:
        """Give the shipped token ``serial`` to an identity; it then awaits activation."""
        identity = self.lock_identity(identity_id)
        self.require_active(identity)
        token = self._credentials.in_stock(serial, S.SHIPPED)
        if token is None or (kind is not None and token.kind is not kind):
            raise TokenNotFound
        # An open order for this kind is what the token fulfils: it must not count twice.
        self._fulfil_order(identity_id, token.kind)
        self.check_limit(identity_id, token.kind)
        token.identity_id = identity_id
        self.move(token, S.ACTIVATION_PENDING, event="credential.assigned")
        return token

    def replace(
        self, credential_id: uuid.UUID, serial: str | None = None, *, reason: str = ""
    ) -> Credential:
        """Move the credential to replaced and give its identity a new one of the same kind: the
        token in stock with ``serial`` (awaiting activation), or else a new order. An
        operator's ``reason`` goes into the audit entries of the change."""
        old = self.get(credential_id)
        if old.kind is K.PASSWORD:
            raise UnsupportedCredential("a password is changed, not replaced")
        if old.identity_id == STOCK_IDENTITY_ID:
            raise InvalidTransition("credential", old.state.value, S.REPLACED.value)
        self.move(old, S.REPLACED, reason=reason)
        if serial is not None:
            new = self.assign(old.identity_id, serial, kind=old.kind)
        else:
            new = self.order(old.identity_id, old.kind, old.label)
        old.public_data = {**old.public_data, "replaced_by": str(new.id)}
        new.public_data = {**new.public_data, "replaces": str(old.id)}
        self.update(old)
        self.update(new)
        details = {"credential_id": str(old.id), "replacement_id": str(new.id), "kind": old.kind}
        self._audit("credential.replaced", {**details, "reason": reason} if reason else details)
        return new

    def activate_admitted(
        self, credential: Credential, identity: Identity, by: AddedBy, *, event: str
    ) -> None:
        """Make ``credential`` active, recording the level ``by`` admits it at (see
        ``admission``) on it and in the audit entry."""
        level = record(credential, identity, by)
        self.move(
            credential,
            S.ACTIVE,
            event=event,
            also={"admitted_level": level.label, "added_by": by.label},
        )

    def admit_in_person(self, credential_id: uuid.UUID) -> Credential:
        """An operator, with the person present, admits an active credential at the identity's
        assurance now: after the identity was raised (to High, by proofing in person), a card
        or a key the person added before counts toward the new level from then on. Audited."""
        credential = self.get(credential_id)
        if credential.state is not S.ACTIVE:
            raise InvalidTransition(
                "credential",
                credential.state.value,
                "admitted",
                reason="only an active credential is admitted",
            )
        identity = self.lock_identity(credential.identity_id)
        self.require_active(identity)
        before = recorded_level(credential.public_data)
        level = admitted_level(identity, IN_PERSON)
        credential.public_data = with_level(credential.public_data, level)
        self.update(credential)
        self._audit(
            "credential.admitted",
            {
                "credential_id": str(credential.id),
                "identity_id": str(identity.id),
                "kind": credential.kind.value,
                "from": before.label if before else None,
                "to": level.label,
            },
        )
        return credential

    def revoke_all(self, identity_id: uuid.UUID) -> None:
        """Revoke every live credential of an identity (when it closes)."""
        for credential in self._credentials.for_identity(identity_id, LIVE_STATES):
            self.move(credential, S.REVOKED)

    # --- devices enrolled with a proof of possession ---

    def check_room(self, identity_id: uuid.UUID, kind: CredentialKind) -> None:
        """Raise unless the identity is active and may take one more ``kind``: checked when an
        enrolment begins, so nobody goes through the device steps to be refused at the end.
        An open order of the kind is the room the new credential fills (see ``add_proven``)."""
        self.active_identity(identity_id)
        live = [
            c for c in self._credentials.for_identity(identity_id, LIVE_STATES) if c.kind is kind
        ]
        if len(live) - any(c.state is S.ORDERED for c in live) >= LIMITS[kind]:
            raise CredentialLimitReached(kind.value, LIMITS[kind])

    def add_proven(
        self,
        identity_id: uuid.UUID,
        kind: CredentialKind,
        *,
        serial: str,
        public_data: dict[str, Any],
        admitted: Level | None,
        label: str = "",
    ) -> Credential:
        """Store a device whose possession was just proven (a PIV card's own key signed the
        service's challenge): active at once, within the kind's limit, for an active identity.
        It fulfils an open order of its kind, as ``assign`` does for a token. ``admitted``:
        the level it is admitted at, worked out when its enrolment began (None: an enrolment
        from before levels were recorded)."""
        identity = self.lock_identity(identity_id)
        self.require_active(identity)
        if self._credentials.serial_taken(serial):
            raise DuplicateSerial
        data = with_level(public_data, admitted)
        placeholder = self._fulfil_order(identity_id, kind)
        if placeholder is not None and "replaces" in placeholder.public_data:
            data.setdefault("replaces", placeholder.public_data["replaces"])
        self.check_limit(identity_id, kind)
        credential = self.add(
            Credential(
                id=uuid.uuid4(),
                identity_id=identity_id,
                kind=kind,
                state=S.ACTIVATION_PENDING,
                serial=serial,
                label=label,
                public_data=data,
            )
        )
        also = {"admitted_level": admitted.label} if admitted else {}
        self.move(credential, S.ACTIVE, event="credential.registered", also=also)
        return credential

    # --- rules ---

    def move(
        self,
        credential: Credential,
        target: CredentialState,
        *,
        event: str = "credential.state_changed",
        reason: str = "",
        also: Mapping[str, str] | None = None,
    ) -> None:
        """Change the credential's state along the transition table, and audit it (with
        ``also`` in the entry's details)."""
        current = credential.state
        if target not in TRANSITIONS[current]:
            raise InvalidTransition("credential", current.value, target.value)
        if current is S.BLOCKED and target is S.ACTIVE:
            if credential.kind in REPLACED_WHEN_BLOCKED:
                raise InvalidTransition(
                    "credential", current.value, target.value, reason="replace it instead"
                )
            credential.failures = 0
        if target is S.ACTIVE:
            self.check_exclusive(credential)
        credential.state = target
        self.update(credential)
        details: dict[str, Any] = {
            "credential_id": str(credential.id),
            "identity_id": None
            if credential.identity_id == STOCK_IDENTITY_ID
            else str(credential.identity_id),
            "kind": credential.kind.value,
            "from": current.value,
            "to": target.value,
        }
        if reason:
            details["reason"] = reason
        self._audit(event, {**details, **(also or {})})

    def check_limit(self, identity_id: uuid.UUID, kind: CredentialKind) -> None:
        live = self._credentials.for_identity(identity_id, LIVE_STATES)
        if sum(1 for credential in live if credential.kind is kind) >= LIMITS[kind]:
            raise CredentialLimitReached(kind.value, LIMITS[kind])

    def check_exclusive(self, credential: Credential) -> None:
        if credential.kind not in (K.CODE_DISPLAY, K.AUDIO_READER):
            return
        for other in self._credentials.for_identity(credential.identity_id, {S.ACTIVE}):
            if other.id == credential.id:
                continue
            if credential.kind is K.CODE_DISPLAY and other.kind is K.CODE_DISPLAY:
                raise ConflictingCredential("only one code display can be active at a time")
            if {credential.kind, other.kind} == {K.CODE_DISPLAY, K.AUDIO_READER}:
                raise ConflictingCredential(
                    "a code display and an audio code reader cannot be active at the same time"
                )

    def _fulfil_order(self, identity_id: uuid.UUID, kind: CredentialKind) -> Credential | None:
        """Revoke the identity's open order of ``kind``, if it has one: the new credential takes
        its place (and its room within the limit). Returns the order."""
        for placeholder in self._credentials.for_identity(identity_id, {S.ORDERED}):
            if placeholder.kind is kind:
                self.move(placeholder, S.REVOKED, reason="fulfilled")
                return placeholder
        return None

    def _identity(self, identity_id: uuid.UUID) -> Identity:
        identity = (
            None if identity_id == STOCK_IDENTITY_ID else self._session.get(Identity, identity_id)
        )
        if identity is None:
            raise IdentityNotFound
        return identity

    def active_identity(self, identity_id: uuid.UUID) -> Identity:
        """The identity, if it exists and is active (not locked: for checks before a change)."""
        identity = self._identity(identity_id)
        self.require_active(identity)
        return identity

    def lock_identity(self, identity_id: uuid.UUID) -> Identity:
        """The identity, locked for the rest of the transaction on PostgreSQL, so two requests
        cannot both pass the per-identity rules (SQLite allows one writer at a time anyway)."""
        if identity_id == STOCK_IDENTITY_ID:
            raise IdentityNotFound
        identity = self._identities.lock(identity_id)
        if identity is None:
            raise IdentityNotFound
        return identity

    @staticmethod
    def require_active(identity: Identity) -> None:
        if identity.status is not IdentityStatus.ACTIVE:
            raise IdentityNotActive

    # --- storage ---

    def add(self, credential: Credential) -> Credential:
        try:
            return self._credentials.add(credential)
        except NotFound:
            raise IdentityNotFound from None

    def update(self, credential: Credential) -> None:
        try:
            self._credentials.update(credential)
        except StaleWrite:
            raise ConcurrentChange from None
