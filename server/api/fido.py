"""Routes of FIDO2 security keys: registration (begin, complete) and the FIDO2 login factor.

Which keys may be registered is the composition root's ``FidoPolicy`` (the
``AKKREDITIV_FIDO_TRUSTED_ROOTS``, ``_ALLOWED_AAGUIDS`` and ``_ALLOW_UNATTESTED`` settings): with
no trusted root no key can be registered; the simulator's root is trusted only where configured.

``fido2/begin`` answers decoy credential descriptors for a person who does not exist or has no
active key (``server.services.fido``), under a key derived from the key-card pepper file.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from fido2.webauthn import UserVerificationRequirement
from pydantic import BaseModel
from sqlalchemy.orm import Session

from server.api.authentication import FactorsView, answer_factor
from server.api.deps import ServicesDep, SessionDep, in_transaction, source_of
from server.api.identities import CredentialManager, CredentialOut, _credential_out
from server.api.schemas import StrictModel
from server.services.credentials.admission import IN_PERSON
from server.services.login.record import FactorCheck
from server.wiring import Services

router = APIRouter(tags=["fido2"])


class RegisterBeginIn(StrictModel):
    user_verification: Literal["required", "preferred", "discouraged"] = "discouraged"
    resident: bool = False


class RegisterBeginOut(BaseModel):
    state_id: uuid.UUID
    options: dict[str, Any]


class ResponseIn(StrictModel):
    response: dict[str, Any]


class AuthenticationBeginIn(StrictModel):
    user_verification: Literal["required", "preferred", "discouraged"] = "preferred"


class RequestOptionsOut(BaseModel):
    options: dict[str, Any]


# --- registration -----------------------------------------------------------------------------


@router.post("/identities/{identity_id}/fido2/register/begin", status_code=201)
def register_begin(
    identity_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
    body: RegisterBeginIn | None = None,
) -> RegisterBeginOut:
    """Creation options for ``navigator.credentials.create`` and the id of the stored state."""
    body = body or RegisterBeginIn()
    options, state_id = services.fido(session, caller.actor).register_begin(
        identity_id,
        # An operator's key: the operator registers the key with the person present, the
        # in-person path, so no login level is asked (see credentials.admission).
        added_by=IN_PERSON,
        user_verification=UserVerificationRequirement(body.user_verification),
        resident=body.resident,
    )
    return RegisterBeginOut(state_id=state_id, options=options)


@router.post("/fido2/registrations/{state_id}/complete", status_code=201)
def register_complete(
    state_id: uuid.UUID,
    body: ResponseIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Verify the key's registration response; the answer is the new active credential."""
    credential = services.fido(session, caller.actor).register_complete(state_id, body.response)
    return _credential_out(credential)


# --- authentication ---------------------------------------------------------------------------


@router.post("/authentications/{transaction_id}/fido2/begin")
async def authentication_begin(
    transaction_id: uuid.UUID, request: Request, body: AuthenticationBeginIn | None = None
) -> RequestOptionsOut:
    """Request options for ``navigator.credentials.get`` in an identified login. A person
    without an active key (or who does not exist) gets decoy credentials, never none."""
    verification = UserVerificationRequirement((body or AuthenticationBeginIn()).user_verification)

    def work(session: Session, services: Services) -> dict[str, Any]:
        # A login a browser claimed is that browser's (its pages ask for options themselves):
        # an API client never sees its person's credential ids.
        services.authentication(session).admit(transaction_id)
        service = services.fido(session)
        return service.fido_begin(transaction_id, user_verification=verification)

    return RequestOptionsOut(options=await in_transaction(request, work))


@router.post(
    "/authentications/{transaction_id}/fido2",
    response_model=FactorsView,
    responses={401: {"description": "the assertion was not accepted (problem+json)"}},
)
async def assertion(transaction_id: uuid.UUID, body: ResponseIn, request: Request) -> FactorsView:
    """The security key's assertion for the challenge of ``fido2/begin``."""

    submitted = {"response": body.response}
    source = source_of(request)

    def check(session: Session, services: Services) -> FactorCheck:
        # Verified before the transaction's first statement, in a read session of its own:
        # python-fido2's checks and the signature's hold no lock.
        verdict = services.fido_verdict(transaction_id, submitted, source=source)
        return services.fido(session).fido_check(transaction_id, verdict)

    return await answer_factor(request, transaction_id, check, submitted)
