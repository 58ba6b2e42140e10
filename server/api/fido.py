"""Routes of FIDO2 security keys: registration (begin, complete) and the FIDO2 login factor.

Configuration beyond ``Settings`` (``rp_id``, ``rp_origins``), read from the environment by
``fido_service`` on each request (``settings.py`` has no fields for them yet):

* ``AKKREDITIV_FIDO_TRUSTED_ROOTS``: PEM files (separated by ``os.pathsep``) of the attestation
  roots to trust. Unset or empty trusts nothing, so no key can be registered: the simulator's
  root is trusted only where it is configured here.
* ``AKKREDITIV_FIDO_ALLOWED_AAGUIDS``: optional comma-separated AAGUIDs; unset allows any model
  whose attestation chains to a trusted root.
* ``AKKREDITIV_FIDO_ALLOW_UNATTESTED``: ``1``/``true`` accepts self and "none" attestation.

``fido2/begin`` answers decoy credential descriptors for a person who does not exist or has no
active key (``server.services.fido``), under a key derived from the key-card pepper file.
"""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fido2.webauthn import UserVerificationRequirement
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from server.api.authentication import FactorsView, answer_factor
from server.api.deps import Services, ServicesDep, SessionDep, audit_hook, in_transaction
from server.api.identities import CredentialManager, CredentialOut, _credential_out
from server.api.keycard import SecretsDep, load_secrets
from server.services.authentication import FactorCheck
from server.services.errors import DomainError, KeyMaterialRejected
from server.services.fido import FidoService
from server.services.keycard.pepper import KeyCardSecrets

ROOTS_ENV = "AKKREDITIV_FIDO_TRUSTED_ROOTS"
AAGUIDS_ENV = "AKKREDITIV_FIDO_ALLOWED_AAGUIDS"
UNATTESTED_ENV = "AKKREDITIV_FIDO_ALLOW_UNATTESTED"

router = APIRouter(tags=["fido2"])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterBeginIn(_Strict):
    user_verification: Literal["required", "preferred", "discouraged"] = "discouraged"
    resident: bool = False


class RegisterBeginOut(BaseModel):
    state_id: uuid.UUID
    options: dict[str, Any]


class ResponseIn(_Strict):
    response: dict[str, Any]


class AuthenticationBeginIn(_Strict):
    user_verification: Literal["required", "preferred", "discouraged"] = "preferred"


class RequestOptionsOut(BaseModel):
    options: dict[str, Any]


# --- wiring -----------------------------------------------------------------------------------


def trusted_roots() -> list[x509.Certificate]:
    """The certificates of the files ``AKKREDITIV_FIDO_TRUSTED_ROOTS`` names. Read on each
    request, so a root added to a file counts at once; a file is parsed again only when it
    changed (``_roots_in``)."""
    roots: list[x509.Certificate] = []
    for name in os.environ.get(ROOTS_ENV, "").split(os.pathsep):
        path = name.strip()
        if not path:
            continue
        try:
            found = os.stat(path)
            roots.extend(_roots_in(path, found.st_ino, found.st_mtime_ns, found.st_size))
        except (OSError, ValueError) as exc:
            raise KeyMaterialRejected(f"{ROOTS_ENV}: {path}: {exc}") from None
    return roots


@functools.lru_cache(maxsize=32)
def _roots_in(path: str, inode: int, mtime_ns: int, size: int) -> tuple[x509.Certificate, ...]:
    # Keyed by what changes when the file is replaced, rewritten or appended to.
    return tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))


def allowed_aaguids() -> set[uuid.UUID] | None:
    value = os.environ.get(AAGUIDS_ENV, "").strip()
    if not value:
        return None
    try:
        return {uuid.UUID(part.strip()) for part in value.split(",") if part.strip()}
    except ValueError as exc:
        raise KeyMaterialRejected(f"{AAGUIDS_ENV}: {exc}") from None


def fido_service(
    session: Session, services: Services, keys: KeyCardSecrets, actor: str = "api"
) -> FidoService:
    settings = services.settings
    return FidoService(
        session,
        rp_id=settings.rp_id,
        origins=settings.rp_origins,
        trusted_roots=trusted_roots(),
        decoy_key=keys.derive("fido2-decoy"),
        allowed_aaguids=allowed_aaguids(),
        allow_unattested=os.environ.get(UNATTESTED_ENV, "").lower() in {"1", "true", "yes"},
        clock=services.clock,
        audit=audit_hook(session, services, actor),
    )


# --- registration -----------------------------------------------------------------------------


@router.post("/identities/{identity_id}/fido2/register/begin", status_code=201)
def register_begin(
    identity_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    keys: SecretsDep,
    caller: CredentialManager,
    body: RegisterBeginIn | None = None,
) -> RegisterBeginOut:
    """Creation options for ``navigator.credentials.create`` and the id of the stored state."""
    body = body or RegisterBeginIn()
    options, state_id = fido_service(session, services, keys, caller.actor).register_begin(
        identity_id,
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
    keys: SecretsDep,
    caller: CredentialManager,
) -> CredentialOut:
    """Verify the key's registration response; the answer is the new active credential."""
    service = fido_service(session, services, keys, caller.actor)
    try:
        credential = service.register_complete(state_id, body.response)
    except DomainError:
        # The registration is closed even when refused: that must outlive the error answer.
        session.commit()
        raise
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
        service = fido_service(session, services, load_secrets(request.app))
        return service.fido_begin(transaction_id, user_verification=verification)

    return RequestOptionsOut(options=await in_transaction(request, work))


@router.post(
    "/authentications/{transaction_id}/fido2",
    response_model=FactorsView,
    responses={401: {"description": "the assertion was not accepted (problem+json)"}},
)
async def assertion(
    transaction_id: uuid.UUID, body: ResponseIn, request: Request
) -> FactorsView | JSONResponse:
    """The security key's assertion for the challenge of ``fido2/begin``."""

    def check(session: Session, services: Services) -> FactorCheck:
        keys = load_secrets(request.app)
        return fido_service(session, services, keys).fido_check(transaction_id)

    return await answer_factor(request, transaction_id, check, {"response": body.response})
