"""Routes of the authentication transaction (begin, identify, factors, complete) and the JWKS
a service provider verifies the assertion with."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy.orm import Session

from server.api.deps import ServicesDep, in_transaction, require, source_of
from server.api.schemas import LevelLabel
from server.services.access import Caller, NotPermitted, Permission
from server.services.authentication import Outcome
from server.services.factors import otp_check
from server.services.login.record import FactorCheck, kinds
from server.storage.tables import AuthTransaction
from server.wiring import Services

router = APIRouter(tags=["authentication"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Provider = Annotated[Caller, Depends(require(Permission.LOGIN))]


_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def check_return_url(value: str) -> str:
    """An absolute https URL (plain http only on this machine, for development): where the
    login pages send the browser back, so never a relative or script URL."""
    parts = urlsplit(value)
    if not parts.hostname or "@" in parts.netloc or any(ord(ch) <= 32 for ch in value):
        raise ValueError("return_url must be an absolute URL without user information")
    if parts.scheme == "https":
        return value
    if parts.scheme == "http" and parts.hostname.lower() in _LOOPBACK_HOSTS:
        return value
    raise ValueError("return_url must be https (or http on localhost)")


class BeginRequest(Strict):
    provider: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    min_level: LevelLabel = Field(default="low", validate_default=True)
    return_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    # Echoed as the assertion's ``nonce`` claim, so the provider can tie it to its session.
    nonce: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None

    @field_validator("return_url")
    @classmethod
    def _return_url(cls, value: str | None) -> str | None:
        return None if value is None else check_return_url(value)


class TransactionView(Strict):
    id: uuid.UUID
    state: str
    expires_at: dt.datetime
    factors: list[str]
    login_url: str  # the login's pages, relative to the service: send the browser there


class IdentifyRequest(Strict):
    person_number: Annotated[str, StringConstraints(min_length=1, max_length=32)]


class CodeRequest(Strict):
    code: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class PasswordRequest(Strict):
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class FactorsView(Strict):
    factors: list[str]


class AssertionView(Strict):
    assertion: str
    level: LevelLabel
    token_type: Literal["JWT"] = "JWT"  # noqa: S105 - the token format, not a secret


async def answer_factor(
    request: Request,
    transaction_id: uuid.UUID,
    make_check: Callable[[Session, Services], FactorCheck],
    submitted: dict[str, Any],
    *,
    pairing: str | None = None,
) -> FactorsView:
    """The work of a login factor's route, in one transaction of its own (``in_transaction``):
    make the check, verify the factor, answer with the factors so far. ``make_check`` runs
    before the transaction's first statement, so before SQLite's ``BEGIN IMMEDIATE``: what
    it does in a read session of its own (a password's Argon2id) holds no lock. A rejected factor
    raises ``FactorRejected``, whose record the unit of work commits before it answers 401.
    ``pairing`` only from the routes of device factors run outside the browser (PIV)."""
    source = source_of(request)

    def work(session: Session, services: Services) -> FactorsView:
        check = make_check(session, services)
        factors = services.authentication(session).verify_factor(
            transaction_id, check, submitted, source=source, pairing=pairing
        )
        return FactorsView(factors=factors)

    return await in_transaction(request, work)


@router.post("/authentications", status_code=201, response_model=TransactionView)
async def begin(body: BeginRequest, request: Request, caller: Provider) -> TransactionView:
    """A service provider starts a login and says the level it needs. The provider is the
    API key's name (``provider``, if sent, must be that name)."""
    if body.provider is not None and body.provider != caller.name:
        raise NotPermitted(
            "provider mismatch", detail="this API key begins logins only for its own provider"
        )

    def work(session: Session, services: Services) -> AuthTransaction:
        return services.authentication(session, caller.actor).begin(
            caller.name, body.min_level, return_url=body.return_url, nonce=body.nonce
        )

    transaction = await in_transaction(request, work)
    return TransactionView(
        id=transaction.id,
        state=transaction.state,
        expires_at=transaction.expires_at,
        factors=kinds(transaction.factors),
        login_url=f"/login/{transaction.id}",
    )


@router.post("/authentications/{transaction_id}/identify", response_model=FactorsView)
async def identify(
    transaction_id: uuid.UUID, body: IdentifyRequest, request: Request
) -> FactorsView:
    """Say who logs in. The answer is the same whether or not the person exists."""

    def work(session: Session, services: Services) -> None:
        # The look-up before the transaction's first statement: on SQLite it waits for no
        # writer and holds none up; the write transaction only binds the login.
        identity_id, digest = services.who_is(body.person_number)
        services.authentication(session).identify(transaction_id, identity_id, digest)

    await in_transaction(request, work)
    return FactorsView(factors=[])


@router.post(
    "/authentications/{transaction_id}/otp",
    response_model=FactorsView,
    responses={401: {"description": "the code was not accepted (problem+json)"}},
)
async def one_time_code(
    transaction_id: uuid.UUID, body: CodeRequest, request: Request
) -> FactorsView:
    """A code from a code display, an audio code reader or an OTP token."""

    def check(_session: Session, services: Services) -> FactorCheck:
        return otp_check(services.secrets, services.clock)

    return await answer_factor(request, transaction_id, check, {"code": body.code})


@router.post(
    "/authentications/{transaction_id}/password",
    response_model=FactorsView,
    responses={401: {"description": "not accepted (problem+json)"}},
)
async def password(
    transaction_id: uuid.UUID, body: PasswordRequest, request: Request
) -> FactorsView:
    """The password (paste is never blocked: that is the page's promise, WCAG 3.3.8)."""

    submitted = {"password": body.password}
    source = source_of(request)

    def check(_session: Session, services: Services) -> FactorCheck:
        # Before the transaction's first statement: the hashing holds no lock.
        return services.password_check(transaction_id, submitted, source=source)

    return await answer_factor(request, transaction_id, check, submitted)


@router.post(
    "/authentications/{transaction_id}/complete",
    response_model=AssertionView,
    responses={403: {"description": "the factors do not reach the level (step up)"}},
)
async def complete(transaction_id: uuid.UUID, request: Request, caller: Provider) -> AssertionView:
    """The signed assertion for the service provider that began the login, or a request to
    step up."""

    def work(session: Session, services: Services) -> Outcome:
        return services.authentication(session, caller.actor).complete(
            transaction_id, provider=caller.name
        )

    outcome = await in_transaction(request, work)
    assert outcome.assertion is not None  # noqa: S101 - complete() always signs on success
    return AssertionView(
        assertion=outcome.assertion,
        level=outcome.level,
    )


@router.get("/.well-known/jwks.json", tags=["discovery"])
def jwks(services: ServicesDep) -> dict[str, Any]:
    """The public keys that verify assertions and ID tokens (ES256, and the RS256 key)."""
    return dict(services.published_keys())
