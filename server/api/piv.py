"""Routes of PIV smartcards: enrolment (begin, complete), the PIV login factor (begin, the
card's signature) and what the service CA publishes (its certificate and its CRL).

Binary values travel as base64 (standard or URL-safe alphabet, padding optional). The CA is
loaded from the settings' files on the first request that needs it (made there if missing
and ``create_keys`` is on) and kept on the app for later requests.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema
from sqlalchemy.orm import Session

from server.api.authentication import FactorsView, answer_factor
from server.api.deps import ServicesDep, SessionDep, get_caller, in_transaction
from server.api.identities import CredentialManager, CredentialOut, _credential_out
from server.api.schemas import LevelLabel, StrictModel
from server.services.access import Caller, NotAuthenticated, Permission
from server.services.credentials.admission import IN_PERSON
from server.services.login.record import FactorCheck
from server.services.piv.card import SLOT
from server.services.piv.enrolment import CardAnswer
from server.services.piv.login import MAX_CERTIFICATE_SIZE, MAX_SIGNATURE_SIZE, LoginBegun
from server.wiring import Services

MAX_PUBLIC_KEY_SIZE = 512
PKIX_CRL = "application/pkix-crl"
PEM_FILE = "application/x-pem-file"
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")

router = APIRouter(tags=["piv"])


def _base64_decoder(limit: int) -> Callable[[object], bytes]:
    """Turns base64 text of at most ``limit`` decoded bytes into bytes (a ValueError, hence a
    422 answer, otherwise)."""

    def decode(value: object) -> bytes:
        if not isinstance(value, str):
            raise ValueError("expected base64 text")
        if not value or len(value) > _encoded_length(limit) or not _BASE64.fullmatch(value):
            raise ValueError(f"expected base64 of 1 to {limit} bytes")
        text = value.rstrip("=").replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None

    return decode


def _encoded_length(limit: int) -> int:
    return (limit + 2) // 3 * 4


def _base64_schema(limit: int, description: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "maxLength": _encoded_length(limit),
            "description": description,
        }
    )


PublicKeyDer = Annotated[
    bytes,
    BeforeValidator(_base64_decoder(MAX_PUBLIC_KEY_SIZE)),
    _base64_schema(MAX_PUBLIC_KEY_SIZE, "the new key's SubjectPublicKeyInfo, DER, base64"),
]
CertificateDer = Annotated[
    bytes,
    BeforeValidator(_base64_decoder(MAX_CERTIFICATE_SIZE)),
    _base64_schema(MAX_CERTIFICATE_SIZE, "the card's certificate (slot 9A), DER, base64"),
]
AttestationDer = Annotated[
    bytes,
    BeforeValidator(_base64_decoder(MAX_CERTIFICATE_SIZE)),
    _base64_schema(MAX_CERTIFICATE_SIZE, "a PIV attestation certificate, DER, base64"),
]
SignatureDer = Annotated[
    bytes,
    BeforeValidator(_base64_decoder(MAX_SIGNATURE_SIZE)),
    _base64_schema(MAX_SIGNATURE_SIZE, "an ECDSA signature, DER, base64"),
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- schemas --------------------------------------------------------------------------------


class EnrolBeginOut(BaseModel):
    state_id: uuid.UUID
    challenge: str = Field(description="base64; sign ENROL_DOMAIN || state id || challenge")
    expires_at: dt.datetime
    slot: str = SLOT


PAIRING_PATTERN = r"^[A-Za-z0-9 -]{12,24}$"


class EnrolCompleteIn(StrictModel):
    public_key: PublicKeyDer
    signature: SignatureDer
    card_id: str = Field(
        min_length=2, max_length=64, pattern=r"^[0-9a-f]+$", description="CHUID GUID/FASC-N, hex"
    )
    code: str | None = Field(
        default=None,
        min_length=12,
        max_length=24,
        pattern=PAIRING_PATTERN,
        description="the enrolment code the citizen's account page shows, for an enrolment "
        "that page began: with it no API key is needed (any case; dashes and spaces ignored)",
    )
    # The card's proof that it generated the key (Yubico's PIV attestation): without one that
    # chains to a configured card vendor, the key is refused as "not generated on a card".
    attestation: AttestationDer | None = Field(
        default=None, description="the card's attestation of the new key (INS F9 over slot 9A)"
    )
    attestation_intermediate: AttestationDer | None = Field(
        default=None, description="the certificate of the card's attestation key (object 5FFF01)"
    )
    card_serial: int | None = Field(
        default=None,
        ge=0,
        le=2**32 - 1,
        description="the card's vendor serial number, which the attestation must name",
    )


class EnrolCompleteOut(BaseModel):
    credential: CredentialOut
    certificate: str = Field(description="the card's new certificate, DER, base64")


class ChallengeOut(BaseModel):
    """The card's challenge, and what the card's program shows the person and asks them to
    confirm before the card signs (a login id and pairing code may be a phisher's)."""

    challenge: str = Field(description="base64; sign LOGIN_DOMAIN || transaction id || challenge")
    service_provider: str = Field(description="the id of the service provider logged in to")
    service_provider_name: str = Field(
        description="the service provider's name to show the person (its id where the "
        "service knows no other name)"
    )
    level: LevelLabel = Field(description="the level the login asks for")
    begun_at: dt.datetime = Field(description="when the service provider began the login")
    expires_at: dt.datetime = Field(description="when the login ends unless extended")
    paired_with_browser: bool = Field(
        description="whether a browser opened the login's pages, so that only a program "
        "given that browser's pairing code (as this one was) goes on with it"
    )


def _pairing_field() -> Any:
    return Field(
        default=None,
        min_length=12,
        max_length=24,
        pattern=PAIRING_PATTERN,
        description="the pairing code the login's page shows, when a browser opened the login "
        "(any case; dashes and spaces ignored)",
    )


class PivBeginIn(StrictModel):
    pairing: str | None = _pairing_field()


class PivSignatureIn(StrictModel):
    certificate: CertificateDer
    signature: SignatureDer
    origin: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$",
        description="the service origin the client signed for (one of the service's origins)",
    )
    pairing: str | None = _pairing_field()


# --- wiring -----------------------------------------------------------------------------------


# --- enrolment --------------------------------------------------------------------------------


@router.post("/identities/{identity_id}/piv/enrol/begin", status_code=201)
def enrol_begin(
    identity_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    caller: CredentialManager,
) -> EnrolBeginOut:
    """A challenge for the card to sign with a key it generates in slot 9A (an operator
    enrols the card with the person present)."""
    # An operator's key is the in-person path: no login level is asked (credentials.admission).
    begun = services.piv(session, caller.actor).enrol_begin(identity_id, added_by=IN_PERSON)
    return EnrolBeginOut(
        state_id=begun.state_id, challenge=_b64(begun.challenge), expires_at=begun.expires_at
    )


# The same scheme as the API key's everywhere else; here the key may be left out.
_optional_bearer = HTTPBearer(auto_error=False, description="an API key: akk_<id>_<secret>")


async def optional_credential_manager(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
) -> Caller | None:
    """The caller of an API key that may manage credentials, or None when no key is sent (a
    key that is sent must be valid and allowed, as on every other route)."""
    if credentials is None:
        return None
    caller = await get_caller(request, credentials)
    caller.require(Permission.MANAGE_CREDENTIALS)
    return caller


@router.post("/piv/enrolments/{state_id}/complete", status_code=201)
def enrol_complete(
    state_id: uuid.UUID,
    body: EnrolCompleteIn,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    caller: Annotated[Caller | None, Depends(optional_credential_manager)],
) -> EnrolCompleteOut:
    """The card's public key and its signature over the challenge; the answer is the new
    active credential and the certificate to write to the card. An operator's API key may
    complete any enrolment; without one, the enrolment code a citizen's account page showed
    completes the enrolment that page began (a wrong code closes it)."""
    if caller is None and body.code is None:
        raise NotAuthenticated(
            "no API key or enrolment code",
            detail="send an operator's API key, or the enrolment code the account page shows",
        )
    if caller is not None:
        actor = caller.actor
    else:
        # The citizen whose page showed the code (the service checks the code itself).
        actor = f"citizen:{services.piv(session).enrolment_owner(state_id)}"
    answer = CardAnswer(
        public_key_der=body.public_key,
        signature=body.signature,
        card_id=body.card_id,
        attestation=body.attestation,
        attestation_intermediate=body.attestation_intermediate,
        card_serial=body.card_serial,
    )
    enrolled = services.piv(session, actor).enrol_complete(state_id, answer, code=body.code)
    return EnrolCompleteOut(
        credential=_credential_out(enrolled.credential),
        certificate=_b64(enrolled.certificate.public_bytes(Encoding.DER)),
    )


# --- login ------------------------------------------------------------------------------------


@router.post("/authentications/{transaction_id}/piv/begin")
async def login_begin(
    transaction_id: uuid.UUID, request: Request, body: PivBeginIn | None = None
) -> ChallengeOut:
    """A fresh challenge for the card to sign in an identified login. A login a browser
    opened takes it only with that browser's pairing code (its smartcard page shows it), so
    no one else can replace the challenge the card is about to sign."""
    pairing = body.pairing if body is not None else None

    def work(session: Session, services: Services) -> LoginBegun:
        services.authentication(session).admit(transaction_id, pairing=pairing)
        return services.piv(session).login_begin(transaction_id)

    begun = await in_transaction(request, work)
    return ChallengeOut(
        challenge=_b64(begun.challenge),
        service_provider=begun.provider,
        service_provider_name=begun.provider_name,
        level=begun.level,
        begun_at=begun.begun_at,
        expires_at=begun.expires_at,
        paired_with_browser=begun.paired_with_browser,
    )


@router.post(
    "/authentications/{transaction_id}/piv",
    response_model=FactorsView,
    responses={401: {"description": "the card's signature was not accepted (problem+json)"}},
)
async def login_signature(
    transaction_id: uuid.UUID, body: PivSignatureIn, request: Request
) -> FactorsView:
    """The card's certificate and its signature over the challenge of ``piv/begin`` (with
    the pairing code when a browser opened the login)."""

    submitted = {
        "certificate": body.certificate,
        "signature": body.signature,
        "origin": body.origin,
    }

    def check(session: Session, services: Services) -> FactorCheck:
        # The signature is verified before the transaction's first statement, in a read
        # session of its own: the certificate and the two ECDSA checks hold no lock.
        origins = services.settings.rp_origins
        login = services.piv(session).login_check(transaction_id, origins)
        return login.beforehand(services.read_sessions, submitted)

    return await answer_factor(request, transaction_id, check, submitted, pairing=body.pairing)


# --- publication ------------------------------------------------------------------------------


@router.get(
    "/piv/crl",
    response_class=Response,
    tags=["discovery"],
    responses={200: {"content": {PKIX_CRL: {}}, "description": "the CRL, DER"}},
)
def crl(request: Request, session: SessionDep, services: ServicesDep) -> Response:
    """The CA's certificate revocation list (DER), signed now."""
    der = services.piv(session).crl_der()
    return Response(content=der, media_type=PKIX_CRL)


@router.get(
    "/piv/ca.pem",
    response_class=Response,
    tags=["discovery"],
    responses={200: {"content": {PEM_FILE: {}}, "description": "the CA certificate, PEM"}},
)
def ca_certificate(request: Request, services: ServicesDep) -> Response:
    """The CA certificate that card certificates chain to."""
    return Response(content=services.piv_ca.certificate_pem, media_type=PEM_FILE)
