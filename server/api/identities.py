"""Routes and schemas for identities, credentials and token batches; domain errors become
problem+json in ``server.api.problems``, never here."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from server.api.deps import ServicesDep, SessionDep, require
from server.api.schemas import LevelLabel, StrictModel
from server.domain.model import (
    STOCK_IDENTITY_ID,
    CredentialKind,
    CredentialState,
    IdentityStatus,
    ProofingChannel,
)
from server.services.access import Caller, Permission
from server.services.credentials.admission import recorded_level
from server.services.identities import masked_person_number
from server.services.identity_operations import (
    OPERATOR_ID,
    TEXT,
    IdentityOperations,
    IdentityRecord,
    ProofingCommand,
    asks_high,
)
from server.services.lifecycle_errors import InvalidTokenBatch
from server.storage.tables import Credential, PendingProofing
from server.wiring import Services

MAX_BATCH_BYTES = 4 * 1024 * 1024
_SERIAL = r"^[\x20-\x7e]{1,128}$"
# Stored beside the public data for the login factors, but a Yubico private id is not shown.
_NOT_SHOWN = frozenset({"private_id"})

router = APIRouter(tags=["identities"])

# Who may do what (server/services/access.py); every route here needs an API key.
Viewer = Annotated[Caller, Depends(require(Permission.VIEW_IDENTITY))]
Enroller = Annotated[Caller, Depends(require(Permission.ENROL))]
Suspender = Annotated[Caller, Depends(require(Permission.SUSPEND))]
Closer = Annotated[Caller, Depends(require(Permission.CLOSE))]
CredentialManager = Annotated[Caller, Depends(require(Permission.MANAGE_CREDENTIALS))]
TokenImporter = Annotated[Caller, Depends(require(Permission.IMPORT_TOKENS))]


# --- schemas --------------------------------------------------------------------------------


class ProofingIn(StrictModel):
    channel: ProofingChannel
    document_kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z_]+$")
    operator_ids: list[Annotated[str, Field(pattern=OPERATOR_ID)]] = Field(
        default_factory=list, max_length=10
    )


class EnrolmentIn(StrictModel):
    person_number: str = Field(min_length=1, max_length=32, description="ddmmyy-ssss")
    name: str = Field(min_length=1, max_length=200, pattern=TEXT)
    proofing: ProofingIn
    level: LevelLabel | None = Field(
        default=None, description="the identity assurance needed; refused if not reached"
    )


class ProofingOut(BaseModel):
    channel: ProofingChannel
    document_kind: str
    operator_ids: list[str]
    level: LevelLabel
    created_at: dt.datetime


class PendingProofingOut(BaseModel):
    """A High proofing waiting for a second operator of the channel and organisation, who
    approves it with their own key (``POST /proofings/{id}/approve``)."""

    id: uuid.UUID
    identity_id: uuid.UUID | None = Field(description="null until a migration enrols the person")
    channel: ProofingChannel
    document_kind: str
    organisation: str
    first_operator: str
    named_operators: list[str] = Field(description="as the first operator named them")
    state: str
    created_at: dt.datetime
    expires_at: dt.datetime


class PseudonymOut(BaseModel):
    provider: str
    pseudonym: uuid.UUID


class IdentityOut(BaseModel):
    id: uuid.UUID
    name: str
    person_number: str = Field(description="masked: ddmmyy-****")
    status: IdentityStatus
    identity_assurance: LevelLabel
    created_at: dt.datetime
    proofing: list[ProofingOut]
    pseudonym: PseudonymOut | None = None


class CredentialOut(BaseModel):
    id: uuid.UUID
    identity_id: uuid.UUID | None = Field(description="null while the token is in stock")
    kind: CredentialKind
    state: CredentialState
    serial: str | None
    label: str
    public_data: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    admitted_level: LevelLabel | None = Field(
        default=None,
        description=(
            "the level the credential counts toward at most: the login's level (capped at the "
            "identity's assurance) when the person added it, or the identity's assurance when "
            "an operator added or admitted it with the person present; null for a credential "
            "from before levels were recorded (not capped) or not active yet"
        ),
    )


class TokenBatchOut(BaseModel):
    count: int
    tokens: list[CredentialOut]


class OrderIn(StrictModel):
    kind: CredentialKind
    label: str = Field(default="", max_length=200, pattern=TEXT)


class SetPasswordIn(StrictModel):
    password: str = Field(min_length=1, max_length=1024)
    current_password: str | None = Field(default=None, max_length=1024)


class AssignIn(StrictModel):
    serial: str = Field(pattern=_SERIAL)


class TokenActivateIn(StrictModel):
    code: str = Field(min_length=1, max_length=64)


class StateIn(StrictModel):
    state: CredentialState


class ReplaceIn(StrictModel):
    serial: str | None = Field(default=None, pattern=_SERIAL)


# --- wiring -----------------------------------------------------------------------------------


def operations(session: Session, services: Services, caller: Caller) -> IdentityOperations:
    """The identity and credential operations of ``caller`` in this request."""
    return services.identity_operations(session, caller)


def pending_out(pending: PendingProofing) -> PendingProofingOut:
    return PendingProofingOut(
        id=pending.id,
        identity_id=pending.identity_id,
        channel=pending.channel,
        document_kind=pending.document_kind,
        organisation=pending.organisation,
        first_operator=pending.first_operator,
        named_operators=list(pending.named_operators),
        state=pending.state.value,
        created_at=pending.created_at,
        expires_at=pending.expires_at,
    )


def identity_out(record: IdentityRecord) -> IdentityOut:
    identity = record.identity
    pseudonym = None
    if record.provider is not None and record.pseudonym is not None:
        pseudonym = PseudonymOut(provider=record.provider, pseudonym=record.pseudonym)
    return IdentityOut(
        id=identity.id,
        name=identity.name,
        person_number=masked_person_number(identity.person_number),
        status=identity.status,
        identity_assurance=identity.identity_assurance,
        created_at=identity.created_at,
        proofing=[
            ProofingOut(
                channel=proof.channel,
                document_kind=proof.document_kind,
                operator_ids=list(proof.operator_ids),
                level=proof.level,
                created_at=proof.created_at,
            )
            for proof in record.proofing
        ],
        pseudonym=pseudonym,
    )


def _credential_out(credential: Credential) -> CredentialOut:
    return CredentialOut(
        id=credential.id,
        identity_id=None if credential.identity_id == STOCK_IDENTITY_ID else credential.identity_id,
        kind=credential.kind,
        state=credential.state,
        serial=credential.serial,
        label=credential.label,
        public_data={k: v for k, v in credential.public_data.items() if k not in _NOT_SHOWN},
        created_at=credential.created_at,
        updated_at=credential.updated_at,
        admitted_level=recorded_level(credential.public_data),
    )


async def _pskc_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BATCH_BYTES:
            raise InvalidTokenBatch(None, "the document is too large")
    return bytes(body)


def _psk(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidTokenBatch("X-PSKC-Key", "the pre-shared key is not hex") from None


# --- identities -----------------------------------------------------------------------------


def _proofing(body: ProofingIn) -> ProofingCommand:
    operators = tuple(body.operator_ids)
    return ProofingCommand(body.channel, body.document_kind, operators, asks_high(operators))


@router.post("/identities", status_code=201)
def enrol(
    body: EnrolmentIn, session: SessionDep, services: ServicesDep, caller: Enroller
) -> IdentityOut:
    """Enrol one identity per person, with its proofing record. A second enrolment of the same
    person number answers 409 duplicate-person-number. An operator records proofing only on
    the own channel (a bank operator at the bank) and must be one of the operators named."""
    record = operations(session, services, caller).enrol(
        body.person_number, body.name, _proofing(body.proofing), body.level
    )
    return identity_out(record)


@router.post("/identities/{identity_id}/proofing")
def record_proofing(
    identity_id: uuid.UUID,
    body: ProofingIn,
    session: SessionDep,
    services: ServicesDep,
    caller: Enroller,
) -> IdentityOut:
    """Record another identity proofing of an enrolled person (a passport seen in person at a
    service centre, say): the identity's assurance rises to what it gives, never falls. High
    needs two different operators in one proofing. Same channel rule as enrolment."""
    ops = operations(session, services, caller)
    return identity_out(ops.record_proofing(identity_id, _proofing(body)))


@router.get("/identities/{identity_id}")
def get_identity(
    identity_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    caller: Viewer,
    provider: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> IdentityOut:
    """The identity with its person number masked and, with ``provider``, its pseudonym there.
    Every view of a person's data is audited."""
    return identity_out(operations(session, services, caller).view(identity_id, provider))


@router.post("/identities/{identity_id}/suspend")
def suspend(
    identity_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: Suspender
) -> IdentityOut:
    return identity_out(operations(session, services, caller).suspend(identity_id))


class LiftIn(StrictModel):
    reason: str = Field(min_length=3, max_length=500)


class LiftOut(BaseModel):
    throttles: int
    credentials: int


@router.post("/identities/{identity_id}/throttles/lift")
def lift_throttles(
    identity_id: uuid.UUID,
    body: LiftIn,
    session: SessionDep,
    services: ServicesDep,
    caller: Suspender,
) -> LiftOut:
    """Lift what failed attempts left on the person: the throttles naming them from every
    network and their tokens' and key cards' temporary blocks (for a person the operator has
    verified). Audited with the reason."""
    throttles, credentials = operations(session, services, caller).lift_throttles(
        identity_id, body.reason
    )
    return LiftOut(throttles=throttles, credentials=credentials)


@router.post("/identities/{identity_id}/resume")
def resume(
    identity_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: Suspender
) -> IdentityOut:
    return identity_out(operations(session, services, caller).resume(identity_id))


@router.post("/identities/{identity_id}/close")
def close(
    identity_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: Closer
) -> IdentityOut:
    """Close the identity for good; its live credentials are revoked (supervisors only)."""
    return identity_out(operations(session, services, caller).close(identity_id))


# --- credentials ----------------------------------------------------------------------------


@router.get("/identities/{identity_id}/credentials", tags=["credentials"])
def list_credentials(
    identity_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: CredentialManager
) -> list[CredentialOut]:
    credentials = operations(session, services, caller).credentials(identity_id)
    return [_credential_out(credential) for credential in credentials]


@router.post("/identities/{identity_id}/credentials", status_code=201, tags=["credentials"])
def order_credential(
    identity_id: uuid.UUID,
    body: OrderIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Order a device for the identity (state ordered)."""
    ops = operations(session, services, caller)
    return _credential_out(ops.order(identity_id, body.kind, body.label))


@router.put("/identities/{identity_id}/password", tags=["credentials"])
def set_password(
    identity_id: uuid.UUID,
    body: SetPasswordIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Set the password, or change it with ``current_password``."""
    ops = operations(session, services, caller)
    return _credential_out(ops.set_password(identity_id, body.password, body.current_password))


@router.post("/identities/{identity_id}/tokens", tags=["credentials"])
def assign_token(
    identity_id: uuid.UUID,
    body: AssignIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Assign the shipped token with this serial; it then awaits activation with a code."""
    return _credential_out(operations(session, services, caller).assign(identity_id, body.serial))


@router.post(
    "/token-batches",
    status_code=201,
    tags=["credentials"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/xml": {"schema": {"type": "string"}}},
        }
    },
)
def import_token_batch(
    document: Annotated[bytes, Depends(_pskc_body)],
    session: SessionDep,
    services: ServicesDep,
    caller: TokenImporter,
    kind: CredentialKind | None = None,
    pre_shared_key: Annotated[
        str | None,
        Header(alias="X-PSKC-Key", max_length=64, description="the PSKC pre-shared AES key, hex"),
    ] = None,
) -> TokenBatchOut:
    """Import a PSKC (RFC 6030) document: every key becomes an unassigned token, shipped."""
    ops = operations(session, services, caller)
    tokens = ops.import_batch(document, _psk(pre_shared_key), kind)
    return TokenBatchOut(count=len(tokens), tokens=[_credential_out(t) for t in tokens])


@router.get("/credentials/{credential_id}", tags=["credentials"])
def get_credential(
    credential_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: CredentialManager
) -> CredentialOut:
    return _credential_out(operations(session, services, caller).credential(credential_id))


@router.post("/credentials/{credential_id}/activate", tags=["credentials"])
def activate(
    credential_id: uuid.UUID,
    body: TokenActivateIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Activate an assigned token with the code it shows now."""
    ops = operations(session, services, caller)
    return _credential_out(ops.activate(credential_id, body.code))


@router.post("/credentials/{credential_id}/admit", tags=["credentials"])
def admit(
    credential_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: CredentialManager
) -> CredentialOut:
    """Admit an active credential in person, the person present at the desk: it counts toward
    the identity's assurance now (after the person was proofed High, a smartcard or security
    key they added before). Audited as ``credential.admitted``."""
    return _credential_out(operations(session, services, caller).admit(credential_id))


@router.post("/credentials/{credential_id}/state", tags=["credentials"])
def change_state(
    credential_id: uuid.UUID,
    body: StateIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Ship, block, mark lost, revoke or unblock; the transition table decides."""
    ops = operations(session, services, caller)
    return _credential_out(ops.transition(credential_id, body.state))


@router.post("/credentials/{credential_id}/replace", status_code=201, tags=["credentials"])
def replace(
    credential_id: uuid.UUID,
    body: ReplaceIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Replace the credential: it becomes replaced; the answer is the new one."""
    ops = operations(session, services, caller)
    return _credential_out(ops.replace(credential_id, body.serial))
