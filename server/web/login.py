"""The login pages: a service provider's login (``/login/<id>``, begun through the API) and the
citizen's sign-in to self-service (``/account/login``), step by step: the person number, then
credentials until the provider's level is reached, then back to the provider.

The first browser to open a login's pages claims it (``AuthenticationService.claim``): every
step is checked against that browser's binding, so a second browser, or an API client,
cannot go on with a login someone is doing here. The smartcard, which signs in a program
outside the browser, is paired with it by the code its page shows (``pairing_code``). The
pages never tell whether an account exists: the same answer for any person number and the
same list of credentials for anyone.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Request
from fido2.webauthn import UserVerificationRequirement
from starlette.responses import RedirectResponse, Response

from server.api.deps import ServicesDep, SessionDep
from server.domain.errors import FactorRejected, UnknownSubject
from server.domain.model import AuthenticatorKind, Level
from server.services.authentication import AuthenticationService, Standing
from server.services.errors import InvalidPersonNumber
from server.services.factors import PasswordCheck, otp_check
from server.services.login.errors import NoMoreTime, TemporarilyBlocked, Throttled
from server.services.login.gate import IDENTIFIED, STARTED, pairing_code
from server.services.login.providers import SELF_SERVICE
from server.services.login.record import FactorCheck
from server.services.login.record import kinds as proven_kinds
from server.services.person_number import PersonNumber
from server.web.browser import Browser, BrowserDep, CheckedForm, own_origin
from server.web.render import local_path, mark_page, page, redirect
from server.wiring import Services

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

_PENDING = "self_service_login"  # browser data: the self-service login this browser began

# The credentials a page offers, always all of them (so the list reveals no account), each
# with the factor kinds that count as having used it (a step-up offers the others).
METHODS: Mapping[str, frozenset[str]] = {
    "password": frozenset({AuthenticatorKind.PASSWORD}),
    "code": frozenset(
        {
            AuthenticatorKind.CODE_DISPLAY,
            AuthenticatorKind.AUDIO_READER,
            AuthenticatorKind.OTP_TOKEN,
        }
    ),
    "key-card": frozenset({AuthenticatorKind.KEY_CARD}),
    "security-key": frozenset({AuthenticatorKind.FIDO2, AuthenticatorKind.FIDO2_UV}),
    "smartcard": frozenset({AuthenticatorKind.PIV}),
}
_TEMPLATES = {
    "password": "login_password.html",
    "code": "login_code.html",
    "key-card": "login_keycard.html",
    "security-key": "login_security_key.html",
    "smartcard": "login_smartcard.html",
}


def _service(session: Any, services: Services) -> AuthenticationService:
    return services.authentication(session, actor="web")


def _standing(
    session: Any, services: Services, browser: Browser, transaction_id: uuid.UUID
) -> Standing:
    """The login, claimed by this browser (the first to open it), and where it stands."""
    service = _service(session, services)
    service.claim(transaction_id, browser.binding)
    return service.standing(transaction_id, browser.binding)


def _used(standing: Standing) -> set[str]:
    factors = set(proven_kinds(standing.transaction.factors))
    return {method for method, kinds in METHODS.items() if kinds & factors}


def _context(
    browser: Browser, standing: Standing, step: int, *, finishes: bool = False
) -> dict[str, Any]:
    """What every login page shows: who asked, the level, progress and the login's expiry.
    ``finishes``: this step ends the login (a smartcard reaches the level alone)."""
    transaction = standing.transaction
    t = browser.t
    provider = transaction.service_provider
    total = step if finishes else 2 if standing.required is Level.LOW else 3
    return {
        "tid": str(transaction.id),
        "provider": t("login.self_service_name") if provider == SELF_SERVICE else provider,
        "level": t(f"login.level_{standing.required.name.lower()}"),
        "step": min(step, total),
        "total": total,
        "expires_at": transaction.expires_at,
        "can_extend": standing.extensions_left > 0,
        "step_up": standing.achieved is not None and not standing.reached,
    }


def _show(
    request: Request,
    browser: Browser,
    standing: Standing,
    template: str,
    title_key: str,
    *,
    step: int,
    status: int = 200,
    finishes: bool = False,
    **context: Any,
) -> Response:
    return page(
        request,
        browser,
        template,
        title=browser.t(title_key),
        status=status,
        **_context(browser, standing, step, finishes=finishes),
        **context,
    )


def _factor_step(standing: Standing) -> int:
    return 2 + len(_used(standing))


# --- the person number -------------------------------------------------------------------------


@router.get("/login/{transaction_id}")
def start(
    transaction_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    standing = _standing(session, services, browser, transaction_id)
    if standing.transaction.state == IDENTIFIED:
        return redirect(browser, f"/login/{transaction_id}/choose")
    return _show(request, browser, standing, "login_start.html", "login.start_title", step=1)


@router.post("/login/{transaction_id}")
def identify(
    transaction_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    form: CheckedForm,
) -> Response:
    """Who logs in: any well-formed number goes on to the credentials, known or not."""
    standing = _standing(session, services, browser, transaction_id)
    typed = str(form.get("person_number", "")).strip()
    try:
        PersonNumber.parse(typed)
    except InvalidPersonNumber:
        key = "login.person_number_missing" if not typed else "login.person_number_invalid"
        return _show(
            request,
            browser,
            standing,
            "login_start.html",
            "login.start_title",
            step=1,
            status=400,
            errors=[("person_number", browser.t(key))],
            typed=typed,
        )
    if standing.transaction.state == STARTED:
        _service(session, services).identify_person(transaction_id, typed, binding=browser.binding)
    return redirect(browser, f"/login/{transaction_id}/choose")


# --- the choice of credential ------------------------------------------------------------------


def _identified(
    session: Any, services: Services, browser: Browser, transaction_id: uuid.UUID
) -> tuple[Standing, Response | None]:
    """The standing, or where to go instead: back to the person number, or on to the end."""
    standing = _standing(session, services, browser, transaction_id)
    if standing.transaction.state == STARTED:
        return standing, redirect(browser, f"/login/{transaction_id}")
    if standing.reached:
        return standing, redirect(browser, f"/login/{transaction_id}/done")
    return standing, None


@router.get("/login/{transaction_id}/choose")
def choose(
    transaction_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    standing, elsewhere = _identified(session, services, browser, transaction_id)
    if elsewhere is not None:
        return elsewhere
    return _choice_page(request, browser, standing)


def _choice_page(
    request: Request, browser: Browser, standing: Standing, errors: list[Any] | None = None
) -> Response:
    used = _used(standing)
    offered = [method for method in METHODS if method not in used]
    return _show(
        request,
        browser,
        standing,
        "login_choose.html",
        "login.step_up_title" if standing.achieved is not None else "login.choose_title",
        step=_factor_step(standing),
        status=400 if errors else 200,
        errors=errors or [],
        methods=offered,
        achieved=(
            browser.t(f"login.level_{standing.achieved.name.lower()}")
            if standing.achieved is not None
            else None
        ),
    )


@router.post("/login/{transaction_id}/choose")
def chosen(
    transaction_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    form: CheckedForm,
) -> Response:
    standing, elsewhere = _identified(session, services, browser, transaction_id)
    if elsewhere is not None:
        return elsewhere
    method = str(form.get("method", ""))
    if method not in METHODS or method in _used(standing):
        first = next((m for m in METHODS if m not in _used(standing)), "password")
        return _choice_page(
            request, browser, standing, [(f"method-{first}", browser.t("login.method_missing"))]
        )
    return redirect(browser, f"/login/{transaction_id}/{method}")


# --- more time, and the end --------------------------------------------------------------------


@router.post("/login/{transaction_id}/extend")
def extend(
    transaction_id: uuid.UUID,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    form: CheckedForm,
) -> Response:
    """More time for the login itself (its own expiry, apart from the browser session's)."""
    service = _service(session, services)
    service.claim(transaction_id, browser.binding)
    try:
        service.extend(transaction_id, browser.binding)
        browser.flash("login.extended")
    except NoMoreTime:
        browser.flash("login.no_more_time")
    return redirect(browser, local_path(str(form.get("next", "")), f"/login/{transaction_id}"))


@router.get("/login/{transaction_id}/done")
def done(
    transaction_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """The level is reached: self-service signs the browser in; a provider's login goes back
    to the provider (which completes it through the API), or says the window may close."""
    standing = _standing(session, services, browser, transaction_id)
    if not standing.reached:
        return redirect(browser, f"/login/{transaction_id}/choose")
    transaction = standing.transaction
    pending = browser.data(_PENDING)
    if (
        transaction.service_provider == SELF_SERVICE
        and isinstance(pending, dict)
        and pending.get("id") == str(transaction_id)
    ):
        outcome = _service(session, services).complete(transaction_id, provider=SELF_SERVICE)
        assert transaction.identity_id is not None  # noqa: S101 - reached implies identified
        browser.sign_in_citizen(transaction.identity_id, outcome.level.name.lower())
        return redirect(browser, local_path(str(pending.get("next", "")), "/account"))
    if transaction.return_url:
        return browser.apply(
            RedirectResponse(_with_transaction(transaction.return_url, transaction_id), 303)
        )
    return _show(request, browser, standing, "login_done.html", "login.done_title", step=99)


def _with_transaction(url: str, transaction_id: uuid.UUID) -> str:
    parts = urlsplit(url)
    extra = urlencode({"transaction": str(transaction_id)})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


# --- the citizen's sign-in to self-service -----------------------------------------------------


@router.get("/account/login")
def account_login(
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    next: str | None = None,
    level: str | None = None,
) -> Response:
    """Self-service needs level Substantial: a login of its own, begun here (no API key),
    which this browser alone may finish. ``level=high`` asks for more (an account page that
    needs it links here): a browser signed in below it logs in again, at that level, and
    comes back to ``next``; one signed in at it goes straight there."""
    target = local_path(next, "/account")
    wanted = max(Level.SUBSTANTIAL, _level_or_low(level))
    if browser.identity_id is not None and _level_or_low(browser.row.level) >= wanted:
        return redirect(browser, target)
    transaction = _service(session, services).begin(SELF_SERVICE, wanted)
    browser.remember(_PENDING, {"id": str(transaction.id), "next": target})
    return redirect(browser, f"/login/{transaction.id}")


def _level_or_low(label: str | None) -> Level:
    try:
        return Level.parse(label or "")
    except ValueError:
        return Level.LOW


# Last: the generic /login/<id>/<method> routes must not shadow the named ones above.
# --- the credentials ---------------------------------------------------------------------------


def _method_page(
    request: Request,
    browser: Browser,
    session: Any,
    services: Services,
    standing: Standing,
    method: str,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    """A credential's page; its own state (a key number, a FIDO2 challenge) made fresh."""
    transaction_id = standing.transaction.id
    extra: dict[str, Any] = {}
    if method == "key-card":
        extra["index"] = services.keycards(session, "web").login_begin(transaction_id)
    elif method == "security-key":
        options = services.fido(session, "web").fido_begin(
            transaction_id, user_verification=UserVerificationRequirement.PREFERRED
        )
        # Inside <script type="application/json">: "</" must not end the element early.
        extra["options_json"] = json.dumps(options).replace("</", "<\\/")
    elif method == "smartcard":
        # The card signs in another program: the code pairs it with this browser's login.
        extra["service_url"] = own_origin(request)
        extra["pairing"] = pairing_code(browser.binding)
    elif method == "code":
        extra["guide_audio"] = f"/speech/{browser.lang}/guide.audio_reader.wav"
    return _show(
        request,
        browser,
        standing,
        _TEMPLATES[method],
        f"login.{method.replace('-', '_')}_title",
        step=_factor_step(standing),
        status=status,
        errors=errors or [],
        finishes=method == "smartcard",
        **extra,
    )


@router.get("/login/{transaction_id}/{method}")
def method_page(
    transaction_id: uuid.UUID,
    method: str,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    if method not in METHODS:
        raise _NoSuchPage("no such login page", detail="no such page")
    standing, elsewhere = _identified(session, services, browser, transaction_id)
    if elsewhere is not None:
        return elsewhere
    return _method_page(request, browser, session, services, standing, method)


@router.post("/login/{transaction_id}/{method}")
def method_submit(
    transaction_id: uuid.UUID,
    method: str,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    form: CheckedForm,
) -> Response:
    """One credential tried; on success, on to the choice (which goes to the end when the
    level is reached), else the same page with the error and a fresh challenge."""
    if method not in METHODS:
        raise _NoSuchPage("no such login page", detail="no such page")
    standing, elsewhere = _identified(session, services, browser, transaction_id)
    if elsewhere is not None:
        return elsewhere
    t = browser.t

    def again(
        status: int, field_id: str, key: str, now: Standing = standing, **values: Any
    ) -> Response:
        """The same credential's page with the error at ``field_id`` and a fresh challenge."""
        errors = [(field_id, t(key, **values))]
        return _method_page(
            request, browser, session, services, now, method, status=status, errors=errors
        )

    name = method.replace("-", "_")
    if method == "smartcard":
        # The card signed through the command line; the button only looks again.
        if "smartcard" in _used(standing):
            return redirect(browser, f"/login/{transaction_id}/choose")
        return again(400, "card-command", "login.smartcard_not_yet")
    field, check, submitted = _factor(request, session, services, method, form)
    if check is None:
        return again(400, field, f"login.{name}_missing")
    source = request.client.host if request.client else "unknown"
    try:
        _service(session, services).verify_factor(
            transaction_id, check, submitted, source=source, binding=browser.binding
        )
    except TemporarilyBlocked as exc:
        minutes = max(1, math.ceil((exc.retry_after or 60) / 60))
        return again(429, field, "login.temporarily_blocked", minutes=minutes)
    except Throttled as exc:
        minutes = max(1, math.ceil((exc.retry_after or 60) / 60))
        return again(429, field, "login.rate_limited", minutes=minutes)
    except FactorRejected:
        # The failure's record (counters, audit) is committed with the page's transaction.
        now = _service(session, services).standing(transaction_id, browser.binding)
        return again(401, field, f"login.{name}_failed", now)
    return redirect(browser, f"/login/{transaction_id}/choose")


def _factor(
    request: Request, session: Any, services: Services, method: str, form: Any
) -> tuple[str, FactorCheck | None, dict[str, Any]]:
    """The field that gets the error, the check (None when nothing was entered) and what
    was entered, for one credential's form."""
    transaction_id = uuid.UUID(request.path_params["transaction_id"])
    if method == "password":
        value = str(form.get("password", ""))
        check: FactorCheck = PasswordCheck(
            services.secrets, services.passwords, services.clock, decoy_hash=services.password_decoy
        )
        return "password", check if value else None, {"password": value}
    if method == "security-key":
        raw = str(form.get("credential", ""))
        try:
            response = json.loads(raw) if raw else None
        except ValueError:
            response = None
        if not isinstance(response, dict):
            return "security-key-button", None, {}
        check = services.fido(session, "web").fido_check(transaction_id)
        return "security-key-button", check, {"response": response}
    code = "".join(str(form.get("code", "")).split())
    if method == "key-card":
        check = services.keycards(session, "web").login_check(transaction_id)
    else:
        check = otp_check(services.secrets, services.clock)
    return "code", check if code else None, {"code": code}


class _NoSuchPage(UnknownSubject):
    code = "not-found"
