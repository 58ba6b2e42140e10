"""Routes of legacy key cards: issuing a card (its printable codes are in that answer only),
activating it with the code for a key number the service picks, and the key-card login factor.

The pepper the codes' digests are made under is read from ``Settings.keycard_pepper_file``
(made on first start, mode 0600) when the app starts, and kept on ``app.state``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from server.api.authentication import FactorsView, answer_factor
from server.api.deps import (
    Services,
    ServicesDep,
    SessionDep,
    audit_hook,
    credential_service,
    in_transaction,
)
from server.api.identities import CredentialManager, CredentialOut, _credential_out
from server.services.authentication import FactorCheck
from server.services.keycard.pepper import KeyCardSecrets
from server.services.keycard.service import KeyCardService
from server.services.lifecycle_errors import ActivationCodeRejected
from server.settings import Settings

# Printable text without control characters (PostgreSQL refuses NUL in text columns).
_TEXT = r"^[^\x00-\x1f\x7f]*$"
# Digits, and the spaces or line breaks a pasted code may carry; the length is the verifier's.
_CODE = r"^[0-9\s]+$"


def load_secrets(app: FastAPI) -> KeyCardSecrets:
    """The key-card pepper of ``app``, read (and made, where ``create_keys``) once."""
    keys: KeyCardSecrets | None = getattr(app.state, "keycard_secrets", None)
    if keys is None:
        settings: Settings = app.state.settings
        keys = KeyCardSecrets.from_file(settings.keycard_pepper_file, create=settings.create_keys)
        app.state.keycard_secrets = keys
    return keys


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # At start, so a missing or unsafe pepper file stops the service before it answers.
    load_secrets(app)
    yield


async def keycard_secrets(request: Request) -> KeyCardSecrets:
    # Async: a lookup, which a sync dependency would hand to the thread pool.
    return load_secrets(request.app)


SecretsDep = Annotated[KeyCardSecrets, Depends(keycard_secrets)]

router = APIRouter(tags=["key cards"], lifespan=_lifespan)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IssueIn(_Strict):
    label: str = Field(default="", max_length=200, pattern=_TEXT)


class CodeIn(_Strict):
    code: str = Field(min_length=1, max_length=32, pattern=_CODE)


class PairOut(BaseModel):
    index: str = Field(description="the key number, 4 digits")
    code: str


class PrintableCardOut(BaseModel):
    serial: str
    code_digits: int
    pairs: list[PairOut]


class IssuedOut(BaseModel):
    credential: CredentialOut
    card: PrintableCardOut = Field(description="for the print shop: never shown again")


class IndexOut(BaseModel):
    index: str = Field(description="the key number whose code to type")


def keycard_service(
    session: Session, services: Services, keys: KeyCardSecrets, actor: str = "api"
) -> KeyCardService:
    audit = audit_hook(session, services, actor)
    credentials = credential_service(session, services, audit)
    return KeyCardService(
        session, services.secrets, credentials, keys, clock=services.clock, audit=audit
    )


# --- issuance and activation ------------------------------------------------------------------


@router.post("/identities/{identity_id}/key-cards", status_code=201, tags=["credentials"])
def issue(
    identity_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    keys: SecretsDep,
    caller: CredentialManager,
    body: IssueIn | None = None,
) -> IssuedOut:
    """Issue a key card of 148 key numbers and codes: the credential starts shipped, and the
    answer holds the printable card, the only time its codes leave the service."""
    body = body or IssueIn()
    issued = keycard_service(session, services, keys, caller.actor).issue(
        identity_id, label=body.label
    )
    card = issued.card
    return IssuedOut(
        credential=_credential_out(issued.credential),
        card=PrintableCardOut(
            serial=card.serial,
            code_digits=card.code_digits,
            pairs=[PairOut(index=index, code=code) for index, code in card.pairs],
        ),
    )


@router.post("/credentials/{credential_id}/key-card/activation/begin", tags=["credentials"])
def activation_begin(
    credential_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    keys: SecretsDep,
    caller: CredentialManager,
) -> IndexOut:
    """The key number whose code activates the mailed card (the same until a code is tried)."""
    service = keycard_service(session, services, keys, caller.actor)
    return IndexOut(index=service.activation_begin(credential_id))


@router.post("/credentials/{credential_id}/key-card/activation/complete", tags=["credentials"])
def activation_complete(
    credential_id: uuid.UUID,
    body: CodeIn,
    session: SessionDep,
    services: ServicesDep,
    keys: SecretsDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Activate the card with the code printed beside the key number asked for."""
    service = keycard_service(session, services, keys, caller.actor)
    try:
        credential = service.activation_complete(credential_id, body.code)
    except ActivationCodeRejected:
        # The spent turn, the failure count and a block must outlive the error answer.
        session.commit()
        raise
    return _credential_out(credential)


# --- login ------------------------------------------------------------------------------------


@router.post("/authentications/{transaction_id}/key-card/begin", tags=["authentication"])
async def login_begin(transaction_id: uuid.UUID, request: Request) -> IndexOut:
    """The key number to show; a person without a card is shown one too."""

    def work(session: Session, services: Services) -> str:
        keys = load_secrets(request.app)
        return keycard_service(session, services, keys).login_begin(transaction_id)

    return IndexOut(index=await in_transaction(request, work))


@router.post(
    "/authentications/{transaction_id}/key-card",
    response_model=FactorsView,
    tags=["authentication"],
    responses={401: {"description": "the code was not accepted (problem+json)"}},
)
async def login_code(
    transaction_id: uuid.UUID, body: CodeIn, request: Request
) -> FactorsView | JSONResponse:
    """The code printed beside the key number of ``key-card/begin`` (one try per number)."""

    def check(session: Session, services: Services) -> FactorCheck:
        keys = load_secrets(request.app)
        return keycard_service(session, services, keys).login_check(transaction_id)

    return await answer_factor(request, transaction_id, check, {"code": body.code})
