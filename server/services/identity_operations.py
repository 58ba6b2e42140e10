"""What one caller (an API key, or an operator at the console) may do to identities and
credentials: the caller's permission, channel and customer rules, then the identity and
credential services, with the caller as the audit actor."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from server.domain.model import CredentialKind, CredentialState, Level, ProofingChannel
from server.services.access import Caller, NotPermitted, Permission, Role
from server.services.credentials import CredentialService
from server.services.credentials.admission import IN_PERSON
from server.services.identities import AuditHook, Enrolment, IdentityService, can_give_high
from server.services.lifecycle_errors import CredentialNotFound, IdentityNotFound
from server.services.proofing_approvals import DEFAULT_WAIT, ProofingApprovals, is_first
from server.services.pseudonyms import Pseudonyms
from server.services.throttles import ThrottleLifting
from server.storage.proofing_repositories import CustomerRepository
from server.storage.tables import Credential, Identity, PendingProofing, ProofingRecord

# The shapes of a name and an operator id (the API's request models and the console check
# them): printable text without control characters (PostgreSQL refuses NUL in text columns).
TEXT = r"^[^\x00-\x1f\x7f]*$"
OPERATOR_ID = r"^[A-Za-z0-9._@-]{1,64}$"


@dataclass(frozen=True)
class ProofingCommand:
    """An identity proofing as the caller records it: where, on what document, by whom.
    ``high`` asks for High: the proofing then waits for a second operator's key."""

    channel: ProofingChannel
    document_kind: str
    operator_ids: tuple[str, ...] = ()
    high: bool = False

    @property
    def waits_for_second(self) -> bool:
        """Whether this proofing becomes a pending one (High asked for, and possible)."""
        return self.high and can_give_high(self.channel, self.document_kind)


def asks_high(operator_ids: Sequence[str]) -> bool:
    """Whether an API request asks for High: it names two different operators (as it did when
    the names alone gave High; now the second must approve with their own key)."""
    return len(set(operator_ids)) >= 2


@dataclass(frozen=True)
class IdentityRecord:
    """An identity with its proofing records, the High proofings still waiting for a second
    operator and, where asked for, its pseudonym at ``provider``."""

    identity: Identity
    proofing: list[ProofingRecord]
    provider: str | None = None
    pseudonym: uuid.UUID | None = None
    pending: list[PendingProofing] = field(default_factory=list)


@dataclass(frozen=True)
class WaitingProofing:
    """A High proofing as an operator's console shows it: the person (``None`` while the
    migration it was made in has not enrolled them), whether it still waits, and whether it is
    the caller's own (then it waits for a colleague: never the caller's to approve)."""

    pending: PendingProofing
    identity: Identity | None
    waiting: bool
    own: bool

    @property
    def approvable(self) -> bool:
        """Whether the caller may approve it now (the service decides again when they do)."""
        return self.waiting and not self.own and self.identity is not None


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
        approvals: ProofingApprovals,
        customers: CustomerRepository,
        lifting: tuple[Pseudonyms, ThrottleLifting] | None = None,
    ) -> None:
        self.caller = caller
        self._identities = identities
        self._credentials = credentials
        self._audit = audit
        self._approvals = approvals
        self._customers = customers
        self._lifting = lifting

    @classmethod
    def build(
        cls,
        session: Session,
        caller: Caller,
        credentials: CredentialService,
        pseudonyms: Pseudonyms,
        audit: AuditHook,
        *,
        clock: Callable[[], float] = time.time,
        wait: dt.timedelta = DEFAULT_WAIT,
    ) -> IdentityOperations:
        """The operations over one session, ``credentials`` and ``audit`` reporting as
        ``caller``; closing an identity revokes its live credentials."""
        identities = IdentityService(
            session, pseudonyms, on_close=credentials.revoke_all, audit=audit
        )
        approvals = ProofingApprovals(session, identities, audit, clock, wait)
        customers = CustomerRepository(session)
        lifting = (pseudonyms, ThrottleLifting(session))
        return cls(caller, identities, credentials, audit, approvals, customers, lifting)

    def _record(self, identity: Identity) -> IdentityRecord:
        pending = self._approvals.waiting_of(self.caller, identity.id)
        return IdentityRecord(identity, self._identities.proofing(identity.id), pending=pending)

    def _served(self, identity_id: uuid.UUID) -> uuid.UUID:
        """``identity_id`` if the caller may act on that person: a bank operator only on the
        bank's own customers; to anyone else's the answer is the one for an unknown id."""
        if self.caller.serves_own_customers_only and not self._customers.is_customer(
            identity_id, self.caller.organisation
        ):
            raise IdentityNotFound
        return identity_id

    def _served_credential(self, credential_id: uuid.UUID) -> CredentialService:
        """The credential service, once the credential is found to be a customer's (the same
        404 as an unknown credential otherwise)."""
        credentials = self._managing()
        if self.caller.serves_own_customers_only:
            owner = credentials.get(credential_id).identity_id
            try:
                self._served(owner)
            except IdentityNotFound:
                raise CredentialNotFound from None
        return credentials

    def _organisation(self, channel: ProofingChannel) -> str | None:
        """The organisation a proofing on ``channel`` is recorded under (self-service: none)."""
        return None if channel is ProofingChannel.SELF_SERVICE else self.caller.organisation

    # --- identities ---------------------------------------------------------------------------

    def _recorded_operators(self, proofing: ProofingCommand) -> tuple[str, ...]:
        """Who a proofing that waits for a second operator is recorded by for now: the caller
        alone (the names typed beside it are kept on the pending proofing, counting nothing)."""
        return (self.caller.name,) if proofing.waits_for_second else proofing.operator_ids

    def enrol(
        self, person_number: str, name: str, proofing: ProofingCommand, required_level: Level | None
    ) -> IdentityRecord:
        """Enrol one identity per person, with its proofing record. A High proofing enrols the
        person at what one operator's check gives and waits for a second operator's key."""
        self.caller.require(Permission.ENROL)
        check_proofing_caller(self.caller, proofing)
        waits = proofing.waits_for_second
        identity = self._identities.enrol(
            Enrolment(
                person_number=person_number,
                name=name,
                channel=proofing.channel,
                document_kind=proofing.document_kind,
                operator_ids=self._recorded_operators(proofing),
                # High is reached when the second operator approves, not here.
                required_level=None if waits and required_level is Level.HIGH else required_level,
                organisation=self._organisation(proofing.channel),
            )
        )
        if waits:
            self._wait_for_second(identity.id, proofing)
        return self._record(identity)

    def record_proofing(self, identity_id: uuid.UUID, proofing: ProofingCommand) -> IdentityRecord:
        """Another proofing of an enrolled person; the same channel rule as enrolment, and the
        same wait for a second operator for High."""
        self.caller.require(Permission.ENROL)
        check_proofing_caller(self.caller, proofing)
        identity = self._identities.record_proofing(
            self._served(identity_id),
            proofing.channel,
            proofing.document_kind,
            self._recorded_operators(proofing),
            organisation=self._organisation(proofing.channel),
        )
        if proofing.waits_for_second:
            self._wait_for_second(identity.id, proofing)
        return self._record(identity)

    def _wait_for_second(self, identity_id: uuid.UUID, proofing: ProofingCommand) -> None:
        self._approvals.request(
            self.caller,
            proofing.channel,
            proofing.document_kind,
            proofing.operator_ids,
            identity_id=identity_id,
        )

    # --- pending High proofings -----------------------------------------------------------------

    def waiting_proofings(self, identity_id: uuid.UUID | None = None) -> list[PendingProofing]:
        """The High proofings this operator may approve (or cancel) now; of one person."""
        self.caller.require(Permission.ENROL)
        if identity_id is not None:
            return self._approvals.waiting_of(self.caller, self._served(identity_id))
        return self._approvals.waiting_for(self.caller)

    def waiting_list(self) -> list[WaitingProofing]:
        """``waiting_proofings`` with each one's person, the caller's own marked."""
        return [self._shown(pending) for pending in self.waiting_proofings()]

    def proofing(self, pending_id: uuid.UUID) -> WaitingProofing:
        """One High proofing the caller may see (of their channel and organisation), in any
        state; another's answers as an unknown id (``ProofingNotFound``)."""
        self.caller.require(Permission.ENROL)
        return self._shown(self._approvals.visible(self.caller, pending_id))

    def _shown(self, pending: PendingProofing) -> WaitingProofing:
        identity_id = self._approvals.identity_of(pending)
        identity = None if identity_id is None else self._identities.get(identity_id)
        waiting = self._approvals.is_waiting(pending)
        return WaitingProofing(pending, identity, waiting, is_first(self.caller, pending))

    def approve(self, pending_id: uuid.UUID) -> IdentityRecord:
        """A second operator's approval with their own key: the identity becomes High."""
        self.caller.require(Permission.ENROL)
        return self._record(self._approvals.approve(self.caller, pending_id))

    def cancel_proofing(self, pending_id: uuid.UUID) -> PendingProofing:
        self.caller.require(Permission.ENROL)
        return self._approvals.cancel(self.caller, pending_id)

    def find(self, person_number: str) -> uuid.UUID:
        """The id of the person with this (formatted) number, if the caller may act on them:
        a bank operator finds only the bank's own customers, and for anyone else's number the
        answer is the one for a number nobody has (``IdentityNotFound``)."""
        self.caller.require(Permission.VIEW_IDENTITY)
        return self._served(self._identities.by_person_number(person_number).id)

    def view(self, identity_id: uuid.UUID, provider: str | None = None) -> IdentityRecord:
        """The identity (and its pseudonym at ``provider``); every view is audited."""
        self.caller.require(Permission.VIEW_IDENTITY)
        identity = self._identities.get(self._served(identity_id))
        self._audit("identity.viewed", {"identity": str(identity_id)})
        pseudonym = None
        if provider is not None:
            pseudonym = self._identities.pseudonym(identity_id, provider)
        record = self._record(identity)
        return IdentityRecord(identity, record.proofing, provider, pseudonym, record.pending)

    def suspend(self, identity_id: uuid.UUID, reason: str = "") -> IdentityRecord:
        """Suspend the identity; the console asks the operator's ``reason`` (audited)."""
        self.caller.require(Permission.SUSPEND)
        return self._record(self._identities.suspend(self._served(identity_id), reason))

    def resume(self, identity_id: uuid.UUID) -> IdentityRecord:
        self.caller.require(Permission.SUSPEND)
        return self._record(self._identities.resume(self._served(identity_id)))

    def close(self, identity_id: uuid.UUID) -> IdentityRecord:
        """Close the identity for good; its live credentials are revoked."""
        self.caller.require(Permission.CLOSE)
        return self._record(self._identities.close(self._served(identity_id)))

    def lift_throttles(self, identity_id: uuid.UUID, reason: str) -> tuple[int, int]:
        """Lift what failures left on the person (the throttles naming them from every network,
        their tokens' temporary blocks), for the person at the desk or on the phone; audited
        with the reason. How many throttles and blocked credentials there were."""
        self.caller.require(Permission.SUSPEND)
        if self._lifting is None:
            raise RuntimeError("built without throttle lifting")
        identity = self._identities.get(self._served(identity_id))
        pseudonyms, lifting = self._lifting
        digest = pseudonyms.subject_digest(identity.person_number)
        throttles, blocked = lifting.lift(digest, identity.id)
        self._audit(
            "throttles.lifted",
            {
                "identity": str(identity.id),
                "reason": reason,
                "throttles": throttles,
                "credentials": blocked,
                "organisation": self.caller.organisation,
            },
        )
        return throttles, blocked

    # --- credentials ----------------------------------------------------------------------------

    def _managing(self) -> CredentialService:
        self.caller.require(Permission.MANAGE_CREDENTIALS)
        return self._credentials

    def credentials(self, identity_id: uuid.UUID) -> list[Credential]:
        return list(self._managing().for_identity(self._served(identity_id)))

    def credential(self, credential_id: uuid.UUID) -> Credential:
        return self._served_credential(credential_id).get(credential_id)

    def order(self, identity_id: uuid.UUID, kind: CredentialKind, label: str = "") -> Credential:
        """Order a device for the identity (state ordered)."""
        return self._managing().order(self._served(identity_id), kind, label)

    def set_password(
        self, identity_id: uuid.UUID, password: str, current_password: str | None = None
    ) -> Credential:
        # The operator's key: the person is present (the in-person path, see admission).
        return self._managing().set_password(
            self._served(identity_id),
            password,
            added_by=IN_PERSON,
            current_password=current_password,
        )

    def assign(self, identity_id: uuid.UUID, serial: str) -> Credential:
        return self._managing().assign(self._served(identity_id), serial)

    def activate(self, credential_id: uuid.UUID, code: str) -> Credential:
        return self._served_credential(credential_id).activate(
            credential_id, code, added_by=IN_PERSON
        )

    def admit(self, credential_id: uuid.UUID) -> Credential:
        """Admit the credential at the person's identity assurance now, the person present
        (see ``CredentialLifecycle.admit_in_person``)."""
        return self._served_credential(credential_id).admit_in_person(credential_id)

    def transition(
        self, credential_id: uuid.UUID, state: CredentialState, reason: str = ""
    ) -> Credential:
        """Ship, block, mark lost, revoke or unblock; the transition table decides. The
        console asks a ``reason`` for a block (audited)."""
        return self._served_credential(credential_id).transition(
            credential_id, state, reason=reason
        )

    def replace(
        self, credential_id: uuid.UUID, serial: str | None = None, reason: str = ""
    ) -> Credential:
        """The credential becomes replaced; the answer is the new one. The console asks a
        ``reason`` (audited)."""
        return self._served_credential(credential_id).replace(credential_id, serial, reason=reason)

    def import_batch(
        self, document: bytes, psk: bytes | None, kind: CredentialKind | None
    ) -> Sequence[Credential]:
        """Every key of a PSKC document becomes an unassigned token, shipped."""
        self.caller.require(Permission.IMPORT_TOKENS)
        return self._credentials.import_batch(document, psk=psk, kind=kind)
