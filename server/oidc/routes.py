"""The OpenID Provider's endpoints: discovery, authorize (which hands the browser to the login
pages, and makes the code when the login comes back at its level), token and userinfo. Not in
the OpenAPI document: OpenID Connect Discovery describes them."""

from __future__ import annotations

import uuid
from typing import Any

from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
)
from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response

from server.api.deps import ServicesDep, SessionDep, in_transaction
from server.domain.errors import DomainError
from server.domain.model import Level
from server.oidc.client_auth import ALGORITHMS, PrivateKeyJwt
from server.oidc.grants import CodeGrant, IdToken, S256Required
from server.oidc.provider import (
    AUTHORIZE_PATH,
    TOKEN_PATH,
    USERINFO_PATH,
    Incoming,
    Provider,
)
from server.oidc.provider import Request as OAuthRequest
from server.services.authentication import MAX_EXTENSIONS
from server.services.login.errors import StepUpRequired
from server.services.oidc.claims import CLAIMS_SUPPORTED, SUPPORTED_SCOPES, person_claims, subject
from server.services.oidc.grants import authenticated
from server.services.oidc.levels import ACR
from server.services.oidc.params import Ask, BadParameter, parse_ask
from server.services.oidc.registry import ID_TOKEN_ALGS
from server.services.oidc.sso import Authenticated
from server.web.browser import Browser, BrowserDep, RawForm
from server.web.login_frame import LOGIN_HINT, SSO_STEP_UP
from server.web.render import mark_page, redirect
from server.wiring import Services

router = APIRouter(include_in_schema=False)

CONTINUE_PATH = "/authorize/continue"
LOGOUT_PATH = "/end-session"  # /logout is the pages' own sign-out
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"
# Without acr_values a login reaches Substantial: two factors, as public services ask.
DEFAULT_LEVEL = Level.SUBSTANTIAL


class AuthorizationRefused(DomainError):
    """An authorization request that cannot be answered at the relying party's redirect URI
    (no such client, a redirect URI it did not register, a login of another browser)."""

    code = "authorization-refused"


def make_provider(session: Session, services: Services) -> Provider:
    provider = Provider(session, services)
    provider.register_grant(CodeGrant, [S256Required(required=True), IdToken()])
    provider.register_client_auth_method("private_key_jwt", PrivateKeyJwt(provider))
    return provider


# --- discovery ---------------------------------------------------------------------------------


@router.get(DISCOVERY_PATH)
def discovery(services: ServicesDep) -> dict[str, Any]:
    issuer = services.settings.issuer.rstrip("/")
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZE_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "userinfo_endpoint": issuer + USERINFO_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "scopes_supported": list(SUPPORTED_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": list(ID_TOKEN_ALGS),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": [ACR[level] for level in Level],
        "claims_supported": list(CLAIMS_SUPPORTED),
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "prompt_values_supported": ["none", "login"],
        "authorization_response_iss_parameter_supported": True,
        "end_session_endpoint": issuer + LOGOUT_PATH,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "ui_locales_supported": ["da", "en"],
    }


# --- authorize ---------------------------------------------------------------------------------


@router.get(AUTHORIZE_PATH, dependencies=[Depends(mark_page)])
def authorize(
    request: Request, browser: BrowserDep, session: SessionDep, services: ServicesDep
) -> Response:
    return _authorize(request, list(request.query_params.multi_items()), browser, session, services)


@router.post(AUTHORIZE_PATH, dependencies=[Depends(mark_page)])
def authorize_by_form(
    request: Request,
    form: RawForm,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    pairs = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    return _authorize(request, pairs, browser, session, services)


def _authorize(
    request: Request,
    pairs: list[tuple[str, str]],
    browser: Browser,
    session: Session,
    services: Services,
) -> Response:
    """Check the request (client, redirect URI, PKCE, scope, prompt); answer it from the
    browser's SSO session when that reaches the level asked for, else keep it, begin its
    login for this browser and send the browser to the login pages."""
    provider = make_provider(session, services)
    asked = provider.create_oauth2_request(Incoming("GET", AUTHORIZE_PATH, pairs, {}))
    try:
        ask: Ask | None = parse_ask(asked.payload.data, DEFAULT_LEVEL)
    except BadParameter as exc:
        ask, bad = None, exc
    client = provider.query_client(asked.payload.client_id)
    sso = None if client is None or ask is None else _sso(provider, browser, client.row, ask)
    reaches = sso is not None and ask is not None and Level.parse(sso.level) >= ask.level
    reused = sso if reaches else None
    signed_in = None if reused is None else provider.sso.reuse(reused, uuid.uuid4())
    try:
        grant = provider.get_consent_grant(asked, end_user=signed_in)
    except OAuth2Error as error:
        return _refused(provider, asked, error, error.redirect_uri)
    try:
        if ask is None:
            raise InvalidRequestError(bad.description)
        if "openid" not in (asked.scope or "").split():
            raise InvalidScopeError("The openid scope is required.")
    except OAuth2Error as error:
        return _refused(provider, asked, error, grant.redirect_uri)
    client_id = asked.client.get_client_id()
    if reused is not None and signed_in is not None:
        # Single sign-on: the session reached the level; no factor is asked again.
        provider.sso.served(reused, client_id)
        answer: Response = provider.create_authorization_response(
            asked, grant_user=signed_in, grant=grant
        )
        return browser.apply(answer)
    auth = services.authentication(session, actor="oidc")
    transaction = auth.begin(client_id, ask.level, return_url=CONTINUE_PATH)
    auth.claim(transaction.id, browser.binding)
    browser.keep()
    lifetime = transaction.expires_at - transaction.created_at
    kept = {**asked.payload.data, "redirect_uri": grant.redirect_uri}
    provider.grants.keep_request(
        transaction.id, client_id, kept, transaction.created_at + lifetime * (1 + MAX_EXTENSIONS)
    )
    if sso is not None:
        # Logged in below the level asked: the same person steps up, from the credentials.
        auth.identify(transaction.id, sso.identity_id, binding=browser.binding)
        browser.remember(SSO_STEP_UP, str(transaction.id))
    elif ask.person_number is not None:
        browser.remember(LOGIN_HINT, {"id": str(transaction.id), "number": ask.person_number})
    return redirect(browser, f"/login/{transaction.id}")


def _sso(provider: Provider, browser: Browser, client: Any, ask: Ask) -> Any:
    """The browser's SSO session in the client's group that may answer this request: none
    when the request asks for a fresh login, or for one more recent than the session's."""
    if "login" in ask.prompt:
        return None
    sso = provider.sso.current(browser.binding, client.sso_group)
    if sso is None or ask.max_age is None:
        return sso
    age = (provider.now() - sso.auth_time).total_seconds()
    return sso if age <= ask.max_age else None


def _refused(
    provider: Provider, asked: OAuthRequest, error: OAuth2Error, redirect_uri: str | None
) -> Response:
    """An error at the relying party's redirect URI once that URI is known to be its own;
    before that, a page that says the request was refused (never a redirect)."""
    if not redirect_uri:
        raise AuthorizationRefused(
            f"authorization refused: {error.error}",
            detail=f"{error.error}: {error.description or 'the request cannot be answered'}",
        )
    error.redirect_uri = redirect_uri
    error.state = asked.payload.state
    answer: Response = provider.handle_error_response(asked, error)
    return answer


@router.get(CONTINUE_PATH, dependencies=[Depends(mark_page)])
def continue_after_login(
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    transaction: uuid.UUID,
    error: str | None = None,
) -> Response:
    """Where the login pages send the browser back: the login's code (or its error) to the
    relying party's redirect URI, for the browser that did the login alone."""
    provider = make_provider(session, services)
    kept = provider.grants.request(transaction)
    trace = services.login_ending(session, "oidc").trace(transaction)
    if kept is None or not trace.claimed_by(browser.binding):
        raise AuthorizationRefused(
            "no authorization request of this browser",
            detail="this login was not started here for a service; start again at the service",
        )
    asked = OAuthRequest("GET", provider.url(AUTHORIZE_PATH), list(kept.params.items()), {})
    asked.provider = provider
    redirect_uri = str(kept.params["redirect_uri"])
    if error is not None:
        provider.grants.drop_request(kept)
        reason = (
            "The login was cancelled."
            if error == "access_denied"
            else "The login took too long; start again."
        )
        if trace.finished and not trace.completed:
            reason = reason[:-1] + f" before level {trace.level.label} was reached."
        return _refused(provider, asked, AccessDeniedError(reason), redirect_uri)
    auth = services.authentication(session, actor="oidc")
    try:
        done = auth.conclude(transaction, provider=kept.client_id)
    except StepUpRequired:
        return redirect(browser, f"/login/{transaction}/choose")
    return _code(provider, browser, asked, authenticated(done), kept)


def _code(
    provider: Provider,
    browser: Browser,
    asked: OAuthRequest,
    done: Authenticated,
    kept: Any,
) -> Response:
    """The code of a completed login, which the browser's SSO session (in the client's
    group) takes on."""
    try:
        grant = provider.get_consent_grant(asked, end_user=done)
    except OAuth2Error as error:
        return _refused(provider, asked, error, error.redirect_uri)
    done = provider.sso.recorded(browser.binding, asked.client.row, done)
    answer: Response = provider.create_authorization_response(asked, grant_user=done, grant=grant)
    provider.grants.drop_request(kept)
    return browser.apply(answer)


# --- token and userinfo --------------------------------------------------------------------------


@router.post(TOKEN_PATH)
async def token(request: Request) -> Response:
    form = await request.form()
    pairs = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    incoming = Incoming("POST", TOKEN_PATH, pairs, request.headers)

    def work(session: Session, services: Services) -> Response:
        answer: Response = make_provider(session, services).create_token_response(incoming)
        return answer

    return await in_transaction(request, work)


@router.api_route(USERINFO_PATH, methods=["GET", "POST"])
async def userinfo(request: Request) -> Response:
    """The person's claims for a valid access token, sent as a bearer token in the header or
    (RFC 6750 section 2.2) in a form body."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    sent = value.strip() if scheme.lower() == "bearer" else ""
    if request.method == "POST":
        form = await request.form()
        in_body = form.get("access_token")
        if isinstance(in_body, str) and in_body:
            if sent:
                return _bearer_error(400, "invalid_request", "Send the token once.")
            sent = in_body
    if not sent:
        return _bearer_error(401, None, None)

    def work(session: Session, services: Services) -> Response:
        provider = make_provider(session, services)
        row = provider.grants.token(sent)
        client = None if row is None else provider.registry.find(row.client_id)
        person = None if row is None else provider.grants.person(row)
        if row is None or client is None or person is None or "openid" not in row.scope.split():
            return _bearer_error(401, "invalid_token", "The access token is not valid.")
        claims = {"sub": subject(services.pseudonyms, person, client)}
        claims.update(person_claims(client, person, row.scope))
        return JSONResponse(claims)

    return await in_transaction(request, work)


def _bearer_error(status: int, error: str | None, description: str | None) -> Response:
    challenge = 'Bearer realm="akkreditiv"'
    body: dict[str, str] = {}
    if error is not None:
        challenge += f', error="{error}"'
        body["error"] = error
    if description is not None:
        challenge += f', error_description="{description}"'
        body["error_description"] = description
    return JSONResponse(body, status_code=status, headers={"WWW-Authenticate": challenge})
