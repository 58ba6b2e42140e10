"""The account pages' answer to a session below the level a credential needs (see
``credentials.admission``): which level, which the session has, a login at that level that
comes back to the page, and the way through an operator."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from starlette.responses import Response

from server.domain.model import CredentialKind, Level
from server.services.credentials.admission import LevelTooLowForCredential
from server.web.account_rows import TOKEN_PAGES
from server.web.browser import Browser
from server.web.credential_display import CredentialNames
from server.web.render import page

LOGIN_PAGE = "/account/login"
# The add pages, by the last part of their path (the password's is /account/password).
ADD_PAGES: dict[str, CredentialKind] = {
    **TOKEN_PAGES,
    "security-key": CredentialKind.FIDO2,
    "smartcard": CredentialKind.PIV,
    "password": CredentialKind.PASSWORD,
}


def login_level(browser: Browser) -> Level | None:
    """The level of the login that signed ``browser`` in (None if it is not known)."""
    try:
        return Level.parse(browser.row.level or "")
    except ValueError:
        return None


def level_page(request: Request, browser: Browser, refused: LevelTooLowForCredential) -> Response:
    """Why this session may not add the credential (403), with a link to a login at the level
    it needs that comes back here, and the way through an operator."""
    t = browser.t
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    required = t(f"account.level_{refused.required.label}")
    achieved = t(f"account.level_{refused.login_level.label}") if refused.login_level else ""
    return page(
        request,
        browser,
        "account_level.html",
        title=t("account.level_title", level=required),
        kind=CredentialNames(t).kind(refused.kind),
        required=required,
        achieved=achieved,
        high=refused.required is Level.HIGH,
        login_url=f"{LOGIN_PAGE}?level={refused.required.label}&next={quote(target, safe='/')}",
        status=403,
    )
