"""Rendering the pages: one Jinja2 environment (autoescaping, strict undefined), ``page``
and ``redirect`` that also write the browser's cookies, and the error pages.

Errors of page routes become pages, not problem+json: a router dependency marks the request
as a page request, and the app's exception handlers (wrapped by ``install_error_pages``) render
those in the browser's language, with the status the API would answer. The transaction of a
failed request is rolled back by then, so an error page sets no session cookie.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server.api.problems import status_of
from server.domain.errors import DomainError, Unavailable
from server.storage.errors import StorageError
from server.storage.web_tables import BrowserKind
from server.web.browser import Browser, SignInRequired
from server.web.credential_display import CredentialNames
from server.web.i18n import LANGUAGE_NAMES, LANGUAGES, Translator, negotiate, parse_language

log = logging.getLogger(__name__)

_TEMPLATES = Path(__file__).parent / "templates"
ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

Handler = Callable[[Request, Exception], Awaitable[Response]]


def mark_page(request: Request) -> None:
    """Router dependency of every page route: its errors are answered as pages."""
    request.state.page = True


def _clock(value: dt.datetime, lang: str) -> str:
    local = value.astimezone()
    return local.strftime("%H.%M" if lang == "da" else "%H:%M")


def page(
    request: Request,
    browser: Browser,
    template: str,
    *,
    status: int = 200,
    title: str,
    **context: Any,
) -> Response:
    """``template`` rendered for ``browser`` (its language, CSRF token and cookies).

    ``title`` is the page's own title (a catalogue text); pages with form errors pass
    ``errors`` (a list of ``(field_id, message)``) and the title says so first (WCAG 3.3.1).
    Every template has ``names``, the one way credentials are named (``credential_display``).
    """
    t = browser.t
    errors: list[tuple[str, str]] = list(context.pop("errors", []) or [])
    full_title = f"{t('common.error_prefix')} {title}" if errors else title
    html = ENVIRONMENT.get_template(template).render(
        t=t,
        lang=browser.lang,
        languages=[(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        csrf=browser.csrf,
        path=request.url.path,
        here=_here(request),
        page_title=title,
        full_title=full_title,
        errors=errors,
        flash=browser.take_flash(),
        signed_in=_signed_in(browser),
        session_expires=browser.expires_at.isoformat(),
        session_warn_s=request.app.state.settings.timeout_warning_s,
        clock=lambda value: _clock(value, browser.lang),
        names=CredentialNames(t),
        **context,
    )
    return browser.apply(HTMLResponse(html, status_code=status))


def redirect(browser: Browser, url: str) -> Response:
    """303 See Other to a local ``url`` (after a POST: the browser GETs the next page)."""
    if not url.startswith("/") or url.startswith("//"):
        raise ValueError(f"not a local path: {url!r}")
    return browser.apply(RedirectResponse(url, status_code=303))


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _signed_in(browser: Browser) -> str | None:
    kind = browser.row.kind
    if kind is BrowserKind.CITIZEN:
        return "citizen"
    if kind is BrowserKind.OPERATOR:
        return "operator"
    return None


@dataclass(frozen=True)
class Support:
    """How people reach the eID support (``AKKREDITIV_SUPPORT_PHONE``, ``_EMAIL``), for the
    pages that say where to get help; an empty one is not shown."""

    phone: str = ""
    email: str = ""

    @property
    def tel(self) -> str:
        """The phone number as a ``tel:`` link wants it: the digits and a leading plus."""
        digits = "".join(c for c in self.phone if c.isdigit())
        return f"+{digits}" if self.phone.startswith("+") else digits

    @classmethod
    def of(cls, request: Request) -> Support:
        settings = request.app.state.settings
        return cls(settings.support_phone.strip(), settings.support_email.strip())


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this site (for ``next=`` parameters), else ``default``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in value):
        # A control character is never a path: a CR LF would split a header, and a NUL cannot
        # be kept in the session's JSON on PostgreSQL.
        return default
    return value


# --- error pages ------------------------------------------------------------------------

_SIGN_IN_PAGES: Mapping[BrowserKind, str] = {
    BrowserKind.CITIZEN: "/account/login",
    BrowserKind.OPERATOR: "/console/login",
}


# A login's pages: an error there may offer to start that login again.
_LOGIN_PATH = re.compile(r"^/login/([0-9a-fA-F-]{36})(?:/|$)")
_RESTARTABLE = frozenset({"transaction-expired", "session-expired"})


def _error_page(request: Request, status: int, code: str) -> Response:
    if code == "form-rejected" and getattr(request.state, "session_lapsed", False):
        # The form came from a page whose session had ended: say that, not "expired form".
        code = "session-expired"
    login = _LOGIN_PATH.match(request.url.path)
    restart = f"/login/{login.group(1)}/restart" if login and code in _RESTARTABLE else None
    lang = (
        getattr(request.state, "page_lang", None)
        or parse_language(request.cookies.get("akk_lang"))
        or negotiate(request.headers.get("accept-language"))
    )
    t = Translator(lang)
    key = f"error.{code}"
    message = t(key) if t.has(key) else t("error.generic")
    title = t(f"error.title.{code}") if t.has(f"error.title.{code}") else t("error.title")
    html = ENVIRONMENT.get_template("error.html").render(
        t=t,
        lang=lang,
        languages=[(c, LANGUAGE_NAMES[c]) for c in LANGUAGES],
        csrf="",
        path=request.url.path,
        here=_here(request),
        page_title=title,
        full_title=title,
        errors=[],
        flash=None,
        signed_in=None,
        session_expires="",
        session_warn_s=0,
        message=message,
        code=code,
        status=status,
        restart=restart,
        support=Support.of(request),
    )
    return HTMLResponse(html, status_code=status)


def asks_for_page(request: Request) -> bool:
    """Whether a browser sent the request from a page (it asks for HTML first): for answers
    made before a route is known, such as a body over the limit."""
    return _wants_page(request) or request.headers.get("accept", "").startswith("text/html")


def error_page(request: Request, exc: Exception) -> Response:
    """The error page of ``exc``, in the browser's language, with the status the API answers."""
    status, code = _code_of(exc)
    return _error_page(request, status, code)


def _code_of(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, DomainError):
        return status_of(exc), exc.code
    if isinstance(exc, StorageError):
        status = status_of(exc)
        return status, {404: "not-found", 409: "conflict"}.get(status, "internal")
    if isinstance(exc, RequestValidationError):
        return 400, "invalid-request"
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, {404: "not-found", 405: "method-not-allowed"}.get(
            exc.status_code, "http-error"
        )
    return 500, "internal"


def _wants_page(request: Request) -> bool:
    if getattr(request.state, "page", False):
        return True
    accept = request.headers.get("accept", "")
    return request.method == "GET" and accept.startswith("text/html")


def install_error_pages(app: FastAPI) -> None:
    """Wrap the app's exception handlers: page requests get error pages."""
    for cls in (
        DomainError,
        StorageError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        previous = app.exception_handlers.get(cls)
        app.add_exception_handler(cls, _page_or(previous))


def _page_or(previous: Any) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if not _wants_page(request):
            if previous is None:
                raise exc
            answer: Response = await previous(request, exc)
            return answer
        if isinstance(exc, SignInRequired):
            target = _SIGN_IN_PAGES[exc.kind] + "?next=" + quote(_here(request), safe="/")
            return RedirectResponse(target, status_code=303)
        status, code = _code_of(exc)
        if isinstance(exc, Unavailable):
            log.warning("page %s %s: unavailable: %s", request.method, request.url.path, exc)
        elif status >= 500:
            log.exception("page %s %s failed", request.method, request.url.path, exc_info=exc)
        answer = _error_page(request, status, code)
        if isinstance(exc, DomainError) and exc.retry_after is not None:
            answer.headers["Retry-After"] = str(exc.retry_after)
        return answer

    return handle
