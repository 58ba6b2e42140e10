"""What every page of a login shares: the login opened by this browser (or the page that says
why it cannot go on: its time ran out, or this browser's session did), who asked for it by
the name people know (``provider_name``), the level, progress, its time limit with the texts
of the time-limit dialog, and the way back to the provider."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import Request
from starlette.responses import Response

from server.domain.model import Level
from server.services.authentication import AuthenticationService, Standing
from server.services.desk_logins import desk_of
from server.services.login.ending import LoginTrace
from server.services.login.errors import (
    LoginBoundElsewhere,
    TransactionClosed,
    TransactionExpired,
)
from server.services.login.providers import SELF_SERVICE, display_name
from server.services.oidc.registry import ProviderRegistry
from server.web.browser import Browser
from server.web.render import page
from server.wiring import Services

PENDING = "self_service_login"  # browser data: the self-service login this browser began
# Browser data: the person number a service's OpenID request named (login_hint), for its login.
LOGIN_HINT = "login_hint"
# Browser data: the login that steps up from this browser's single sign-on session.
SSO_STEP_UP = "sso_step_up"
# What the provider's return URL is told when the person goes back without logging in.
CANCELLED = "access_denied"
TIMED_OUT = "login_expired"


def service(session: Any, services: Services) -> AuthenticationService:
    return services.authentication(session, actor="web")


def provider_name(browser: Browser, services: Services, provider: str) -> str:
    """The provider as people know it: the self-service's own name in the page's language,
    a registered provider's name (``providers add --name``), its API key's display name, else
    its id."""
    if provider == SELF_SERVICE:
        return browser.t("login.self_service_name")
    desk = desk_of(provider)
    if desk is not None:
        return browser.t("login.desk_name", organisation=desk)
    registered = ProviderRegistry(browser.db).name(provider)
    return registered or display_name(provider, services.api_keys.display_name)


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query (what it had is kept, first)."""
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def hinted_number(browser: Browser, transaction_id: uuid.UUID) -> str:
    """The person number the service named for this login (``login_hint``), to pre-fill."""
    hint = browser.data(LOGIN_HINT)
    if isinstance(hint, dict) and hint.get("id") == str(transaction_id):
        return str(hint.get("number", ""))
    return ""


def opened(
    request: Request,
    browser: Browser,
    session: Any,
    services: Services,
    transaction_id: uuid.UUID,
) -> Standing | Response:
    """The login, claimed by this browser (the first to open it), and where it stands; or,
    when this browser can no longer go on with it because its time ran out, because the
    browser session that opened it ended, or because it is finished (cancelled, say), the page
    that says so and offers to start again."""
    auth = service(session, services)
    try:
        auth.claim(transaction_id, browser.binding)
        standing = auth.standing(transaction_id, browser.binding)
    except TransactionExpired:
        trace = services.login_ending(session).trace(transaction_id)
        return ended(request, browser, services, trace, "expired")
    except TransactionClosed:
        trace = services.login_ending(session).trace(transaction_id)
        if not trace.finished:  # pragma: no cover - open() refuses only finished logins
            raise
        return ended(request, browser, services, trace, "finished")
    except LoginBoundElsewhere:
        trace = services.login_ending(session).trace(transaction_id)
        if not trace.claimed_by(browser.lapsed_binding):
            raise
        return ended(request, browser, services, trace, "session")
    # The login is this browser's now: its session is stored, so that it ends (and the login
    # with it, for this browser) after the idle time, as any session does.
    browser.keep()
    return standing


def ended(
    request: Request, browser: Browser, services: Services, trace: LoginTrace, reason: str
) -> Response:
    """The login's time is up (``reason`` "expired"), the session that opened it ended
    ("session"), or it is finished ("finished": cancelled, refused or completed): what
    happened, and the way to start the same login again."""
    t = browser.t
    provider = provider_name(browser, services, trace.provider)
    if trace.provider == SELF_SERVICE or (trace.return_url and not trace.completed):
        action = (f"/login/{trace.transaction_id}/restart", restart_label(browser, trace, provider))
        then = None
    else:
        action = ("/", t("error.home"))
        then = t("login.start_again_there", provider=provider)
    return page(
        request,
        browser,
        "login_ended.html",
        title=t("login.finished_title" if reason == "finished" else "login.time_up_title"),
        status=409 if reason == "finished" else 410,
        message=t(f"login.time_up_{reason}", provider=provider),
        then=then,
        action=action,
    )


def restart_label(browser: Browser, trace: LoginTrace | Standing, provider: str) -> str:
    """The button that starts the same login again: back to the provider, which begins a new
    one, or the self-service's own sign-in."""
    own = trace.provider if isinstance(trace, LoginTrace) else trace.transaction.service_provider
    if own == SELF_SERVICE:
        return browser.t("login.restart_self_service")
    return browser.t("login.restart_provider", provider=provider)


def context(
    browser: Browser, services: Services, standing: Standing, step: int, *, finishes: bool = False
) -> dict[str, Any]:
    """What every login page shows: who asked, the level, progress, the login's time limit
    (and the dialog's texts for it), and the way back. ``finishes``: this step ends the login
    (a smartcard reaches the level alone)."""
    transaction = standing.transaction
    t = browser.t
    provider = provider_name(browser, services, transaction.service_provider)
    total = step if finishes else 2 if standing.required is Level.LOW else 3
    goes_back = transaction.service_provider == SELF_SERVICE or bool(transaction.return_url)
    return {
        "tid": str(transaction.id),
        "provider": provider,
        "level": t(f"login.level_{standing.required.name.lower()}"),
        "step": min(step, total),
        "total": total,
        "expires_at": transaction.expires_at,
        "can_extend": standing.extensions_left > 0,
        "step_up": standing.achieved is not None and not standing.reached,
        "login_warn_s": services.settings.timeout_warning_s,
        "cancel_label": (
            t("login.cancel_back", provider=provider) if goes_back else t("login.cancel")
        ),
        "restart": (
            (f"/login/{transaction.id}/restart", restart_label(browser, standing, provider))
            if goes_back
            else ("/", t("error.home"))
        ),
        "time_up_text": t("login.time_up_dialog", provider=provider),
        "sso_step_up": browser.data(SSO_STEP_UP) == str(transaction.id),
    }


def before_begun(
    request: Request, browser: Browser, services: Services, level: Level
) -> dict[str, Any]:
    """What the self-service sign-in's first page shows before its login exists (the login is
    begun when the person sends the CPR-nummer, so opening the page writes nothing): as
    ``context`` without the login's own time limit, and a way back that is a link (there is
    no login to cancel yet)."""
    t = browser.t
    provider = provider_name(browser, services, SELF_SERVICE)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return {
        "tid": "",
        "provider": provider,
        "level": t(f"login.level_{level.name.lower()}"),
        "step": 1,
        "total": 3,
        "can_extend": False,
        "step_up": False,
        "cancel_label": t("login.cancel_back", provider=provider),
        "cancel_href": "/account" if browser.identity_id is not None else "/",
        "restart": (here, t("session.start_again")),
        "action": here,  # the CPR-nummer goes to this same address
        "sso_step_up": False,
    }


def show(
    request: Request,
    browser: Browser,
    services: Services,
    standing: Standing,
    template: str,
    title_key: str,
    *,
    step: int,
    status: int = 200,
    finishes: bool = False,
    **extra: Any,
) -> Response:
    return page(
        request,
        browser,
        template,
        title=browser.t(title_key),
        status=status,
        **context(browser, services, standing, step, finishes=finishes),
        **extra,
    )
