"""High identity proofing as two operators' keys: the first operator's proofing waits
(persisted) until a second, distinct operator of the same channel and organisation approves it
with their own key, from the API or their own console; only then is the identity raised."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from server.domain.errors import ConflictingState, UnknownSubject
from server.domain.model import ProofingChannel
from server.services.access import Caller, NotPermitted, Permission, Role
from server.services.identities import AuditHook, IdentityService, approved_level
from server.storage.errors import NotFound
from server.storage.proofing_repositories import PendingProofingRepository
from server.storage.tables import Identity, PendingProofing, PendingState

# How long a proofing waits for the second operator: the person is at the desk meanwhile.
DEFAULT_WAIT = dt.timedelta(minutes=30)


class ProofingNotFound(UnknownSubject):
    """No proofing with this id waits for this caller (none at all, or another channel's or
    organisation's: the same answer, so ids of other banks' customers tell nothing)."""

    code = "proofing-not-found"
    default_detail = "no such proofing waits for your approval"


class ProofingNotWaiting(ConflictingState):
    code = "proofing-not-waiting"
    default_detail = "this proofing was approved, cancelled or has expired"


class ProofingIdentityPending(ConflictingState):
    code = "proofing-identity-pending"
    default_detail = "the migration has not enrolled the person yet; approve after it has"


def may_approve_at(caller: Caller, channel: ProofingChannel, organisation: str) -> bool:
    """Whether ``caller`` may approve a proofing of ``organisation`` on ``channel``: an
    enrolling operator of that channel and organisation (a supervisor: any)."""
    if not caller.may(Permission.ENROL):
        return False
    if Role.SUPERVISOR in caller.roles:
        return True
    return caller.may_prove_on(channel) and caller.organisation == organisation


def may_approve(caller: Caller, pending: PendingProofing) -> bool:
    """Whether ``caller`` may see and decide ``pending``."""
    return may_approve_at(caller, pending.channel, pending.organisation)


def is_first(caller: Caller, pending: PendingProofing) -> bool:
    """The same operator: the same key, or another key of the same name."""
    return caller.key_id == pending.first_key_id or caller.name == pending.first_operator


class ProofingApprovals:
    """Pending High proofings in the caller's transaction; every decision is audited with both
    operators and the organisation."""

    def __init__(
        self,
        session: Session,
        identities: IdentityService,
        audit: AuditHook,
        clock: Callable[[], float],
        wait: dt.timedelta = DEFAULT_WAIT,
    ) -> None:
        self._rows = PendingProofingRepository(session)
        self._identities = identities
        self._audit = audit
        self._clock = clock
        self._wait = wait

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    def request(
        self,
        first: Caller,
        channel: ProofingChannel,
        document_kind: str,
        named: Sequence[str],
        *,
        identity_id: uuid.UUID | None = None,
        flow_id: uuid.UUID | None = None,
    ) -> PendingProofing:
        """The first operator's High proofing of an identity (or of the person a migration flow
        will enrol), waiting for a second operator."""
        now = self._now()
        pending = self._rows.add(
            PendingProofing(
                id=uuid.uuid4(),
                identity_id=identity_id,
                flow_id=flow_id,
                channel=channel,
                document_kind=document_kind,
                organisation=first.organisation,
                first_key_id=first.key_id,
                first_operator=first.name,
                named_operators=list(named),
                state=PendingState.WAITING,
                created_at=now,
                expires_at=now + self._wait,
            )
        )
        self._audit(
            "identity.proofing_requested",
            {
                "identity_id": str(identity_id) if identity_id else None,
                "flow": str(flow_id) if flow_id else None,
                "proofing": str(pending.id),
                "channel": channel.value,
                "document_kind": document_kind,
                "organisation": first.organisation,
                "named_operators": list(named),
            },
        )
        return pending

    def waiting_for(self, caller: Caller) -> list[PendingProofing]:
        """What ``caller`` could approve now (their own proofings are listed too, to cancel)."""
        rows = self._rows.waiting(self._now())
        return [row for row in rows if may_approve(caller, row)]

    def waiting_of(self, caller: Caller, identity_id: uuid.UUID) -> list[PendingProofing]:
        """An identity's proofings still waiting that ``caller`` may see."""
        rows = self._rows.waiting(self._now(), identity_id=identity_id)
        return [row for row in rows if may_approve(caller, row)]

    def visible(self, caller: Caller, pending_id: uuid.UUID) -> PendingProofing:
        """One proofing ``caller`` may see, in whatever state it is (decided or expired ones
        too, so a page can tell what became of it); another channel's or organisation's
        answers as an unknown id."""
        try:
            pending = self._rows.get(pending_id)
        except NotFound:
            raise ProofingNotFound from None
        if not may_approve(caller, pending):
            raise ProofingNotFound
        return pending

    def is_waiting(self, pending: PendingProofing) -> bool:
        """Whether ``pending`` still waits (neither decided nor expired)."""
        return pending.state is PendingState.WAITING and pending.expires_at > self._now()

    def identity_of(self, pending: PendingProofing) -> uuid.UUID | None:
        """The person ``pending`` is about (a migration's: once the flow has enrolled them)."""
        if pending.identity_id is None and pending.flow_id is not None:
            return self._rows.flow_identity(pending.flow_id)
        return pending.identity_id

    def _decidable(self, caller: Caller, pending_id: uuid.UUID) -> PendingProofing:
        try:
            pending = self._rows.lock(pending_id)
        except NotFound:
            raise ProofingNotFound from None
        if not may_approve(caller, pending):
            raise ProofingNotFound
        if not self.is_waiting(pending):
            raise ProofingNotWaiting
        return pending

    def approve(self, second: Caller, pending_id: uuid.UUID) -> Identity:
        """The second operator's approval: the identity gets the High proofing with both
        operators, recorded under the organisation."""
        pending = self._decidable(second, pending_id)
        if is_first(second, pending):
            raise NotPermitted(
                "an operator approving their own proofing",
                detail="a second operator, with their own key, approves this proofing",
            )
        identity_id = self.identity_of(pending)
        if identity_id is None:
            raise ProofingIdentityPending
        operators = (pending.first_operator, second.name)
        level = approved_level(pending.channel, pending.document_kind, *operators)
        identity = self._identities.record_proofing(
            identity_id,
            pending.channel,
            pending.document_kind,
            operators,
            organisation=pending.organisation,
            level=level,
        )
        pending.identity_id = identity_id
        pending.state = PendingState.APPROVED
        pending.approver_key_id, pending.approver = second.key_id, second.name
        pending.decided_at = self._now()
        self._rows.decide(pending)
        self._audit(
            "identity.proofing_approved",
            {
                "identity_id": str(identity_id),
                "proofing": str(pending.id),
                "operators": list(operators),
                "first_operator_id": pending.first_key_id,
                "second_operator_id": second.key_id,
                "organisation": pending.organisation,
                "level": level.label,
            },
        )
        return identity

    def cancel(self, caller: Caller, pending_id: uuid.UUID) -> PendingProofing:
        """Drop a waiting proofing (either operator may: the person left the desk)."""
        pending = self._decidable(caller, pending_id)
        pending.state = PendingState.CANCELLED
        pending.decided_at = self._now()
        self._rows.decide(pending)
        self._audit(
            "identity.proofing_cancelled",
            {
                "identity_id": str(pending.identity_id) if pending.identity_id else None,
                "proofing": str(pending.id),
                "organisation": pending.organisation,
            },
        )
        return pending
