"""Browser sessions of the pages: a random token in an HttpOnly, SameSite=Lax cookie (named
``__Host-akk_session`` and Secure behind TLS), and, once the browser has something to keep, a
server-side row keyed by the token's SHA-256 digest, holding the language, who signed in and
the pages' state.

A browser that has kept nothing has no row: opening the pages anyone can open writes nothing.
Its cookie carries the token with a mark (``_UNKEPT``), and the row is made (``keep``) when
something must outlast the request: a login it opens, a message for the next page, signing
in. The cookie then loses its mark, so a browser whose session ended (its row expired, or
swept away) is still told apart from one that never kept anything, and is told so
(``lapsed``) rather than starting afresh silently.

A session ends after ``IDLE`` without a request (``AKKREDITIV_SESSION_IDLE_S``) or ``ABSOLUTE``
after it began. Signing in (citizen or operator) and signing out always issue a new token
(session fixation: a token planted before the login is worth nothing after it). Every POST
form carries the CSRF token of the browser's token, an HMAC of it under a key of the
service's (a signed double-submit token: it needs no row, and only the browser holding the
cookie has it, so a form, or a login, cannot be forced on this browser from another site),
and, when the browser sends one, an Origin header that must be the pages' own. Behind TLS
means the pages' origin (``own_origin``: the external origin, when a proxy ends TLS) is https.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.responses import Response

from server.api.deps import ServicesDep, SessionDep
from server.domain.errors import DomainError, Refused, TooLarge
from server.services.access import Caller
from server.storage.web_sessions import WebSessionRepository
from server.storage.web_tables import BrowserKind, WebSession
from server.web.i18n import LANGUAGES, Translator, negotiate, parse_language

COOKIE = "akk_session"
SECURE_COOKIE = "__Host-akk_session"
LANG_COOKIE = "akk_lang"
IDLE = dt.timedelta(minutes=20)  # the default of AKKREDITIV_SESSION_IDLE_S
ABSOLUTE = dt.timedelta(hours=12)
# A page warns this long before the session ends, offering more time (WCAG 2.2.1): the
# default of AKKREDITIV_TIMEOUT_WARNING_S.
WARN_BEFORE = dt.timedelta(minutes=2)
# The cookie of a browser whose session has no row yet: the token after this mark.
_UNKEPT = "a."
_MAX_TOKEN = 128
# The pages' forms are small: at most 64 fields of at most 64 KiB each, and no files.
FORM_FIELDS = 64
FORM_PART_BYTES = 64 * 1024


class FormRejected(Refused):
    """A form without this session's CSRF token, or from another origin."""

    code = "form-rejected"


class FormTooLarge(TooLarge):
    """A form over the pages' limits (``FORM_FIELDS``, ``FORM_PART_BYTES``)."""

    code = "request-too-large"
    default_detail = "a form may have at most 64 fields of at most 64 KiB each"


class SignInRequired(DomainError):
    """A page for a signed-in citizen or operator, opened by a browser that is not."""

    code = "sign-in-required"

    def __init__(self, kind: BrowserKind, detail: str = "sign in first") -> None:
        super().__init__(f"{kind.value} sign-in required", detail=detail)
        self.kind = kind


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _binding(token: str) -> str:
    return hashlib.sha256(b"akkreditiv-login-binding\x00" + token.encode()).hexdigest()


def _csrf(key: bytes, token: str) -> str:
    """The CSRF token of the forms of the browser holding ``token``."""
    mac = hmac.digest(key, b"akkreditiv-csrf\x00" + token.encode(), "sha256")
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Browser:
    """The browser behind a page request, with its session row: stored (``kept``), or, for a
    browser that has kept nothing yet, one made for this request alone. Changes to the
    cookie are kept here and written to the response by ``apply`` (``render`` and
    ``redirect`` do it)."""

    db: Session
    row: WebSession
    secure: bool
    token: str
    csrf_key: bytes
    kept: bool = True  # whether ``row`` is stored
    issued: bool = False  # the cookie to send (a new token, a rotated or a newly kept one)
    lang_cookie: str | None = None  # a language choice to remember in the browser
    idle: dt.timedelta = IDLE
    # The binding of the session this browser's cookie named, when that session had ended
    # (a login it opened can then say why this browser cannot go on with it).
    lapsed_binding: str | None = None

    # --- what the pages read ------------------------------------------------------------

    @property
    def lang(self) -> str:
        return self.row.lang

    @property
    def t(self) -> Translator:
        return Translator(self.row.lang)

    @property
    def csrf(self) -> str:
        return self.row.csrf_token

    @property
    def binding(self) -> str:
        """What a login this browser opens is bound to: derived from the token (so only
        this browser has it), distinct from the row's key."""
        return _binding(self.token)

    @property
    def identity_id(self) -> uuid.UUID | None:
        return self.row.identity_id if self.row.kind is BrowserKind.CITIZEN else None

    @property
    def operator_key(self) -> str | None:
        """The API key id an operator signed in with (None for anyone else)."""
        return self.row.operator_key if self.row.kind is BrowserKind.OPERATOR else None

    @property
    def expires_at(self) -> dt.datetime:
        return self.row.expires_at

    def data(self, key: str) -> Any:
        return (self.row.data or {}).get(key)

    # --- what the pages change ----------------------------------------------------------

    def keep(self) -> None:
        """Store the session: this browser now has something that must outlast the request
        (a login it opened, page state). The token stays, so its CSRF token and the binding
        of a login it claimed stay too; the cookie loses its mark."""
        if self.kept:
            return
        now = _now()
        self.row.created_at = self.row.last_seen = now
        self.row.expires_at = now + self.idle
        WebSessionRepository(self.db).add(self.row)
        self.kept = True
        self.issued = True

    def remember(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON) in the session's page state (storing the session if it was
        not); None forgets it."""
        data = dict(self.row.data or {})
        if value is None:
            if key not in data:
                return
            data.pop(key)
        else:
            data[key] = value
            self.keep()
        self.row.data = data

    def flash(self, key: str, **params: str) -> None:
        """A message (catalogue key) for the next page to show once."""
        self.remember("flash", {"key": key, "params": params})

    def take_flash(self) -> dict[str, Any] | None:
        flash = self.data("flash")
        if flash is not None:
            self.remember("flash", None)
        return flash if isinstance(flash, dict) else None

    def choose_language(self, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}")
        self.row.lang = lang
        self.lang_cookie = lang

    def sign_in_citizen(self, identity_id: uuid.UUID, level: str) -> None:
        self._rotate(BrowserKind.CITIZEN)
        self.row.identity_id = identity_id
        self.row.level = level

    def sign_in_operator(self, caller: Caller) -> None:
        self._rotate(BrowserKind.OPERATOR)
        self.row.operator_key = caller.key_id
        self.row.operator_name = caller.name
        self.row.operator_role = "+".join(sorted(caller.roles))

    def sign_out(self) -> None:
        self._rotate(BrowserKind.ANONYMOUS)

    def extend(self) -> None:
        """More time: the idle limit starts again (never past the absolute limit). A session
        not stored has nothing to lose: its time starts again at each request anyway."""
        now = _now()
        self.row.last_seen = now
        self.row.expires_at = min(now + self.idle, self.row.created_at + ABSOLUTE)

    def _rotate(self, kind: BrowserKind) -> None:
        old, was_kept = self.row, self.kept
        token = secrets.token_urlsafe(32)
        self.row = _row(token, self.csrf_key, kind, old.lang, self.idle)
        if was_kept:
            self.db.delete(old)
        WebSessionRepository(self.db).add(self.row)
        self.token = token
        self.kept = True
        self.issued = True

    def check_form(self, form: FormData, origin: str | None, own_origin: str) -> None:
        """``FormRejected`` unless the form carries this session's CSRF token and, when the
        browser said where it comes from, comes from this service."""
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), self.csrf.encode()):
            raise FormRejected("CSRF token missing or wrong", detail="the form has expired")
        if origin is not None and origin != "null" and origin != own_origin:
            raise FormRejected(f"form from {origin!r}", detail="the form came from elsewhere")

    def apply(self, response: Response) -> Response:
        """Write the session and language cookies onto ``response``."""
        if self.issued:
            response.set_cookie(
                SECURE_COOKIE if self.secure else COOKIE,
                self.token if self.kept else _UNKEPT + self.token,
                max_age=int(ABSOLUTE.total_seconds()),
                path="/",
                secure=self.secure,
                httponly=True,
                samesite="lax",
            )
        if self.lang_cookie is not None:
            response.set_cookie(
                LANG_COOKIE,
                self.lang_cookie,
                max_age=365 * 24 * 3600,
                path="/",
                secure=self.secure,
                httponly=True,
                samesite="lax",
            )
        return response


def own_origin(request: Request) -> str:
    """Where people reach the pages: the external origin when one is set (behind a reverse
    proxy), else the request's own (its Host header, and its scheme as a trusted proxy
    forwarded it)."""
    external: str | None = request.app.state.settings.external_origin
    if external is not None:
        return external
    url = request.url
    default = {"http": 80, "https": 443}.get(url.scheme)
    port = f":{url.port}" if url.port is not None and url.port != default else ""
    return f"{url.scheme}://{url.hostname}{port}"


def is_secure(request: Request) -> bool:
    """Whether the browser reached the pages over TLS (their cookies are then Secure)."""
    return own_origin(request).startswith("https://")


def _load(db: Session, token: str, now: dt.datetime) -> WebSession | None:
    row = WebSessionRepository(db).get(_digest(token))
    if row is None or row.expires_at <= now or row.created_at + ABSOLUTE <= now:
        return None
    return row


def _row(
    token: str, csrf_key: bytes, kind: BrowserKind, lang: str, idle: dt.timedelta
) -> WebSession:
    """A session row for ``token`` (not stored)."""
    now = _now()
    return WebSession(
        token_digest=_digest(token),
        kind=kind,
        csrf_token=_csrf(csrf_key, token),
        lang=lang,
        data={},
        created_at=now,
        last_seen=now,
        expires_at=now + idle,
    )


def _cookie_token(value: str | None) -> tuple[str | None, bool]:
    """The token a session cookie carries, and whether its session was stored (unmarked)."""
    if not value or len(value) > _MAX_TOKEN:
        return None, False
    if value.startswith(_UNKEPT):
        return value[len(_UNKEPT) :] or None, False
    return value, True


def get_browser(request: Request, db: SessionDep) -> Browser:
    """The request's browser. Its stored session, if its cookie names one that has not ended;
    a browser that has kept nothing goes on with its token and no row (nothing is read or
    written for it); one without a token, or whose session ended, gets a new token."""
    secure = is_secure(request)
    token, stored = _cookie_token(request.cookies.get(SECURE_COOKIE if secure else COOKIE))
    chosen = parse_language(request.cookies.get(LANG_COOKIE))
    idle = dt.timedelta(seconds=request.app.state.settings.session_idle_s)
    csrf_key = request.app.state.services.web_csrf_key
    row = _load(db, token, _now()) if token is not None and stored else None
    if row is not None and token is not None:
        browser = Browser(db=db, row=row, secure=secure, token=token, csrf_key=csrf_key, idle=idle)
        if chosen is not None and chosen != row.lang:
            row.lang = chosen
        browser.extend()
    else:
        lapsed = _binding(token) if token is not None and stored else None
        fresh = token is None or lapsed is not None
        if token is None or fresh:
            token = secrets.token_urlsafe(32)
        lang = chosen or negotiate(request.headers.get("accept-language"))
        browser = Browser(
            db=db,
            row=_row(token, csrf_key, BrowserKind.ANONYMOUS, lang, idle),
            secure=secure,
            token=token,
            csrf_key=csrf_key,
            kept=False,
            issued=fresh,
            idle=idle,
            lapsed_binding=lapsed,
        )
        # For the error pages: a form from the ended session is refused as such.
        request.state.session_lapsed = lapsed is not None
    # What an error page needs, kept apart from the row (a failed request's rollback
    # expires the row before the error page is made).
    request.state.page_lang = browser.lang
    return browser


BrowserDep = Annotated[Browser, Depends(get_browser)]


async def _form(request: Request) -> FormData:
    try:
        return await request.form(
            max_files=0, max_fields=FORM_FIELDS, max_part_size=FORM_PART_BYTES
        )
    except HTTPException as exc:
        # What the form parser refuses in a URL-encoded form (the pages' only kind) is its
        # size: a field too long, or too many fields.
        kind = request.headers.get("content-type", "")
        if exc.status_code == 400 and kind.startswith("application/x-www-form-urlencoded"):
            raise FormTooLarge("form over the pages' limits") from exc
        raise


# The POSTed form before any check (for work a page does before its transaction begins).
RawForm = Annotated[FormData, Depends(_form)]


def cookie_binding(request: Request) -> str | None:
    """What the browser's session cookie binds a login to (``Browser.binding``), read from the
    cookie alone, without the database: None without a cookie token."""
    cookie = request.cookies.get(SECURE_COOKIE if is_secure(request) else COOKIE)
    token, _stored = _cookie_token(cookie)
    return None if token is None else _binding(token)


def checked_form(request: Request, browser: BrowserDep, form: RawForm) -> FormData:
    """The POSTed form, after its CSRF token and origin are checked."""
    browser.check_form(form, request.headers.get("origin"), own_origin(request))
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def citizen(browser: BrowserDep) -> uuid.UUID:
    """The signed-in citizen's identity id (``SignInRequired`` if none)."""
    identity_id = browser.identity_id
    if identity_id is None:
        raise SignInRequired(BrowserKind.CITIZEN)
    return identity_id


def operator(browser: BrowserDep, services: ServicesDep) -> Caller:
    """The signed-in operator, with the roles their API key has now: removing the key (or
    changing its roles) takes effect on the console's next request."""
    key_id = browser.operator_key
    caller = services.api_keys.caller(key_id) if key_id is not None else None
    if caller is None:
        raise SignInRequired(BrowserKind.OPERATOR)
    return caller


CitizenDep = Annotated[uuid.UUID, Depends(citizen)]
OperatorDep = Annotated[Caller, Depends(operator)]
