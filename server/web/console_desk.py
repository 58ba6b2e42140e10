"""Console pages: a person becomes the bank's customer by logging in at its desk. The operator
begins a desk login; the person completes it through the ordinary login pages (on this screen,
or on their own device at the address shown) at Substantial or above; the operator finishes it
here, and the person is recorded as served at the operator's organisation (``DeskLogins``)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from server.domain.errors import DomainError
from server.services.access import Permission
from server.services.login.errors import (
    StepUpRequired,
    TransactionClosed,
    TransactionExpired,
    TransactionUnknown,
)
from server.web.browser import CheckedForm, own_origin
from server.web.console_access import ConsoleNotFound, Desk, DeskDep
from server.web.render import mark_page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

# The desk logins this operator began in this browser session (the newest few).
_BEGUN = "console.desk_logins"
_KEPT = 5
# A login that can no longer be finished: start a new one.
_ENDED = (TransactionClosed, TransactionExpired, TransactionUnknown)


def _begun(desk: Desk) -> list[dict[str, Any]]:
    kept = desk.browser.data(_BEGUN)
    return [entry for entry in kept if isinstance(entry, dict)] if isinstance(kept, list) else []


def _mine(desk: Desk, transaction_id: uuid.UUID) -> None:
    """The desk login must be one this operator began in this session."""
    wanted = {"id": str(transaction_id), "key": desk.caller.key_id}
    if wanted not in _begun(desk):
        raise ConsoleNotFound("no such desk login", detail="no such desk login")


def _page(
    desk: Desk,
    transaction_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    login_path = f"/login/{transaction_id}"
    return desk.page(
        "console_desk_login.html",
        title=desk.browser.t("console.desk.title"),
        status=status,
        errors=errors,
        login_path=login_path,
        login_address=f"{own_origin(desk.request)}{login_path}",
        action=f"/console/desk-logins/{transaction_id}",
    )


@router.post("/console/desk-logins")
def begin(form: CheckedForm, desk: DeskDep) -> Response:
    """Begin a login at this desk for the person in front of the operator."""
    desk.caller.require(Permission.VIEW_IDENTITY)
    transaction = desk.services.desk_logins(desk.db, desk.caller).begin()
    entry = {"id": str(transaction.id), "key": desk.caller.key_id}
    desk.browser.remember(_BEGUN, [*_begun(desk)[-(_KEPT - 1) :], entry])
    return redirect(desk.browser, f"/console/desk-logins/{transaction.id}")


@router.get("/console/desk-logins/{transaction_id}")
def desk_login(transaction_id: uuid.UUID, desk: DeskDep) -> Response:
    """Where the person logs in, and the operator's button to finish once they have."""
    desk.caller.require(Permission.VIEW_IDENTITY)
    _mine(desk, transaction_id)
    return _page(desk, transaction_id)


@router.post("/console/desk-logins/{transaction_id}")
def finish(transaction_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """The person has logged in: they are recorded as the organisation's customer (audited),
    and the operator sees their page. A login not completed yet, or ended, says so."""
    desk.caller.require(Permission.VIEW_IDENTITY)
    _mine(desk, transaction_id)
    t = desk.browser.t
    try:
        identity_id = desk.services.desk_logins(desk.db, desk.caller).finish(transaction_id)
    except StepUpRequired:
        desk.db.rollback()
        return _page(desk, transaction_id, status=409, errors=[("", t("console.desk.not_yet"))])
    except _ENDED:
        desk.db.rollback()
        return _page(desk, transaction_id, status=409, errors=[("", t("console.desk.ended"))])
    except DomainError as exc:
        status, errors = desk.refusal(exc, "")
        return _page(desk, transaction_id, status=status, errors=errors)
    desk.browser.remember(
        _BEGUN, [entry for entry in _begun(desk) if entry.get("id") != str(transaction_id)]
    )
    desk.browser.flash("console.desk.done")
    return redirect(desk.browser, f"/console/people/{identity_id}")
