"""The login pages: a service provider's login (``/login/<id>``, begun through the API) and the
citizen's sign-in to self-service (``/account/login``), step by step: the person number, then
credentials until the provider's level is reached, then back to the provider.

The first browser to open a login's pages claims it (``AuthenticationService.claim``): every
step is checked against that browser's binding, so a second browser, or an API client,
cannot go on with a login someone is doing here. The smartcard, which signs in a program
outside the browser, is paired with it by the code its page shows (``pairing_code``). The
pages never tell whether an account exists: the same answer for any person number and the
same list of credentials for anyone. What every page shares is in ``login_frame``; how a
login ends (done, cancelled, started again) in ``login_end``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fido2.webauthn import UserVerificationRequirement
from starlette.responses import JSONResponse, Response

from server.api.deps import ServicesDep, SessionDep, source_of
from server.domain.errors import FactorRejected, UnknownSubject
from server.domain.model import AuthenticatorKind, CredentialKind, Level
from server.services.authentication import Standing
from server.services.errors import InvalidPersonNumber
from server.services.factors import PasswordCheck, otp_check
from server.services.fido_login import AssertionVerdict
from server.services.login.errors import NoMoreTime, TemporarilyBlocked, Throttled
from server.services.login.gate import IDENTIFIED, STARTED, pairing_code
from server.services.login.providers import SELF_SERVICE
from server.services.login.record import FactorCheck
from server.services.login.record import kinds as proven_kinds
from server.services.person_number import PersonNumber
from server.web import login_end
from server.web import login_frame as frame
from server.web.browser import (
    Browser,
    BrowserDep,
    CheckedForm,
    RawForm,
    cookie_binding,
    own_origin,
)
from server.web.render import local_path, mark_page, page, redirect
from server.wiring import Services

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

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
# The name each is offered under: the credential's own (``credential_display``); a code comes
# from any of three devices, named together (``login.method_code``).
METHOD_KINDS: Mapping[str, CredentialKind] = {
    "password": CredentialKind.PASSWORD,
    "key-card": CredentialKind.KEY_CARD,
    "security-key": CredentialKind.FIDO2,
    "smartcard": CredentialKind.PIV,
}
_TEMPLATES = {
    "password": "login_password.html",
    "code": "login_code.html",
    "key-card": "login_keycard.html",
    "security-key": "login_security_key.html",
    "smartcard": "login_smartcard.html",
}


def _used(standing: Standing) -> set[str]:
    factors = set(proven_kinds(standing.transaction.factors))
    return {method for method, kinds in METHODS.items() if kinds & factors}


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
    standing = frame.opened(request, browser, session, services, transaction_id)
    if isinstance(standing, Response):
        return standing
    if standing.transaction.state == IDENTIFIED:
        return redirect(browser, f"/login/{transaction_id}/choose")
    typed = frame.hinted_number(browser, transaction_id)
    return _number_page(request, browser, services, standing, typed=typed)


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
    standing = frame.opened(request, browser, session, services, transaction_id)
    if isinstance(standing, Response):
        return standing
    typed, error = _person_number(form, browser)
    if error is not None:
        return _number_page(request, browser, services, standing, error, typed)
    if standing.transaction.state == STARTED:
        frame.service(session, services).identify_person(
            transaction_id, typed, binding=browser.binding
        )
    return redirect(browser, f"/login/{transaction_id}/choose")


def _number_page(
    request: Request,
    browser: Browser,
    services: Services,
    standing: Standing,
    error: tuple[str, str] | None = None,
    typed: str = "",
) -> Response:
    """A provider's login's first page, asking for the CPR-nummer (with what was wrong)."""
    return frame.show(
        request,
        browser,
        services,
        standing,
        "login_start.html",
        "login.start_title",
        step=1,
        status=400 if error else 200,
        errors=[error] if error else [],
        typed=typed,
        action=f"/login/{standing.transaction.id}",
    )


def _person_number(form: Any, browser: Browser) -> tuple[str, tuple[str, str] | None]:
    """The number typed, and the error at its field when it is not a well-formed one."""
    typed = str(form.get("person_number", "")).strip()
    try:
        PersonNumber.parse(typed)
    except InvalidPersonNumber:
        key = "login.person_number_missing" if not typed else "login.person_number_invalid"
        return typed, ("person_number", browser.t(key))
    return typed, None


# --- the choice of credential ------------------------------------------------------------------


def _identified(
    request: Request,
    session: Any,
    services: Services,
    browser: Browser,
    transaction_id: uuid.UUID,
) -> Standing | Response:
    """The standing, or where to go instead: back to the person number, on to the end, or
    the page that says the login cannot go on."""
    standing = frame.opened(request, browser, session, services, transaction_id)
    if isinstance(standing, Response):
        return standing
    if standing.transaction.state == STARTED:
        return redirect(browser, f"/login/{transaction_id}")
    if standing.reached:
        return redirect(browser, f"/login/{transaction_id}/done")
    return standing


@router.get("/login/{transaction_id}/choose")
def choose(
    transaction_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    standing = _identified(request, session, services, browser, transaction_id)
    if isinstance(standing, Response):
        return standing
    return _choice_page(request, browser, services, standing)


def _choice_page(
    request: Request,
    browser: Browser,
    services: Services,
    standing: Standing,
    errors: list[Any] | None = None,
) -> Response:
    used = _used(standing)
    offered = [method for method in METHODS if method not in used]
    return frame.show(
        request,
        browser,
        services,
        standing,
        "login_choose.html",
        "login.step_up_title" if standing.achieved is not None else "login.choose_title",
        step=_factor_step(standing),
        status=400 if errors else 200,
        errors=errors or [],
        methods=offered,
        method_kinds=METHOD_KINDS,
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
    standing = _identified(request, session, services, browser, transaction_id)
    if isinstance(standing, Response):
        return standing
    method = str(form.get("method", ""))
    if method not in METHODS or method in _used(standing):
        first = next((m for m in METHODS if m not in _used(standing)), "password")
        missing = [(f"method-{first}", browser.t("login.method_missing"))]
        return _choice_page(request, browser, services, standing, missing)
    return redirect(browser, f"/login/{transaction_id}/{method}")


# --- more time, and the end --------------------------------------------------------------------


@router.post("/login/{transaction_id}/extend")
def extend(
    transaction_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    form: CheckedForm,
) -> Response:
    """More time for the login itself (its own expiry, apart from the browser session's,
    which any request extends). The time-limit dialog asks in the background and gets JSON
    (the login's and the session's new ends, and whether more time is left); a page
    without script posts the form and comes back to where it was."""
    standing = frame.opened(request, browser, session, services, transaction_id)
    if isinstance(standing, Response):
        return standing
    service = frame.service(session, services)
    try:
        service.extend(transaction_id, browser.binding)
        extended = True
    except NoMoreTime:
        extended = False
    if "application/json" in request.headers.get("accept", ""):
        now = service.standing(transaction_id, browser.binding)
        answer = {
            "expires_at": now.transaction.expires_at.isoformat(),
            "session_expires_at": browser.expires_at.isoformat(),
            "extended": extended,
            "can_extend": now.extensions_left > 0,
        }
        return browser.apply(JSONResponse(answer))
    browser.flash("login.extended" if extended else "login.no_more_time")
    return redirect(browser, local_path(str(form.get("next", "")), f"/login/{transaction_id}"))


# --- the citizen's sign-in to self-service -----------------------------------------------------


@router.get("/account/login")
def account_login(
    request: Request,
    browser: BrowserDep,
    services: ServicesDep,
    next: str | None = None,
    level: str | None = None,
) -> Response:
    """Self-service needs level Substantial: a login of its own, which this browser alone may
    finish. This page asks for the CPR-nummer; the login is begun when it is sent, so opening
    the page writes nothing. ``level=high`` asks for more (an account page that needs it
    links here): a browser signed in below it logs in again, at that level, and comes back
    to ``next``; one signed in at it goes straight there."""
    target, wanted = local_path(next, "/account"), _wanted(level)
    if _signed_in_at(browser, wanted):
        return redirect(browser, target)
    return _sign_in_page(request, browser, services, wanted)


@router.post("/account/login")
def account_login_begin(
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    form: CheckedForm,
    next: str | None = None,
    level: str | None = None,
) -> Response:
    """The CPR-nummer sent: the self-service login is begun, claimed by this browser and told
    who logs in (any well-formed number goes on, known or not), then on to the credentials."""
    target, wanted = local_path(next, "/account"), _wanted(level)
    if _signed_in_at(browser, wanted):
        return redirect(browser, target)
    typed, error = _person_number(form, browser)
    if error is not None:
        return _sign_in_page(request, browser, services, wanted, errors=[error], typed=typed)
    auth = frame.service(session, services)
    transaction = auth.begin(SELF_SERVICE, wanted)
    auth.claim(transaction.id, browser.binding)
    auth.identify_person(transaction.id, typed, binding=browser.binding)
    browser.remember(frame.PENDING, {"id": str(transaction.id), "next": target})
    return redirect(browser, f"/login/{transaction.id}/choose")


def _wanted(level: str | None) -> Level:
    return max(Level.SUBSTANTIAL, _level_or_low(level))


def _signed_in_at(browser: Browser, wanted: Level) -> bool:
    return browser.identity_id is not None and _level_or_low(browser.row.level) >= wanted


def _sign_in_page(
    request: Request,
    browser: Browser,
    services: Services,
    level: Level,
    *,
    errors: list[tuple[str, str]] | None = None,
    typed: str = "",
) -> Response:
    """The self-service sign-in's first page, asking for the CPR-nummer."""
    return page(
        request,
        browser,
        "login_start.html",
        title=browser.t("login.start_title"),
        status=400 if errors else 200,
        errors=errors or [],
        typed=typed,
        **frame.before_begun(request, browser, services, level),
    )


# The end of a login (done, cancel, cancelled, restart): before the generic routes below.
router.include_router(login_end.router)


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
    return frame.show(
        request,
        browser,
        services,
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
    standing = _identified(request, session, services, browser, transaction_id)
    if isinstance(standing, Response):
        return standing
    return _method_page(request, browser, session, services, standing, method)


@dataclass(frozen=True)
class _Beforehand:
    """What a step checked before the page's transaction began: the password's check with
    its Argon2id verdict, or the verdict on a security key's assertion (None: nothing)."""

    password: PasswordCheck | None = None
    assertion: AssertionVerdict | None = None


def _beforehand(
    transaction_id: uuid.UUID, method: str, request: Request, form: RawForm, services: ServicesDep
) -> _Beforehand:
    """The step's CPU-bound check, run before the page's transaction begins (a dependency the
    route names before its browser, whose session's first statement takes the writer's
    lock): a password's Argon2id, a security key's assertion; nothing for the other steps,
    nor for an empty field."""
    source, binding = source_of(request), cookie_binding(request)
    if method == "password" and (value := str(form.get("password", ""))):
        submitted = {"password": value}
        check = services.password_check(transaction_id, submitted, source=source, binding=binding)
        return _Beforehand(password=check)
    if method == "security-key" and isinstance(response := _assertion(form), dict):
        verdict = services.fido_verdict(
            transaction_id, {"response": response}, source=source, binding=binding
        )
        return _Beforehand(assertion=verdict)
    return _Beforehand()


def _assertion(form: Any) -> Any:
    """The security key's assertion the page's script put in the form (JSON), if any."""
    raw = str(form.get("credential", ""))
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


@router.post("/login/{transaction_id}/{method}")
def method_submit(
    transaction_id: uuid.UUID,
    method: str,
    request: Request,
    beforehand: Annotated[_Beforehand, Depends(_beforehand)],
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    form: CheckedForm,
) -> Response:
    """One credential tried; on success, on to the choice (which goes to the end when the
    level is reached), else the same page with the error and a fresh challenge."""
    if method not in METHODS:
        raise _NoSuchPage("no such login page", detail="no such page")
    standing = _identified(request, session, services, browser, transaction_id)
    if isinstance(standing, Response):
        return standing
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
    field, check, submitted = _factor(request, session, services, method, form, beforehand)
    if check is None:
        return again(400, field, f"login.{name}_missing")
    source = source_of(request)
    try:
        frame.service(session, services).verify_factor(
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
        now = frame.service(session, services).standing(transaction_id, browser.binding)
        return again(401, field, f"login.{name}_failed", now)
    return redirect(browser, f"/login/{transaction_id}/choose")


def _factor(
    request: Request,
    session: Any,
    services: Services,
    method: str,
    form: Any,
    beforehand: _Beforehand,
) -> tuple[str, FactorCheck | None, dict[str, Any]]:
    """The field that gets the error, the check (None when nothing was entered) and what
    was entered, for one credential's form (``password``: the password step's check, made
    beforehand)."""
    transaction_id = uuid.UUID(request.path_params["transaction_id"])
    if method == "password":
        return "password", beforehand.password, {"password": str(form.get("password", ""))}
    if method == "security-key":
        response = _assertion(form)
        if not isinstance(response, dict):
            return "security-key-button", None, {}
        fido = services.fido(session, "web")
        check: FactorCheck = fido.fido_check(transaction_id, beforehand.assertion)
        return "security-key-button", check, {"response": response}
    code = "".join(str(form.get("code", "")).split())
    if method == "key-card":
        check = services.keycards(session, "web").login_check(transaction_id)
    else:
        check = otp_check(services.secrets, services.clock)
    return "code", check if code else None, {"code": code}


class _NoSuchPage(UnknownSubject):
    code = "not-found"
