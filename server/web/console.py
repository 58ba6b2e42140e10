"""The operator console of banks and citizen service centres: an operator signs in with their
API key and finds a person by CPR-nummer, sees the identity and its credentials (every view
audited, with the operator as actor), enrols a person with in-person proofing (two operators
for High: the second approves from their own console, or at the first's desk), makes a person
who logs in at the desk the bank's customer, orders, blocks and replaces credentials, suspends,
resumes or closes an identity, and drives an assisted migration from the legacy eID.

Every action goes through the same operations as the API's (``IdentityOperations``) with the
operator as caller, so the same rules hold; the permission each action needs is demanded here
before it runs. The key's roles are read anew on every request (``OperatorDep``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from server.api.deps import ServicesDep, SessionDep
from server.services.access import Permission, Role
from server.services.errors import InvalidPersonNumber
from server.services.identity_operations import IdentityOperations
from server.services.lifecycle_errors import IdentityNotFound
from server.services.person_number import PersonNumber
from server.services.proofing_approvals import is_first
from server.web import (
    console_actions,
    console_approvals,
    console_desk,
    console_enrol,
    console_migration,
    console_proofing,
    console_providers,
)
from server.web.browser import BrowserDep, CheckedForm
from server.web.console_access import ConsoleNotFound, Desk, DeskDep, channels, check_operator_key
from server.web.console_person import ORDERABLE, act, own_credential, person_page
from server.web.render import local_path, mark_page, page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)


@router.get("/console/login")
def login_page(request: Request, browser: BrowserDep, next: str = "/console") -> Response:
    return page(
        request,
        browser,
        "console_login.html",
        title=browser.t("console.login.title"),
        next=local_path(next, "/console"),
    )


@router.post("/console/login")
def login(
    request: Request, browser: BrowserDep, form: CheckedForm, db: SessionDep, services: ServicesDep
) -> Response:
    target = local_path(str(form.get("next", "")), "/console")
    caller, error, status = check_operator_key(
        request, db, services, str(form.get("api_key", "")), "sign_in"
    )
    if caller is None:
        return page(
            request,
            browser,
            "console_login.html",
            title=browser.t("console.login.title"),
            status=status,
            errors=[("api_key", browser.t(error))],
            next=target,
        )
    browser.sign_in_operator(caller)
    return redirect(browser, target)


# --- finding a person -----------------------------------------------------------------------


def _home(desk: Desk, *, status: int = 200, **context: Any) -> Response:
    caller = desk.caller
    # The High proofings waiting: how many are others' for this operator to approve, and how
    # many of their own wait for a colleague.
    waiting = desk.operations().waiting_proofings() if caller.may(Permission.ENROL) else []
    own = sum(1 for pending in waiting if is_first(caller, pending))
    return desk.page(
        "console_home.html",
        title=desk.browser.t("console.home.title"),
        status=status,
        operator=caller,
        roles=sorted(caller.roles),
        may_enrol=caller.may(Permission.ENROL),
        may_migrate=caller.may(Permission.MANAGE_CREDENTIALS) and bool(channels(caller)),
        # A bank acts only on its own customers: a person becomes one by logging in here.
        may_desk_login=caller.serves_own_customers_only and caller.may(Permission.VIEW_IDENTITY),
        may_see_providers=Role.SUPERVISOR in caller.roles,
        waiting_others=len(waiting) - own,
        waiting_own=own,
        **{"person_number": "", **context},
    )


@router.get("/console")
def home(desk: DeskDep) -> Response:
    return _home(desk)


@router.post("/console/search")
def search(form: CheckedForm, desk: DeskDep) -> Response:
    """Find a person by CPR-nummer (posted, so the number stays out of addresses and logs)."""
    browser = desk.browser
    desk.caller.require(Permission.VIEW_IDENTITY)
    typed = str(form.get("person_number", ""))[:64]
    try:
        number = PersonNumber.parse(typed)
    except InvalidPersonNumber:
        error = browser.t("console.search.invalid")
        return _home(desk, status=422, errors=[("person_number", error)], person_number=typed)
    try:
        # A bank operator finds only the bank's own customers: anyone else's number answers
        # as a number nobody has, so the search does not tell who exists elsewhere.
        identity_id = desk.operations().find(number.formatted)
    except IdentityNotFound:
        desk.audit("console.person_searched", {"result": "not_found"})
        error = browser.t("console.search.not_found", number=number.masked)
        return _home(desk, status=404, errors=[("person_number", error)], person_number=typed)
    desk.audit("console.person_searched", {"result": "found", "identity": str(identity_id)})
    return redirect(browser, f"/console/people/{identity_id}")


# --- a person ---------------------------------------------------------------------------------


@router.get("/console/people/{identity_id}")
def person(identity_id: uuid.UUID, desk: DeskDep, credential: str | None = None) -> Response:
    """The person's page; ``credential``: what the person read out of a credential's serial
    number, to find which of theirs it is."""
    return person_page(desk, identity_id, sought=credential)


_StatusAction = Callable[[IdentityOperations, uuid.UUID], object]
# What each status action taken at once needs, and what it does (suspending asks first, see
# ``console_actions``).
_STATUS_ACTIONS: Mapping[str, tuple[Permission, _StatusAction]] = {
    "resume": (Permission.SUSPEND, IdentityOperations.resume),
    "close": (Permission.CLOSE, IdentityOperations.close),
}


@router.post("/console/people/{identity_id}/status")
def change_status(identity_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """Suspend (with a reason) or resume (operators) or close (supervisors) the identity."""
    wanted = str(form.get("action", ""))
    if wanted == console_actions.SUSPEND:
        return console_actions.suspend(desk, identity_id, form)
    if wanted not in _STATUS_ACTIONS:
        raise ConsoleNotFound(f"unknown action {wanted!r}", detail="no such action")
    permission, call = _STATUS_ACTIONS[wanted]
    if wanted == "close" and form.get("confirm_close") != "yes":
        desk.caller.require(Permission.CLOSE)
        error = [("confirm_close-yes", desk.browser.t("console.person.close_unconfirmed"))]
        return person_page(desk, identity_id, status=422, errors=error)
    return act(
        desk,
        identity_id,
        permission,
        lambda ops: call(ops, identity_id),
        f"console.person.done_{wanted}",
    )


@router.post("/console/people/{identity_id}/throttles")
def lift_throttles(identity_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """Lift the person's throttles and temporary blocks, with the reason (audited)."""
    desk.caller.require(Permission.SUSPEND)
    reason = console_actions.reason_of(form)
    if len(reason) < console_actions.REASON_LEAST:
        error = [("lift-reason", desk.browser.t("console.person.lift_reason_missing"))]
        return person_page(desk, identity_id, status=422, errors=error)
    return act(
        desk,
        identity_id,
        Permission.SUSPEND,
        lambda ops: ops.lift_throttles(identity_id, reason),
        "console.person.done_lift",
        field="lift-reason",
    )


@router.post("/console/people/{identity_id}/credentials")
def order(identity_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """Order a device for the person."""
    desk.caller.require(Permission.MANAGE_CREDENTIALS)
    kind = next((k for k in ORDERABLE if k.value == form.get("kind")), None)
    if kind is None:
        error = [(f"kind-{ORDERABLE[0].value}", desk.browser.t("console.order.choose"))]
        return person_page(desk, identity_id, status=422, errors=error)
    return act(
        desk,
        identity_id,
        Permission.MANAGE_CREDENTIALS,
        lambda ops: ops.order(identity_id, kind),
        "console.person.done_order",
        field=f"kind-{kind.value}",
    )


@router.post("/console/people/{identity_id}/credentials/{credential_id}/{action}")
def credential_action(
    identity_id: uuid.UUID, credential_id: uuid.UUID, action: str, form: CheckedForm, desk: DeskDep
) -> Response:
    """Block or replace one of the person's credentials as confirmed with a reason (see
    ``console_actions``), or admit it in person at once (the person at the desk: it counts
    toward their identity assurance now, see ``credentials.admission``)."""
    if action not in (*console_actions.CREDENTIAL_ACTIONS, "admit"):
        raise ConsoleNotFound(f"unknown action {action!r}", detail="no such action")
    desk.caller.require(Permission.MANAGE_CREDENTIALS)
    own_credential(desk, identity_id, credential_id)
    if action != "admit":
        return console_actions.credential_action(desk, identity_id, credential_id, action, form)
    return act(
        desk,
        identity_id,
        Permission.MANAGE_CREDENTIALS,
        lambda ops: ops.admit(credential_id),
        "console.person.done_admit",
    )


router.include_router(console_actions.router)
router.include_router(console_approvals.router)
router.include_router(console_desk.router)
router.include_router(console_enrol.router)
router.include_router(console_migration.router)
router.include_router(console_proofing.router)
router.include_router(console_providers.router)
