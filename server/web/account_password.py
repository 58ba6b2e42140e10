"""The citizen's password page: set one, or change it with the current one. Every problem with
what was typed is told at once (a missing or wrong current password and a new one that is too
weak), not one per submit."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from server.domain.model import CredentialKind, CredentialState
from server.services.errors import WeakPassword, WrongPassword
from server.services.lifecycle_errors import IdentityNotActive
from server.services.passwords import MAX_LENGTH, MIN_LENGTH
from server.web.account import Account, AccountDep
from server.web.account_level import level_page
from server.web.browser import CheckedForm
from server.web.render import mark_page, page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

K = CredentialKind
S = CredentialState
Errors = list[tuple[str, str]]

_PASSWORD_PROBLEMS = {
    "too_short": "account.password_too_short",
    "too_long": "account.password_too_long",
    "repeated_character": "account.password_repeated",
    "blocklisted": "account.password_common",
}


def _has_password(account: Account) -> bool:
    return any(c.kind is K.PASSWORD and c.state is S.ACTIVE for c in account.live())


def _password_page(request: Request, account: Account, errors: Errors | None = None) -> Response:
    browser = account.browser
    has_password = _has_password(account)
    return page(
        request,
        browser,
        "account_password.html",
        title=browser.t("account.password_title" if has_password else "account.password_set_title"),
        has_password=has_password,
        min_length=MIN_LENGTH,
        max_length=MAX_LENGTH,
        errors=errors or [],
        status=400 if errors else 200,
    )


@router.get("/account/password")
def password_form(request: Request, account: AccountDep) -> Response:
    if (refused := account.refused(K.PASSWORD)) is not None:
        return level_page(request, account.browser, refused)
    return _password_page(request, account)


def _weakness(account: Account, new: str) -> str | None:
    """What is wrong with the new password (a text to show), or None if the policy takes it."""
    try:
        account.services.passwords.check_policy(new, avoid=account.identity.name.split())
    except WeakPassword as exc:
        key = _PASSWORD_PROBLEMS.get(str(exc.reason), "account.password_common")
        return account.browser.t(key, min=MIN_LENGTH, max=MAX_LENGTH)
    return None


@router.post("/account/password")
def password_submit(request: Request, account: AccountDep, form: CheckedForm) -> Response:
    browser = account.browser
    if (refused := account.refused(K.PASSWORD)) is not None:
        return level_page(request, account.browser, refused)
    t = browser.t
    current = form.get("current_password")
    new = form.get("new_password")
    current_text = current if isinstance(current, str) and current else None
    new_text = new if isinstance(new, str) else ""
    has_password = _has_password(account)
    errors: Errors = []
    if has_password and current_text is None:
        errors.append(("current_password", t("account.current_missing")))
    if not new_text:
        errors.append(("new_password", t("account.password_missing")))
    elif (weakness := _weakness(account, new_text)) is not None:
        errors.append(("new_password", weakness))
    if errors and current_text is not None and has_password:
        # The current password is checked too, so that a wrong one is told with the rest.
        try:
            account.credentials.check_password(account.identity.id, current_text, record_use=False)
        except WrongPassword:
            errors.insert(0, ("current_password", t("account.current_wrong")))
    if errors:
        return _password_page(request, account, errors)
    try:
        account.credentials.set_password(
            account.identity.id,
            new_text,
            added_by=account.added_by,
            current_password=current_text,
        )
    except WrongPassword:
        key = "account.current_missing" if current_text is None else "account.current_wrong"
        return _password_page(request, account, [("current_password", t(key))])
    except WeakPassword:
        weakness = _weakness(account, new_text) or t("account.password_common")
        return _password_page(request, account, [("new_password", weakness)])
    except IdentityNotActive:
        return _password_page(request, account, [("", t("account.identity_not_active"))])
    browser.flash("account.password_changed")
    return redirect(browser, "/account")
