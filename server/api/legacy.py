"""Routes of legacy login: a service provider begins it; the person's browser sends user id and
password (answered with the key number to show, the same for anyone), then the code (answered
with a signed assertion marked ``legacy``, or one public failure).

Failures of the code step are answered, not raised, so that what they changed (the failure
counts, a lock, the audit entry) is committed with the answer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from server.api.deps import ServicesDep, SessionDep, actor_of, require, source_of
from server.api.schemas import StrictModel
from server.services.access import Caller, NotPermitted, Permission
from server.services.migration.legacy_proof import Method

router = APIRouter(tags=["legacy eID"])

Provider = Annotated[Caller, Depends(require(Permission.LOGIN))]

# A legacy user id: printable, no spaces (PostgreSQL refuses NUL in text, so none reaches it).
_USER_ID = r"^[^\x00-\x20\x7f]{1,64}$"
# Digits, and the spaces a code may be typed or pasted with; the length is the store's.
_CODE = r"^[0-9\s]{1,32}$"
_REPLACEMENT_NOTICE = "You have {left} codes left on your key card. A new key card is on its way."
_EXHAUSTED_NOTICE = "That was the last code on your key card. A new key card is on its way."


class BeginIn(StrictModel):
    provider: str | None = Field(default=None, min_length=1, max_length=128)


class LegacyTransactionOut(BaseModel):
    id: uuid.UUID
    expires_at: dt.datetime


class LegacyPasswordIn(StrictModel):
    user_id: str = Field(pattern=_USER_ID)
    password: str = Field(min_length=1, max_length=256)


class LegacyIndexOut(BaseModel):
    index: str = Field(description="the key number whose code to type (4 digits)")


class LegacyCodeIn(StrictModel):
    code: str = Field(pattern=_CODE)
    method: Method = Field(
        default=Method.KEY_CARD, description="key_card, or code_token for a legacy code token"
    )


class LegacyAssertionOut(BaseModel):
    assertion: str
    level: Literal["substantial"] = "substantial"
    token_type: Literal["JWT"] = "JWT"  # noqa: S105 - the token format, not a secret
    codes_left: int | None = Field(description="codes left on the key card")
    new_card_due: bool = Field(description="20 codes or fewer are left: a new card is coming")
    notice: str | None = Field(description="what to tell the person, if anything")


@router.post(
    "/legacy/authentications",
    status_code=201,
    response_model=LegacyTransactionOut,
    responses={
        400: {"description": "legacy login has closed, or this provider takes only the new eID"}
    },
)
def begin(
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    caller: Provider,
    body: BeginIn | None = None,
) -> LegacyTransactionOut:
    """A service provider begins a legacy login (the provider is the API key's name)."""
    if body is not None and body.provider is not None and body.provider != caller.name:
        raise NotPermitted(
            "provider mismatch", detail="this API key begins logins only for its own provider"
        )
    # A refusal's audit entry is committed with it (the service's errors are recorded).
    transaction = services.legacy_login(session, caller.actor).begin(caller.name)
    return LegacyTransactionOut(id=transaction.id, expires_at=transaction.expires_at)


@router.post("/legacy/authentications/{transaction_id}/password", response_model=LegacyIndexOut)
def password(
    transaction_id: uuid.UUID,
    body: LegacyPasswordIn,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
) -> LegacyIndexOut:
    """User id and password. The answer is the key number to show, whether or not the user id
    exists or the password is right: the outcome is told at the code step."""
    index = services.legacy_login(session, actor_of(request)).password(
        transaction_id, body.user_id, body.password, source=source_of(request)
    )
    return LegacyIndexOut(index=index)


@router.post(
    "/legacy/authentications/{transaction_id}/code",
    response_model=LegacyAssertionOut,
    responses={
        401: {"description": "not accepted: the same answer for every reason (problem+json)"},
        409: {"description": "every code on the key card is used"},
        429: {"description": "too many failures from this network, or for this user id from it"},
    },
)
def code(
    transaction_id: uuid.UUID,
    body: LegacyCodeIn,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
) -> LegacyAssertionOut:
    """The code printed beside the key number shown (or the code token's code): on success the
    signed assertion for the provider that began the login."""
    service = services.legacy_login(session, actor_of(request))
    login = service.code(transaction_id, body.code, method=body.method, source=source_of(request))
    proof = login.proof
    notice = None
    if proof.remaining == 0:
        notice = _EXHAUSTED_NOTICE
    elif proof.new_card_due:
        notice = _REPLACEMENT_NOTICE.format(left=proof.remaining)
    return LegacyAssertionOut(
        assertion=login.assertion,
        codes_left=proof.remaining,
        new_card_due=proof.new_card_due,
        notice=notice,
    )
