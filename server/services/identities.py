"""Identities: enrolment of one identity per person with its proofing record, and the identity's
own lifecycle (active, suspended, closed)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy.orm import Session

from server.domain.model import STOCK_IDENTITY_ID, IdentityStatus, Level, ProofingChannel
from server.services.assurance import Proofing, identity_level
from server.services.lifecycle_errors import (
    ConcurrentChange,
    DuplicateIdentity,
    IdentityNotActive,
    IdentityNotFound,
    InsufficientProofing,
    InvalidTransition,
)
from server.services.person_number import PersonNumber
from server.services.pseudonyms import Pseudonyms
from server.storage.errors import DuplicatePersonNumber, NotFound, StaleWrite
from server.storage.repositories import IdentityRepository
from server.storage.tables import Identity, ProofingRecord

AuditHook = Callable[[str, dict[str, Any]], None]


def no_audit(event: str, details: dict[str, Any]) -> None:
    """The default audit hook: records nothing (the audit service is wired in by the app)."""


STOCK_PERSON_NUMBER = "token-stock"


# What a document check proves; the channel decides whether it was in person.
DOCUMENT_KINDS: Mapping[str, Proofing] = MappingProxyType(
    {
        "cpr_questions": Proofing.CPR_QUESTIONS,
        "passport_chip": Proofing.PASSPORT_CHIP,
        "passport": Proofing.IN_PERSON,
        "driving_licence": Proofing.IN_PERSON,
        "national_id_card": Proofing.IN_PERSON,
    }
)
_ASSISTED = frozenset({ProofingChannel.BANK, ProofingChannel.SERVICE_CENTRE})

# Identity status transitions; closed is final.
IDENTITY_TRANSITIONS: Mapping[IdentityStatus, frozenset[IdentityStatus]] = MappingProxyType(
    {
        IdentityStatus.ACTIVE: frozenset({IdentityStatus.SUSPENDED, IdentityStatus.CLOSED}),
        IdentityStatus.SUSPENDED: frozenset({IdentityStatus.ACTIVE, IdentityStatus.CLOSED}),
        IdentityStatus.CLOSED: frozenset(),
    }
)
if set(IDENTITY_TRANSITIONS) != set(IdentityStatus):  # pragma: no cover - checked at import
    raise RuntimeError("every identity status needs a row in IDENTITY_TRANSITIONS")


def _method(channel: ProofingChannel, document_kind: str) -> Proofing:
    method = DOCUMENT_KINDS.get(document_kind)
    if method is None:
        raise InsufficientProofing(
            f"unknown document kind; expected one of {', '.join(sorted(DOCUMENT_KINDS))}"
        )
    if method is Proofing.IN_PERSON and channel not in _ASSISTED:
        raise InsufficientProofing("a document shown in person needs an assisted channel")
    return method


def proofing_level(
    channel: ProofingChannel, document_kind: str, operator_ids: Collection[str]
) -> Level:
    """The identity assurance a proofing recorded by one operator gives: in person only at an
    assisted channel, never High. The operator ids are what the caller typed; a second name
    proves no second person, so High comes only from ``approved_level`` (two keys)."""
    method = _method(channel, document_kind)
    if channel in _ASSISTED and not operator_ids:
        raise InsufficientProofing("a proofing at an assisted channel names its operator")
    return identity_level(method, approved_by=tuple(operator_ids)[:1])


def can_give_high(channel: ProofingChannel, document_kind: str) -> bool:
    """Whether a second operator's approval would make this proofing High."""
    return DOCUMENT_KINDS.get(document_kind) is Proofing.IN_PERSON and channel in _ASSISTED


def approved_level(channel: ProofingChannel, document_kind: str, first: str, second: str) -> Level:
    """The level of a proofing two authenticated operators (their key names) stand behind."""
    return identity_level(_method(channel, document_kind), approved_by=(first, second))


@dataclass(frozen=True)
class Enrolment:
    person_number: str
    name: str
    channel: ProofingChannel
    document_kind: str
    operator_ids: tuple[str, ...] = ()
    # The level the caller needs; enrolment is refused if the proofing does not reach it.
    required_level: Level | None = None
    # The bank or centre of the operator who proved the person (``None``: self-service).
    organisation: str | None = None


class IdentityService:
    """Enrols, reads and changes the status of identities in the caller's transaction."""

    def __init__(
        self,
        session: Session,
        pseudonyms: Pseudonyms,
        *,
        audit: AuditHook = no_audit,
        on_close: Callable[[uuid.UUID], None] | None = None,
    ) -> None:
        self._session = session
        self._identities = IdentityRepository(session)
        self._pseudonyms = pseudonyms
        self._audit = audit
        # Called when an identity closes (the credential service revokes what it holds).
        self._on_close = on_close

    def enrol(self, enrolment: Enrolment) -> Identity:
        number = PersonNumber.parse(enrolment.person_number)
        level = proofing_level(enrolment.channel, enrolment.document_kind, enrolment.operator_ids)
        order = list(Level)
        if enrolment.required_level is not None and order.index(level) < order.index(
            enrolment.required_level
        ):
            raise InsufficientProofing(
                f"the proofing reaches {level}, not {enrolment.required_level}; high needs "
                "a second operator's approval of an in-person proofing at an assisted channel"
            )
        identity = Identity(
            id=uuid.uuid4(),
            person_number=number.formatted,
            name=enrolment.name,
            status=IdentityStatus.ACTIVE,
            identity_assurance=level,
        )
        try:
            self._identities.add(identity)
        except DuplicatePersonNumber:
            raise DuplicateIdentity from None
        self._identities.add_proofing(
            ProofingRecord(
                identity_id=identity.id,
                channel=enrolment.channel,
                document_kind=enrolment.document_kind,
                operator_ids=list(enrolment.operator_ids),
                level=level,
                organisation=enrolment.organisation,
            )
        )
        self._audit(
            "identity.enrolled",
            {
                "identity_id": str(identity.id),
                "channel": enrolment.channel.value,
                "document_kind": enrolment.document_kind,
                "operator_ids": list(enrolment.operator_ids),
                "level": level.label,
            },
        )
        return identity

    def record_proofing(
        self,
        identity_id: uuid.UUID,
        channel: ProofingChannel,
        document_kind: str,
        operator_ids: tuple[str, ...],
        *,
        organisation: str | None = None,
        level: Level | None = None,
    ) -> Identity:
        """Another proofing of an enrolled, active person: kept as a record, and the identity's
        assurance raised to the level it gives (a lower proofing lowers nothing). ``level`` is
        given only for a proofing two operators' keys approved (``approved_level``)."""
        identity = self.get(identity_id)
        if identity.status is not IdentityStatus.ACTIVE:
            raise IdentityNotActive
        if level is None:
            level = proofing_level(channel, document_kind, operator_ids)
        self._identities.add_proofing(
            ProofingRecord(
                identity_id=identity.id,
                channel=channel,
                document_kind=document_kind,
                operator_ids=list(operator_ids),
                level=level,
                organisation=organisation,
            )
        )
        order = list(Level)
        before = identity.identity_assurance
        if order.index(level) > order.index(before):
            identity = self._identities.raise_assurance(identity.id, level)
        self._audit(
            "identity.proofed",
            {
                "identity_id": str(identity.id),
                "channel": channel.value,
                "document_kind": document_kind,
                "operator_ids": list(operator_ids),
                "level": level.label,
                "assurance_before": before.label,
                "assurance_after": identity.identity_assurance.label,
            },
        )
        return identity

    def get(self, identity_id: uuid.UUID) -> Identity:
        if identity_id == STOCK_IDENTITY_ID:
            raise IdentityNotFound
        try:
            return self._identities.get(identity_id)
        except NotFound:
            raise IdentityNotFound from None

    def by_person_number(self, person_number: str) -> Identity:
        """The identity of a (formatted) person number; ``IdentityNotFound`` if none."""
        try:
            return self._identities.by_person_number(person_number)
        except NotFound:
            raise IdentityNotFound from None

    def proofing(self, identity_id: uuid.UUID) -> list[ProofingRecord]:
        self.get(identity_id)
        return self._identities.proofing_for(identity_id)

    def pseudonym(self, identity_id: uuid.UUID, provider: str) -> uuid.UUID:
        self.get(identity_id)
        return self._pseudonyms.pseudonym(identity_id, provider)

    def suspend(self, identity_id: uuid.UUID, reason: str = "") -> Identity:
        """Suspend the identity (every login refused until it is resumed); an operator's
        ``reason`` goes into the audit entry."""
        return self._move(identity_id, IdentityStatus.SUSPENDED, "identity.suspended", reason)

    def resume(self, identity_id: uuid.UUID) -> Identity:
        return self._move(identity_id, IdentityStatus.ACTIVE, "identity.resumed")

    def close(self, identity_id: uuid.UUID) -> Identity:
        identity = self._move(identity_id, IdentityStatus.CLOSED, "identity.closed")
        if self._on_close is not None:
            self._on_close(identity_id)
        return identity

    def _move(
        self, identity_id: uuid.UUID, target: IdentityStatus, event: str, reason: str = ""
    ) -> Identity:
        identity = self.get(identity_id)
        if target not in IDENTITY_TRANSITIONS[identity.status]:
            raise InvalidTransition("identity", identity.status.value, target.value)
        previous = identity.status
        try:
            self._identities.set_status(identity_id, target)
        except StaleWrite:
            raise ConcurrentChange from None
        details = {"identity_id": str(identity_id), "from": previous.value, "to": target.value}
        self._audit(event, {**details, "reason": reason} if reason else details)
        return identity


def masked_person_number(stored: str) -> str:
    """``ddmmyy-****`` for a stored person number."""
    return PersonNumber.parse(stored).masked
