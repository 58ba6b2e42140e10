"""Routes and schemas for identities, credentials and token batches; domain errors become
problem+json in ``server.api.problems``, never here."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from server.api.deps import ServicesDep, SessionDep, audit_hook, credential_service, require
from server.api.schemas import LevelLabel
from server.domain.model import (
    CredentialKind,
    CredentialState,
    IdentityStatus,
    ProofingChannel,
)
from server.services.access import Caller, NotPermitted, Permission, Role
from server.services.credentials import CredentialService
from server.services.identities import (
    STOCK_IDENTITY_ID,
    Enrolment,
    IdentityService,
    masked_person_number,
)
from server.services.lifecycle_errors import ActivationCodeRejected, InvalidTokenBatch
from server.storage.tables import Credential, Identity, ProofingRecord
from server.wiring import Services

MAX_BATCH_BYTES = 4 * 1024 * 1024
# Printable text without control characters (PostgreSQL refuses NUL in text columns).
_TEXT = r"^[^\x00-\x1f\x7f]*$"
_OPERATOR = r"^[A-Za-z0-9._@-]{1,64}$"
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProofingIn(_Strict):
    channel: ProofingChannel
    document_kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z_]+$")
    operator_ids: list[Annotated[str, Field(pattern=_OPERATOR)]] = Field(
        default_factory=list, max_length=10
    )


class EnrolmentIn(_Strict):
    person_number: str = Field(min_length=1, max_length=32, description="ddmmyy-ssss")
    name: str = Field(min_length=1, max_length=200, pattern=_TEXT)
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


class TokenBatchOut(BaseModel):
    count: int
    tokens: list[CredentialOut]


class OrderIn(_Strict):
    kind: CredentialKind
    label: str = Field(default="", max_length=200, pattern=_TEXT)


class PasswordIn(_Strict):
    password: str = Field(min_length=1, max_length=1024)
    current_password: str | None = Field(default=None, max_length=1024)


class AssignIn(_Strict):
    serial: str = Field(pattern=_SERIAL)


class ActivateIn(_Strict):
    code: str = Field(min_length=1, max_length=64)


class StateIn(_Strict):
    state: CredentialState


class ReplaceIn(_Strict):
    serial: str | None = Field(default=None, pattern=_SERIAL)


# --- wiring -----------------------------------------------------------------------------------


def _credentials(session: Session, services: Services, actor: str) -> CredentialService:
    return credential_service(session, services, audit_hook(session, services, actor))


def _identities(session: Session, services: Services, actor: str) -> IdentityService:
    credentials = _credentials(session, services, actor)
    return IdentityService(
        session,
        services.pseudonyms,
        on_close=credentials.revoke_all,
        audit=audit_hook(session, services, actor),
    )


def _identity_out(
    identity: Identity, proofing: list[ProofingRecord], pseudonym: PseudonymOut | None = None
) -> IdentityOut:
    return IdentityOut(
        id=identity.id,
        name=identity.name,
        person_number=masked_person_number(identity.person_number),
        status=identity.status,
        identity_assurance=identity.identity_assurance,
        created_at=identity.created_at,
        proofing=[
            ProofingOut(
                channel=record.channel,
                document_kind=record.document_kind,
                operator_ids=list(record.operator_ids),
                level=record.level,
                created_at=record.created_at,
            )
            for record in proofing
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


def check_proofing_caller(
    caller: Caller, channel: ProofingChannel, operator_ids: list[str] | tuple[str, ...]
) -> None:
    """An operator records proofing only on the own channel (a bank operator at the bank) and
    must be one of the operators named; supervisors may record for any channel."""
    if channel is not ProofingChannel.SELF_SERVICE and not caller.may_prove_on(channel):
        raise NotPermitted(
            f"{caller.actor} may not record {channel} proofing",
            detail=f"this API key may not record proofing on the {channel.value} channel",
        )
    if caller.roles.isdisjoint({Role.SUPERVISOR}) and channel is not ProofingChannel.SELF_SERVICE:
        if caller.name not in operator_ids:
            raise NotPermitted(
                "operator not among operator_ids",
                detail="the operator recording the proofing must be one of operator_ids",
            )


@router.post("/identities", status_code=201)
def enrol(
    body: EnrolmentIn, session: SessionDep, services: ServicesDep, caller: Enroller
) -> IdentityOut:
    """Enrol one identity per person, with its proofing record. A second enrolment of the same
    person number answers 409 duplicate-person-number. An operator records proofing only on
    the own channel (a bank operator at the bank) and must be one of the operators named."""
    check_proofing_caller(caller, body.proofing.channel, body.proofing.operator_ids)
    service = _identities(session, services, caller.actor)
    identity = service.enrol(
        Enrolment(
            person_number=body.person_number,
            name=body.name,
            channel=body.proofing.channel,
            document_kind=body.proofing.document_kind,
            operator_ids=tuple(body.proofing.operator_ids),
            required_level=body.level,
        )
    )
    return _identity_out(identity, service.proofing(identity.id))


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
    check_proofing_caller(caller, body.channel, body.operator_ids)
    service = _identities(session, services, caller.actor)
    identity = service.record_proofing(
        identity_id, body.channel, body.document_kind, tuple(body.operator_ids)
    )
    return _identity_out(identity, service.proofing(identity.id))


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
    service = _identities(session, services, caller.actor)
    identity = service.get(identity_id)
    audit_hook(session, services, caller.actor)("identity.viewed", {"identity": str(identity_id)})
    pseudonym = None
    if provider is not None:
        pseudonym = PseudonymOut(
            provider=provider, pseudonym=service.pseudonym(identity_id, provider)
        )
    return _identity_out(identity, service.proofing(identity_id), pseudonym)


@router.post("/identities/{identity_id}/suspend")
def suspend(
    identity_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: Suspender
) -> IdentityOut:
    service = _identities(session, services, caller.actor)
    return _identity_out(service.suspend(identity_id), service.proofing(identity_id))


@router.post("/identities/{identity_id}/resume")
def resume(
    identity_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: Suspender
) -> IdentityOut:
    service = _identities(session, services, caller.actor)
    return _identity_out(service.resume(identity_id), service.proofing(identity_id))


@router.post("/identities/{identity_id}/close")
def close(
    identity_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: Closer
) -> IdentityOut:
    """Close the identity for good; its live credentials are revoked (supervisors only)."""
    service = _identities(session, services, caller.actor)
    return _identity_out(service.close(identity_id), service.proofing(identity_id))


# --- credentials ----------------------------------------------------------------------------


@router.get("/identities/{identity_id}/credentials", tags=["credentials"])
def list_credentials(
    identity_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: CredentialManager
) -> list[CredentialOut]:
    credentials = _credentials(session, services, caller.actor).for_identity(identity_id)
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
    service = _credentials(session, services, caller.actor)
    return _credential_out(service.order(identity_id, body.kind, body.label))


@router.put("/identities/{identity_id}/password", tags=["credentials"])
def set_password(
    identity_id: uuid.UUID,
    body: PasswordIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Set the password, or change it with ``current_password``."""
    service = _credentials(session, services, caller.actor)
    credential = service.set_password(
        identity_id, body.password, current_password=body.current_password
    )
    return _credential_out(credential)


@router.post("/identities/{identity_id}/tokens", tags=["credentials"])
def assign_token(
    identity_id: uuid.UUID,
    body: AssignIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Assign the shipped token with this serial; it then awaits activation with a code."""
    service = _credentials(session, services, caller.actor)
    return _credential_out(service.assign(identity_id, body.serial))


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
    service = _credentials(session, services, caller.actor)
    tokens = service.import_batch(document, psk=_psk(pre_shared_key), kind=kind)
    return TokenBatchOut(count=len(tokens), tokens=[_credential_out(t) for t in tokens])


@router.get("/credentials/{credential_id}", tags=["credentials"])
def get_credential(
    credential_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: CredentialManager
) -> CredentialOut:
    return _credential_out(_credentials(session, services, caller.actor).get(credential_id))


@router.post("/credentials/{credential_id}/activate", tags=["credentials"])
def activate(
    credential_id: uuid.UUID,
    body: ActivateIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Activate an assigned token with the code it shows now."""
    service = _credentials(session, services, caller.actor)
    try:
        credential = service.activate(credential_id, body.code)
    except ActivationCodeRejected:
        # The failure count (and a block) must outlive the error answer.
        session.commit()
        raise
    return _credential_out(credential)


@router.post("/credentials/{credential_id}/state", tags=["credentials"])
def change_state(
    credential_id: uuid.UUID,
    body: StateIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Ship, block, mark lost, revoke or unblock; the transition table decides."""
    service = _credentials(session, services, caller.actor)
    return _credential_out(service.transition(credential_id, body.state))


@router.post("/credentials/{credential_id}/replace", status_code=201, tags=["credentials"])
def replace(
    credential_id: uuid.UUID,
    body: ReplaceIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Replace the credential: it becomes replaced; the answer is the new one."""
    service = _credentials(session, services, caller.actor)
    return _credential_out(service.replace(credential_id, body.serial))
