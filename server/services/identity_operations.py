"""What one caller (an API key, or an operator at the console) may do to identities and
credentials: the caller's permission and channel rules, then the identity and credential
services, with the caller as the audit actor."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from server.domain.model import CredentialKind, CredentialState, Level, ProofingChannel
from server.services.access import Caller, NotPermitted, Permission, Role
from server.services.credentials import CredentialService
from server.services.identities import AuditHook, Enrolment, IdentityService
from server.services.pseudonyms import Pseudonyms
from server.storage.tables import Credential, Identity, ProofingRecord

# The shapes of a name and an operator id (the API's request models and the console check
# them): printable text without control characters (PostgreSQL refuses NUL in text columns).
TEXT = r"^[^\x00-\x1f\x7f]*$"
OPERATOR_ID = r"^[A-Za-z0-9._@-]{1,64}$"


@dataclass(frozen=True)
class ProofingCommand:
    """An identity proofing as the caller records it: where, on what document, by whom."""

    channel: ProofingChannel
    document_kind: str
    operator_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class IdentityRecord:
    """An identity with its proofing records and, where asked for, its pseudonym at
    ``provider``."""

    identity: Identity
    proofing: list[ProofingRecord]
    provider: str | None = None
    pseudonym: uuid.UUID | None = None


def check_proofing_caller(caller: Caller, proofing: ProofingCommand) -> None:
    """An operator records proofing only on the own channel (a bank operator at the bank) and
    must be one of the operators named; supervisors may record for any channel."""
    channel = proofing.channel
    if channel is not ProofingChannel.SELF_SERVICE and not caller.may_prove_on(channel):
        raise NotPermitted(
            f"{caller.actor} may not record {channel} proofing",
            detail=f"this API key may not record proofing on the {channel.value} channel",
        )
    if caller.roles.isdisjoint({Role.SUPERVISOR}) and channel is not ProofingChannel.SELF_SERVICE:
        if caller.name not in proofing.operator_ids:
            raise NotPermitted(
                "operator not among operator_ids",
                detail="the operator recording the proofing must be one of operator_ids",
            )


class IdentityOperations:
    """The identity and credential operations of ``caller``; each demands the permission the
    API route for it demands, so the console and the API hold the same rules."""

    def __init__(
        self,
        caller: Caller,
        identities: IdentityService,
        credentials: CredentialService,
        audit: AuditHook,
    ) -> None:
        self.caller = caller
        self._identities = identities
        self._credentials = credentials
        self._audit = audit

    @classmethod
    def build(
        cls,
        session: Session,
        caller: Caller,
        credentials: CredentialService,
        pseudonyms: Pseudonyms,
        audit: AuditHook,
    ) -> IdentityOperations:
        """The operations over one session, ``credentials`` and ``audit`` reporting as
        ``caller``; closing an identity revokes its live credentials."""
        identities = IdentityService(
            session, pseudonyms, on_close=credentials.revoke_all, audit=audit
        )
        return cls(caller, identities, credentials, audit)

    def _record(self, identity: Identity) -> IdentityRecord:
        return IdentityRecord(identity, self._identities.proofing(identity.id))

    # --- identities ---------------------------------------------------------------------------

    def enrol(
        self, person_number: str, name: str, proofing: ProofingCommand, required_level: Level | None
    ) -> IdentityRecord:
        """Enrol one identity per person, with its proofing record."""
        self.caller.require(Permission.ENROL)
        check_proofing_caller(self.caller, proofing)
        identity = self._identities.enrol(
            Enrolment(
                person_number=person_number,
                name=name,
                channel=proofing.channel,
                document_kind=proofing.document_kind,
                operator_ids=proofing.operator_ids,
                required_level=required_level,
            )
        )
        return self._record(identity)

    def record_proofing(self, identity_id: uuid.UUID, proofing: ProofingCommand) -> IdentityRecord:
        """Another proofing of an enrolled person; the same channel rule as enrolment."""
        self.caller.require(Permission.ENROL)
        check_proofing_caller(self.caller, proofing)
        identity = self._identities.record_proofing(
            identity_id, proofing.channel, proofing.document_kind, proofing.operator_ids
        )
        return self._record(identity)

    def view(self, identity_id: uuid.UUID, provider: str | None = None) -> IdentityRecord:
        """The identity (and its pseudonym at ``provider``); every view is audited."""
        self.caller.require(Permission.VIEW_IDENTITY)
        identity = self._identities.get(identity_id)
        self._audit("identity.viewed", {"identity": str(identity_id)})
        pseudonym = None
        if provider is not None:
            pseudonym = self._identities.pseudonym(identity_id, provider)
        return IdentityRecord(identity, self._identities.proofing(identity_id), provider, pseudonym)

    def suspend(self, identity_id: uuid.UUID) -> IdentityRecord:
        self.caller.require(Permission.SUSPEND)
        return self._record(self._identities.suspend(identity_id))

    def resume(self, identity_id: uuid.UUID) -> IdentityRecord:
        self.caller.require(Permission.SUSPEND)
        return self._record(self._identities.resume(identity_id))

    def close(self, identity_id: uuid.UUID) -> IdentityRecord:
        """Close the identity for good; its live credentials are revoked."""
        self.caller.require(Permission.CLOSE)
        return self._record(self._identities.close(identity_id))

    # --- credentials ----------------------------------------------------------------------------

    def _managing(self) -> CredentialService:
        self.caller.require(Permission.MANAGE_CREDENTIALS)
        return self._credentials

    def credentials(self, identity_id: uuid.UUID) -> list[Credential]:
        return list(self._managing().for_identity(identity_id))

    def credential(self, credential_id: uuid.UUID) -> Credential:
        return self._managing().get(credential_id)

    def order(self, identity_id: uuid.UUID, kind: CredentialKind, label: str = "") -> Credential:
        """Order a device for the identity (state ordered)."""
        return self._managing().order(identity_id, kind, label)

    def set_password(
        self, identity_id: uuid.UUID, password: str, current_password: str | None = None
    ) -> Credential:
        return self._managing().set_password(
            identity_id, password, current_password=current_password
        )

    def assign(self, identity_id: uuid.UUID, serial: str) -> Credential:
        return self._managing().assign(identity_id, serial)

    def activate(self, credential_id: uuid.UUID, code: str) -> Credential:
        return self._managing().activate(credential_id, code)

    def transition(self, credential_id: uuid.UUID, state: CredentialState) -> Credential:
        """Ship, block, mark lost, revoke or unblock; the transition table decides."""
        return self._managing().transition(credential_id, state)

    def replace(self, credential_id: uuid.UUID, serial: str | None = None) -> Credential:
        """The credential becomes replaced; the answer is the new one."""
        return self._managing().replace(credential_id, serial)

    def import_batch(
        self, document: bytes, psk: bytes | None, kind: CredentialKind | None
    ) -> Sequence[Credential]:
        """Every key of a PSKC document becomes an unassigned token, shipped."""
        self.caller.require(Permission.IMPORT_TOKENS)
        return self._credentials.import_batch(document, psk=psk, kind=kind)
