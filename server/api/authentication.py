"""Routes of the authentication transaction (begin, identify, factors, complete) and the JWKS
a service provider verifies the assertion with."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy.orm import Session

from server.api.deps import (
    Services,
    ServicesDep,
    SessionDep,
    audit_hook,
    commit_now,
    in_transaction,
    require,
)
from server.api.problems import problem
from server.api.schemas import LevelLabel
from server.services.access import Caller, NotPermitted, Permission
from server.services.authentication import (
    AuthenticationService,
    FactorCheck,
    FactorResult,
    StepUpRequired,
)
from server.services.errors import InvalidPersonNumber
from server.services.factors import PasswordCheck, otp_check
from server.services.person_number import PersonNumber
from server.storage.errors import NotFound
from server.storage.repositories import IdentityRepository

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


def authentication_service(
    session: Any, services: Services, actor: str = "api"
) -> AuthenticationService:
    settings = services.settings
    return AuthenticationService(
        session,
        signer=services.signer,
        pseudonyms=services.pseudonyms,
        issuer=settings.issuer,
        transaction_lifetime=dt.timedelta(seconds=settings.transaction_lifetime_s),
        assertion_lifetime=dt.timedelta(seconds=settings.assertion_lifetime_s),
        audit=audit_hook(session, services, actor),
    )


def run_factor(
    request: Request,
    session: Any,
    services: Services,
    transaction_id: uuid.UUID,
    check: FactorCheck,
    submitted: dict[str, Any],
    binding: str | None = None,
    *,
    pairing: str | None = None,
) -> FactorResult:
    """Check one factor (for the browser of ``binding``, or a program paired with it by
    ``pairing``, if a browser claimed the login) and commit what it changed, failure or not
    (counters, blocks, limits, audit)."""
    source = request.client.host if request.client else "unknown"
    result = authentication_service(session, services).verify_factor(
        transaction_id, check, submitted, source=source, binding=binding, pairing=pairing
    )
    commit_now(session)
    return result


def verify_and_answer(
    request: Request,
    session: Any,
    services: Services,
    transaction_id: uuid.UUID,
    check: FactorCheck,
    submitted: dict[str, Any],
    *,
    pairing: str | None = None,
) -> FactorsView | JSONResponse:
    """Check one factor and answer: the factors so far, or a 401 problem. The failure is
    returned, not raised, so what it changed (counters, blocks, limits, audit) is committed.
    ``pairing`` only from the routes of device factors run outside the browser (PIV)."""
    result = run_factor(
        request, session, services, transaction_id, check, submitted, pairing=pairing
    )
    if result.failure is not None:
        return problem(401, result.failure.code, "Not accepted", result.failure.detail)
    return FactorsView(factors=result.factors)


async def answer_factor(
    request: Request,
    transaction_id: uuid.UUID,
    make_check: Callable[[Session, Services], FactorCheck],
    submitted: dict[str, Any],
    *,
    pairing: str | None = None,
) -> FactorsView | JSONResponse:
    """The work of a login factor's route, in one transaction of its own (``in_transaction``):
    make the check, verify the factor, answer (``verify_and_answer``)."""

    def work(session: Session, services: Services) -> FactorsView | JSONResponse:
        check = make_check(session, services)
        return verify_and_answer(
            request, session, services, transaction_id, check, submitted, pairing=pairing
        )

    return await in_transaction(request, work)


def identify_person(
    session: Any,
    services: Services,
    transaction_id: uuid.UUID,
    person_number: str,
    binding: str | None = None,
) -> None:
    """Say who logs in: the same work and answer whether or not the person exists (an
    unknown or malformed number still gets a subject digest, so its decoys are stable)."""
    identity_id = None
    typed = " ".join(person_number.split())
    try:
        number = PersonNumber.parse(person_number)
    except InvalidPersonNumber:
        number = None
    if number is not None:
        typed = number.formatted
        try:
            identity_id = IdentityRepository(session).by_person_number(number.formatted).id
        except NotFound:
            identity_id = None
    digest = services.pseudonyms.subject_digest(typed)
    authentication_service(session, services).identify(
        transaction_id, identity_id, digest, binding=binding
    )


@router.post("/authentications", status_code=201, response_model=TransactionView)
def begin(
    body: BeginRequest, session: SessionDep, services: ServicesDep, caller: Provider
) -> TransactionView:
    """A service provider starts a login and says the level it needs. The provider is the
    API key's name (``provider``, if sent, must be that name)."""
    if body.provider is not None and body.provider != caller.name:
        raise NotPermitted(
            "provider mismatch", detail="this API key begins logins only for its own provider"
        )
    transaction = authentication_service(session, services, caller.actor).begin(
        caller.name, body.min_level, return_url=body.return_url
    )
    return TransactionView(
        id=transaction.id,
        state=transaction.state,
        expires_at=transaction.expires_at,
        factors=list(transaction.factors),
        login_url=f"/login/{transaction.id}",
    )


@router.post("/authentications/{transaction_id}/identify", response_model=FactorsView)
async def identify(
    transaction_id: uuid.UUID, body: IdentifyRequest, request: Request
) -> FactorsView:
    """Say who logs in. The answer is the same whether or not the person exists."""

    def work(session: Session, services: Services) -> None:
        identify_person(session, services, transaction_id, body.person_number)

    await in_transaction(request, work)
    return FactorsView(factors=[])


@router.post(
    "/authentications/{transaction_id}/otp",
    response_model=FactorsView,
    responses={401: {"description": "the code was not accepted (problem+json)"}},
)
async def one_time_code(
    transaction_id: uuid.UUID, body: CodeRequest, request: Request
) -> FactorsView | JSONResponse:
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
) -> FactorsView | JSONResponse:
    """The password (paste is never blocked: that is the page's promise, WCAG 3.3.8)."""

    def check(_session: Session, services: Services) -> FactorCheck:
        return PasswordCheck(
            services.secrets, services.passwords, services.clock, decoy_hash=services.password_decoy
        )

    return await answer_factor(request, transaction_id, check, {"password": body.password})


@router.post(
    "/authentications/{transaction_id}/complete",
    response_model=AssertionView,
    responses={403: {"description": "the factors do not reach the level (step up)"}},
)
def complete(
    transaction_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: Provider
) -> AssertionView | JSONResponse:
    """The signed assertion for the service provider that began the login, or a request to
    step up."""
    try:
        outcome = authentication_service(session, services, caller.actor).complete(
            transaction_id, provider=caller.name
        )
    except StepUpRequired as exc:
        return problem(
            403,
            exc.code,
            "Step up required",
            exc.detail,
            achieved=exc.achieved.name.lower(),
            required=exc.required.name.lower(),
        )
    assert outcome.assertion is not None  # noqa: S101 - complete() always signs on success
    return AssertionView(
        assertion=outcome.assertion,
        level=outcome.level,
    )


@router.get("/.well-known/jwks.json", tags=["discovery"])
def jwks(services: ServicesDep) -> dict[str, Any]:
    """The public keys that verify assertions."""
    return dict(services.signer.jwks())
