"""How a login's pages end: done (self-service signs the browser in; a provider's login goes
back to the provider's return URL, which completes it through the API), cancelled by the
person (the login is closed and the provider's return URL told ``error=access_denied``), or
started again after its time ran out (the provider's return URL told ``error=login_expired``,
so the provider begins a new login; the self-service begins its own).

Going back to a provider is another origin, and the pages' CSP allows forms to go to the
service only (``form-action 'self'``): a redirect that answers a form is refused by the
browser. So the last step's form leads to a page of the service, which links to the return
URL and follows the link by script (a link is no form, and the script is the service's own
file); without script the person follows it."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from server.api.deps import ServicesDep, SessionDep
from server.domain.errors import UnknownSubject
from server.domain.model import Level
from server.services.desk_logins import desk_of
from server.services.login.providers import SELF_SERVICE
from server.web import login_frame as frame
from server.web.browser import Browser, BrowserDep, CheckedForm
from server.web.render import local_path, mark_page, page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

_LEFT = "login_left"  # browser data: the login this browser cancelled, and where it goes back


class _NothingHere(UnknownSubject):
    code = "not-found"


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
    standing = frame.opened(request, browser, session, services, transaction_id)
    if isinstance(standing, Response):
        return standing
    if not standing.reached:
        return redirect(browser, f"/login/{transaction_id}/choose")
    transaction = standing.transaction
    pending = browser.data(frame.PENDING)
    if (
        transaction.service_provider == SELF_SERVICE
        and isinstance(pending, dict)
        and pending.get("id") == str(transaction_id)
    ):
        outcome = frame.service(session, services).complete(transaction_id, provider=SELF_SERVICE)
        assert transaction.identity_id is not None  # noqa: S101 - reached implies identified
        browser.sign_in_citizen(transaction.identity_id, outcome.level.name.lower())
        return redirect(browser, local_path(str(pending.get("next", "")), "/account"))
    if desk_of(transaction.service_provider) is not None and browser.operator_key is not None:
        # A person logged in on the operator's screen: back to the console, which finishes it
        # (and refuses an operator whose desk it is not).
        return redirect(browser, f"/console/desk-logins/{transaction_id}")
    provider = frame.provider_name(browser, services, transaction.service_provider)
    t = browser.t
    if transaction.return_url:
        back = frame.with_query(transaction.return_url, transaction=str(transaction_id))
        return _going_back(
            request,
            browser,
            t("login.done_title"),
            t("login.returning", provider=provider),
            (back, t("login.continue_to", provider=provider)),
        )
    return page(
        request,
        browser,
        "login_done.html",
        title=t("login.done_title"),
        provider=provider,
    )


@router.post("/login/{transaction_id}/cancel")
def cancel(
    transaction_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
    form: CheckedForm,
) -> Response:
    """The person gives up: the login is closed (audited), and the browser goes back to the
    provider's return URL with ``error=access_denied`` (the self-service's: its front page)."""
    standing = frame.opened(request, browser, session, services, transaction_id)
    if isinstance(standing, Response):
        return standing
    transaction = services.login_ending(session).cancel(transaction_id, browser.binding)
    if transaction.service_provider == SELF_SERVICE:
        browser.remember(frame.PENDING, None)
        browser.flash("login.cancelled_flash")
        return redirect(browser, "/account" if browser.identity_id is not None else "/")
    back = None
    if transaction.return_url:
        back = frame.with_query(
            transaction.return_url, error=frame.CANCELLED, transaction=str(transaction_id)
        )
    browser.remember(
        _LEFT, {"id": str(transaction_id), "provider": transaction.service_provider, "url": back}
    )
    return redirect(browser, f"/login/{transaction_id}/cancelled")


@router.get("/login/{transaction_id}/cancelled")
def cancelled(
    transaction_id: uuid.UUID, request: Request, browser: BrowserDep, services: ServicesDep
) -> Response:
    """After a cancel: the way back to the provider, for the browser that cancelled."""
    left = browser.data(_LEFT)
    if not isinstance(left, dict) or left.get("id") != str(transaction_id):
        raise _NothingHere("no cancelled login here", detail="no such page")
    t = browser.t
    provider = frame.provider_name(browser, services, str(left.get("provider", "")))
    back = left.get("url")
    if isinstance(back, str) and back:
        return _going_back(
            request,
            browser,
            t("login.cancelled_title"),
            t("login.cancelled_returning", provider=provider),
            (back, t("login.back_to_provider", provider=provider)),
        )
    return _going_back(
        request,
        browser,
        t("login.cancelled_title"),
        t("login.cancelled_text", provider=provider),
        None,
    )


def _going_back(
    request: Request,
    browser: Browser,
    title: str,
    message: str,
    link: tuple[str, str] | None,
) -> Response:
    return page(request, browser, "login_return.html", title=title, message=message, link=link)


@router.get("/login/{transaction_id}/restart")
def restart(
    transaction_id: uuid.UUID,
    browser: BrowserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """Start the same login again, when this browser cannot go on with it (its time ran out,
    or the session that opened it ended): a provider's login goes back to the provider's
    return URL with ``error=login_expired`` (``access_denied`` for one that was cancelled or
    refused; the provider begins a new one either way), the self-service
    begins a new sign-in at the same level. A login this browser can still go on with, or
    one without a return URL, goes to its own page, which says what to do."""
    trace = services.login_ending(session).trace(transaction_id)
    if trace.provider == SELF_SERVICE:
        pending = browser.data(frame.PENDING)
        target = "/account"
        if isinstance(pending, dict) and pending.get("id") == str(transaction_id):
            target = local_path(str(pending.get("next", "")), "/account")
        query = {"next": target}
        if trace.level is Level.HIGH:
            query["level"] = "high"
        return redirect(browser, f"/account/login?{urlencode(query)}")
    mine = not trace.claimed or trace.claimed_by(browser.binding)
    usable = mine and not trace.finished and not trace.expired
    if usable or trace.completed or not trace.return_url:
        return redirect(browser, f"/login/{transaction_id}")
    error = frame.CANCELLED if trace.finished else frame.TIMED_OUT
    back = frame.with_query(trace.return_url, error=error, transaction=str(transaction_id))
    # A link's GET (never a form's answer), so the browser may follow it to another origin.
    return browser.apply(RedirectResponse(back, status_code=303))
