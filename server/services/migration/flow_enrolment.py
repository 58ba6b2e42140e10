"""The new identity of a person who moves from the legacy eID, and the first credentials
activated for it in the guided migration."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from server.domain.model import CredentialKind, IdentityStatus, Level, ProofingChannel
from server.services.credentials import CredentialService
from server.services.credentials.admission import AddedBy
from server.services.identities import AuditHook, Enrolment, IdentityService
from server.services.lifecycle_errors import DuplicateIdentity
from server.services.migration.flow_model import Authenticator
from server.services.person_number import PersonNumber
from server.storage.errors import DuplicatePersonNumber
from server.storage.migration_tables import LegacyUser, MigrationFlow
from server.storage.repositories import IdentityRepository
from server.storage.tables import Credential, Identity, ProofingRecord

# The proofing a legacy proof is recorded as: the legacy eID (password + key card) was issued
# at Substantial, so the identity it proves gets Substantial.
LEGACY_EID = "legacy_eid"
# What the legacy proof counts as, for the identity it makes and for the credentials the
# person adds in the wizard on its strength (``credentials.admission``).
LEGACY_PROOF_LEVEL = Level.SUBSTANTIAL


class FlowEnrolment:
    """Enrols the identity and activates its credentials, in the caller's transaction."""

    def __init__(
        self,
        session: Session,
        identities: IdentityService,
        credentials: CredentialService,
        audit: AuditHook,
    ) -> None:
        self._identities = identities
        self._identity_rows = IdentityRepository(session)
        self._credentials = credentials
        self._audit = audit

    def activate_one(
        self,
        identity_id: uuid.UUID,
        kind: Authenticator,
        password: str | None,
        serial: str | None,
        code: str | None,
    ) -> Credential:
        """Set the password, or assign the token and activate it: admitted on the strength of
        the legacy proof (as the wizard's security key is, see ``credentials.admission``)."""
        by = AddedBy.login(LEGACY_PROOF_LEVEL)
        if kind is Authenticator.PASSWORD:
            return self._credentials.set_password(identity_id, password or "", added_by=by)
        token = self._credentials.assign(identity_id, serial or "", kind=CredentialKind(kind.value))
        return self._credentials.activate(token.id, code or "", added_by=by)

    def enrol(self, flow: MigrationFlow, user: LegacyUser) -> Identity:
        """The new identity, at the level the proof allows: in person at a citizen service
        centre, with the document the operators checked (High with two of them); else the
        legacy proof itself, Substantial."""
        operators = tuple(flow.operator_ids)
        document = flow.checks.get("document_kind")
        if flow.channel is ProofingChannel.SERVICE_CENTRE and isinstance(document, str):
            return self._identities.enrol(
                Enrolment(
                    person_number=user.person_number,
                    name=user.name,
                    channel=flow.channel,
                    document_kind=document,
                    operator_ids=operators,
                )
            )
        return self._enrol_by_legacy_proof(flow.channel, user, operators)

    def _enrol_by_legacy_proof(
        self, channel: ProofingChannel, user: LegacyUser, operators: tuple[str, ...]
    ) -> Identity:
        """As ``IdentityService.enrol`` does (one identity per person, its proofing record, the
        same audit event), for the proofing it has no document kind for: the legacy eID."""
        level = LEGACY_PROOF_LEVEL
        identity = Identity(
            id=uuid.uuid4(),
            person_number=PersonNumber.parse(user.person_number).formatted,
            name=user.name,
            status=IdentityStatus.ACTIVE,
            identity_assurance=level,
        )
        try:
            self._identity_rows.add(identity)
        except DuplicatePersonNumber:
            raise DuplicateIdentity from None
        self._identity_rows.add_proofing(
            ProofingRecord(
                identity_id=identity.id,
                channel=channel,
                document_kind=LEGACY_EID,
                operator_ids=list(operators),
                level=level,
            )
        )
        self._audit(
            "identity.enrolled",
            {
                "identity_id": str(identity.id),
                "channel": channel.value,
                "document_kind": LEGACY_EID,
                "operator_ids": list(operators),
                "level": level.label,
            },
        )
        return identity
