"""Routes of legacy key cards: issuing a card (its printable codes are in that answer only),
activating it with the code for a key number the service picks, and the key-card login factor.

The pepper the codes' digests are made under (``Settings.keycard_pepper_file``, mode 0600) is
loaded by the composition root when the service starts.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from server.api.authentication import FactorsView, answer_factor
from server.api.deps import ServicesDep, SessionDep, in_transaction
from server.api.identities import CredentialManager, CredentialOut, _credential_out
from server.api.schemas import StrictModel
from server.services.credentials.admission import IN_PERSON
from server.services.login.record import FactorCheck
from server.wiring import Services

# Printable text without control characters (PostgreSQL refuses NUL in text columns).
_TEXT = r"^[^\x00-\x1f\x7f]*$"
# Digits, and the spaces or line breaks a pasted code may carry; the length is the verifier's.
_CODE = r"^[0-9\s]+$"


router = APIRouter(tags=["key cards"])


class IssueIn(StrictModel):
    label: str = Field(default="", max_length=200, pattern=_TEXT)


class KeyCardCodeIn(StrictModel):
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


class KeyCardIndexOut(BaseModel):
    index: str = Field(description="the key number whose code to type")


# --- issuance and activation ------------------------------------------------------------------


@router.post("/identities/{identity_id}/key-cards", status_code=201, tags=["credentials"])
def issue(
    identity_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
    body: IssueIn | None = None,
) -> IssuedOut:
    """Issue a key card of 148 key numbers and codes: the credential starts shipped, and the
    answer holds the printable card, the only time its codes leave the service."""
    body = body or IssueIn()
    issued = services.keycards(session, caller.actor).issue(identity_id, label=body.label)
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
    caller: CredentialManager,
) -> KeyCardIndexOut:
    """The key number whose code activates the mailed card (the same until a code is tried)."""
    service = services.keycards(session, caller.actor)
    return KeyCardIndexOut(index=service.activation_begin(credential_id))


@router.post("/credentials/{credential_id}/key-card/activation/complete", tags=["credentials"])
def activation_complete(
    credential_id: uuid.UUID,
    body: KeyCardCodeIn,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Activate the card with the code printed beside the key number asked for."""
    # An operator's key: the person is at the desk (the in-person path, credentials.admission).
    credential = services.keycards(session, caller.actor).activation_complete(
        credential_id, body.code, added_by=IN_PERSON
    )
    return _credential_out(credential)


# --- login ------------------------------------------------------------------------------------


@router.post("/authentications/{transaction_id}/key-card/begin", tags=["authentication"])
async def login_begin(transaction_id: uuid.UUID, request: Request) -> KeyCardIndexOut:
    """The key number to show; a person without a card is shown one too."""

    def work(session: Session, services: Services) -> str:
        # A login a browser claimed is that browser's (its page shows the key number itself).
        services.authentication(session).admit(transaction_id)
        return services.keycards(session).login_begin(transaction_id)

    return KeyCardIndexOut(index=await in_transaction(request, work))


@router.post(
    "/authentications/{transaction_id}/key-card",
    response_model=FactorsView,
    tags=["authentication"],
    responses={401: {"description": "the code was not accepted (problem+json)"}},
)
async def login_code(
    transaction_id: uuid.UUID, body: KeyCardCodeIn, request: Request
) -> FactorsView:
    """The code printed beside the key number of ``key-card/begin`` (one try per number)."""

    def check(session: Session, services: Services) -> FactorCheck:
        return services.keycards(session).login_check(transaction_id)

    return await answer_factor(request, transaction_id, check, {"code": body.code})
