"""Logout: RP-initiated (``end_session_endpoint``, OpenID Connect RP-Initiated Logout 1.0) ends
the browser's SSO session, checking ``id_token_hint`` (an ID token this service signed) and
``post_logout_redirect_uri`` (registered by the provider the hint was issued to); back-channel
logout (OpenID Connect Back-Channel Logout 1.0) then POSTs a ``logout_token`` with the
session's ``sid`` and the back-channel event to every provider the session served."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import jwt
from fastapi import APIRouter, Depends, Request
from starlette.background import BackgroundTask
from starlette.responses import RedirectResponse, Response

from server.api.deps import ServicesDep, SessionDep
from server.oidc.routes import LOGOUT_PATH, AuthorizationRefused, make_provider
from server.services.oidc.sso import Delivery
from server.web.browser import Browser, BrowserDep, RawForm
from server.web.login_frame import with_query
from server.web.render import mark_page, page
from server.wiring import Services

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
DELIVERY_TIMEOUT_S = 5.0


@router.get(LOGOUT_PATH, dependencies=[Depends(mark_page)])
def logout(
    request: Request, browser: BrowserDep, session: SessionDep, services: ServicesDep
) -> Response:
    return _logout(request, dict(request.query_params), browser, session, services)


@router.post(LOGOUT_PATH, dependencies=[Depends(mark_page)])
def logout_by_form(
    request: Request,
    form: RawForm,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    params = {name: value for name, value in form.items() if isinstance(value, str)}
    return _logout(request, params, browser, session, services)


def _logout(
    request: Request,
    params: dict[str, str],
    browser: Browser,
    session: Any,
    services: Services,
) -> Response:
    provider = make_provider(session, services)
    hint = _hint(services, params.get("id_token_hint"), provider.issuer)
    client_id = str(hint.get("aud") or params.get("client_id") or "")
    if hint and params.get("client_id") and params["client_id"] != client_id:
        raise AuthorizationRefused(
            "client_id is not the hint's", detail="invalid_request: client_id and hint differ"
        )
    back = params.get("post_logout_redirect_uri")
    if back is not None:
        client = provider.registry.find(client_id) if client_id else None
        if client is None or back not in client.post_logout_redirect_uris:
            raise AuthorizationRefused(
                "post_logout_redirect_uri not registered",
                detail="invalid_request: the address to return to is not registered",
            )
    sid = hint.get("sid")
    deliveries = provider.sso.end(browser.binding, sid if isinstance(sid, str) else None)
    provider.sso_logout_audit(client_id or None, len(deliveries))
    tokens = [_signed(services, provider.issuer, delivery) for delivery in deliveries]
    task = BackgroundTask(_deliver, tokens) if tokens else None
    if back is not None:
        state = params.get("state")
        target = with_query(back, state=state) if state else back
        return browser.apply(RedirectResponse(target, status_code=303, background=task))
    t = browser.t
    answer = page(
        request,
        browser,
        "login_return.html",
        title=t("login.logged_out_title"),
        message=t("login.logged_out_text"),
        link=None,
    )
    answer.background = task
    return answer


def _hint(services: Services, token: str | None, issuer: str) -> dict[str, Any]:
    """The claims of an ID token this service signed (expired ones too: a hint names who and
    which session, it authenticates nothing); refused when not ours."""
    if not token:
        return {}
    keys = {key["kid"]: key for key in services.published_keys()["keys"]}
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        if kid not in keys:
            raise jwt.InvalidTokenError("unknown key")
        claims: dict[str, Any] = jwt.decode(
            token,
            jwt.PyJWK(keys[kid]).key,
            algorithms=[keys[kid]["alg"]],
            issuer=issuer,
            options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
        )
    except jwt.InvalidTokenError as exc:
        raise AuthorizationRefused(
            f"bad id_token_hint: {exc}", detail="invalid_request: the id_token_hint is not ours"
        ) from None
    return claims


def _signed(services: Services, issuer: str, delivery: Delivery) -> tuple[str, str, str]:
    token = services.signer.sign({"iss": issuer, **delivery.claims})
    return delivery.client_id, delivery.uri, token


def _deliver(tokens: list[tuple[str, str, str]]) -> None:
    """POST each logout token (after the logout was committed and answered); a provider that
    does not answer 200 is logged, the logout stands."""
    for client_id, uri, token in tokens:
        try:
            answer = httpx.post(uri, data={"logout_token": token}, timeout=DELIVERY_TIMEOUT_S)
            if answer.status_code not in (200, 204):
                log.warning("back-channel logout to %s answered %s", client_id, answer.status_code)
        except httpx.HTTPError as exc:
            log.warning("back-channel logout to %s failed: %s", client_id, exc)
