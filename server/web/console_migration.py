"""Console pages: an assisted migration from the legacy eID, started and driven by the
operator of a bank or citizen service centre through the migration operations (the API's
rules for who may drive a flow, the flow's failure counting and audit)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from fastapi import APIRouter, Depends
from starlette.datastructures import FormData
from starlette.responses import Response

# Composition, not a route: moves to server/wiring.py with the migration pages' own use of it.
from server.api.deps import source_of
from server.api.problems import status_of
from server.domain.errors import DomainError
from server.services.access import Permission
from server.services.identity_operations import TEXT
from server.services.migration.flow_errors import InvalidChoice
from server.services.migration.flow_model import Authenticator, FlowView
from server.services.migration_operations import (
    ACCESS_ERRORS,
    CODE,
    SERIAL,
    USER_ID,
    ActivationCommand,
    MigrationOperations,
    ProofCommand,
    Start,
)
from server.web.browser import Browser, CheckedForm, own_origin
from server.web.console_access import (
    DOCUMENT_FIELD,
    IN_PERSON_DOCUMENTS,
    ConsoleNotFound,
    Desk,
    DeskDep,
    channel_missing,
    channel_of,
    channels,
    fits,
    message,
    operators_fit,
)
from server.web.render import mark_page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

# Where the person continues a migration on their own (the migration pages' resume link).
RESUME_PATH = "/migrate/{flow_id}"
# The key number to show and the user id typed, per flow, in the operator's browser session.
_FLOWS = "console.flows"
_MAX_FLOWS_KEPT = 10

T = TypeVar("T")


@dataclass(frozen=True)
class _Refused:
    """A refused step as the page tells it: the status, the problem code and, after a failed
    legacy proof, the new key number to show."""

    status: int
    code: str
    index: str = ""


def _operations(desk: Desk) -> MigrationOperations:
    return desk.services.migration_operations(
        desk.db, desk.caller, desk.caller.actor, source_of(desk.request)
    )


def _attempt(desk: Desk, step: Callable[[], T]) -> T | _Refused:
    """``step``'s result, or why it was refused: a failure the flow recorded is kept (committed
    with the page); any other rolls the step back. The operator's own refusal is raised on."""
    try:
        return step()
    except ACCESS_ERRORS:
        raise
    except DomainError as exc:
        if exc.recorded:
            return _Refused(status_of(exc), exc.code, str(exc.extra.get("index") or ""))
        desk.db.rollback()  # nothing of a refused step is kept
        return _Refused(status_of(exc), exc.code)


def _flow_page(
    desk: Desk,
    flow_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    ticked: list[Authenticator] | None = None,
) -> Response:
    """Where the flow stands now, with ``errors`` (and the choice's boxes ``ticked`` as the
    operator left them; by default the proposal)."""
    flow = _attempt(desk, lambda: _operations(desk).view(flow_id))
    if not isinstance(flow, FlowView):
        raise ConsoleNotFound("no such flow", detail="no such flow")
    kept = (desk.browser.data(_FLOWS) or {}).get(str(flow.id), {})
    return desk.page(
        "console_migration.html",
        title=desk.browser.t("console.flow.title"),
        status=status,
        errors=errors,
        flow=flow,
        index=kept.get("index", ""),
        user_id=kept.get("user_id", ""),
        resume=RESUME_PATH.format(flow_id=flow.id),
        resume_url=own_origin(desk.request) + RESUME_PATH.format(flow_id=flow.id),
        authenticators=list(Authenticator),
        ticked=flow.proposal if ticked is None else ticked,
    )


def _keep_flow(browser: Browser, flow_id: uuid.UUID, **values: str) -> None:
    """The key number to show and the user id typed, for the operator's next step."""
    kept = dict(browser.data(_FLOWS) or {})
    entry = {**kept.pop(str(flow_id), {}), **values}
    kept[str(flow_id)] = entry
    browser.remember(_FLOWS, dict(list(kept.items())[-_MAX_FLOWS_KEPT:]))


def _refused_elsewhere(desk: Desk, flow_id: uuid.UUID) -> Response | None:
    """A 403 page if the flow runs on a channel that is not the operator's own assisted one
    (supervisors: any assisted one), so a self-service flow whose id an operator has is not
    driven from the console; ``None`` when the operator may open it. An id nobody has (the
    same answer as for any user id before the legacy proof) is not told apart here."""
    browser, caller = desk.browser, desk.caller
    channel = _operations(desk).channel_of(flow_id)
    if channel is None or channel in channels(caller):
        return None
    desk.audit("console.migration_refused", {"flow": str(flow_id), "channel": channel.value})
    return desk.page(
        "error.html",
        title=browser.t("console.flow.other_channel_title"),
        status=403,
        message=browser.t(
            "console.flow.other_channel", channel=browser.t(f"console.channel.{channel.value}")
        ),
    )


@router.get("/console/migrations")
def migration_start_page(desk: DeskDep) -> Response:
    desk.caller.require(Permission.MANAGE_CREDENTIALS)
    return _start_page(desk)


def _start_page(
    desk: Desk,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    values: Mapping[str, str] | None = None,
) -> Response:
    return desk.page(
        "console_migration_start.html",
        title=desk.browser.t("console.migrate.title"),
        status=status,
        errors=errors,
        channels=channels(desk.caller),
        documents=IN_PERSON_DOCUMENTS,
        values={"user_id": "", "document_kind": "", **(values or {})},
    )


def _start_errors(desk: Desk, values: Mapping[str, str]) -> list[tuple[str, str]]:
    """What the API's start request would refuse: the user id, the channel and the document
    (in the page's order), else the operator's name."""
    browser, caller = desk.browser, desk.caller
    errors: list[tuple[str, str]] = []
    if not fits(USER_ID, values["user_id"]):
        errors.append(("user_id", browser.t("console.migrate.user_id_invalid")))
    if not values["channel"]:
        errors.append(channel_missing(browser, caller))
    if values["document_kind"] not in IN_PERSON_DOCUMENTS:
        errors.append((DOCUMENT_FIELD, browser.t("console.enrol.document_missing")))
    if not errors and not operators_fit([caller.name]):
        errors.append(("", browser.t("console.enrol.operator_name_invalid")))
    return errors


@router.post("/console/migrations")
def migration_start(form: CheckedForm, desk: DeskDep) -> Response:
    """Start an assisted migration for a legacy user id on the operator's channel, with this
    operator as caller and as the operator present."""
    browser, caller = desk.browser, desk.caller
    caller.require(Permission.MANAGE_CREDENTIALS)
    values = {key: str(form.get(key, ""))[:64].strip() for key in ("user_id", "document_kind")}
    channel = channel_of(form, caller)
    values["channel"] = channel.value if channel else ""
    errors = _start_errors(desk, values)
    if errors or channel is None:
        return _start_page(desk, status=422, errors=errors, values=values)
    start = Start(values["user_id"], channel, values["document_kind"], (caller.name,))
    started = _attempt(desk, lambda: _operations(desk).start(start))
    if isinstance(started, _Refused):
        errors = [("user_id", message(browser, started.code))]
        return _start_page(desk, status=started.status, errors=errors, values=values)
    flow_id = started.view.id
    desk.audit("console.migration_started", {"flow": str(flow_id)})
    _keep_flow(browser, flow_id, index=started.index, user_id=values["user_id"])
    return redirect(browser, f"/console/migrations/{flow_id}")


@router.get("/console/migrations/{flow_id}")
def migration(flow_id: uuid.UUID, desk: DeskDep) -> Response:
    """Where the assisted flow stands, the person's resume link, and its next step."""
    desk.caller.require(Permission.MANAGE_CREDENTIALS)
    refused = _refused_elsewhere(desk, flow_id)
    if refused is not None:
        return refused
    return _flow_page(desk, flow_id)


def _length(value: str, most: int) -> bool:
    return 0 < len(value) <= most


def _invalid_field(step: str, text: Mapping[str, str]) -> str | None:
    """The first of the step's values (in the API request's order) that the API would refuse,
    or ``None``; only the values a step sends are checked."""
    checks: dict[str, bool] = {}
    if step == "prove":
        checks = {
            "user_id": fits(USER_ID, text.get("user_id", "")),
            "password": _length(text.get("password", ""), 256),
            "code": fits(CODE, text.get("code", "")),
        }
    elif step == "confirm":
        name = text.get("name", "")
        checks = {
            "person_number": _length(text.get("person_number", ""), 32),
            "name": _length(name, 200) and fits(TEXT, name),
        }
    elif step == "activate":
        given = {key: text[key] for key in ("password", "serial", "code") if text.get(key)}
        checks = {
            "password": _length(given.get("password", "-"), 1024),
            "serial": "serial" not in given or fits(SERIAL, given["serial"]),
            "code": "code" not in given
            or (_length(given["code"], 64) and fits(TEXT, given["code"])),
        }
    return next((field for field, fine in checks.items() if not fine), None)


# The most authenticators a choice may name (the API's limit; each is chosen once anyway).
MAX_CHOSEN = 5
# The id an error about the choice links to: the group's first box.
KINDS_FIELD = f"kinds-{next(iter(Authenticator)).value}"
_KNOWN = {kind.value: kind for kind in Authenticator}


def _ticked(form: FormData) -> list[Authenticator]:
    """The known authenticators the form ticks, to tick them again on an error."""
    return [_KNOWN[k] for k in form.getlist("kinds") if isinstance(k, str) and k in _KNOWN]


def _chosen(form: FormData) -> list[Authenticator] | None:
    """The authenticators the operator ticked, or ``None`` when they ticked none, too many or
    one the service does not know (a field error: the console never takes the proposal for a
    choice nobody made, as the API does when it is sent none)."""
    sent = form.getlist("kinds")
    kinds = _ticked(form)
    return kinds if 0 < len(kinds) == len(sent) <= MAX_CHOSEN else None


STEPS = ("prove", "confirm", "choose", "activate", "complete")


def _run_step(desk: Desk, step: str, flow_id: uuid.UUID, form: FormData) -> FlowView | _Refused:
    """The migration operation for ``step`` from the form, with this operator as the caller:
    the flow's view, or why the step was refused."""
    text = {key: str(value) for key, value in form.items() if isinstance(value, str)}
    ops = _operations(desk)
    if step == "prove":
        proof = ProofCommand(text["user_id"], text["password"], text["code"])
        return _attempt(desk, lambda: ops.prove(flow_id, proof))
    if step == "confirm":
        return _attempt(desk, lambda: ops.confirm(flow_id, text["person_number"], text["name"]))
    if step == "choose":
        kinds = _ticked(form)  # as checked by ``_chosen``
        return _attempt(desk, lambda: ops.choose(flow_id, kinds))
    if step == "activate":
        given = ActivationCommand(
            text.get("password") or None, text.get("serial") or None, text.get("code") or None
        )
        return _attempt(desk, lambda: ops.activate(flow_id, given))
    return _attempt(desk, lambda: ops.complete(flow_id))


@router.post("/console/migrations/{flow_id}/{step}")
def migration_step(flow_id: uuid.UUID, step: str, form: CheckedForm, desk: DeskDep) -> Response:
    """One operator-driven step of the flow (the API's channel check, the flow's failure
    counting and audit); a refused step shows the flow with the reason."""
    browser = desk.browser
    desk.caller.require(Permission.MANAGE_CREDENTIALS)
    if step not in STEPS:
        raise ConsoleNotFound("no such step", detail="no such step")
    refused = _refused_elsewhere(desk, flow_id)
    if refused is not None:
        return refused
    text = {key: str(value) for key, value in form.items() if isinstance(value, str)}
    field = _invalid_field(step, text)
    # What the choice's boxes show again on an error: what the operator ticked.
    ticked = _ticked(form) if step == "choose" else None
    if field is not None:
        errors = [(f"{step}-{field}", browser.t("console.flow.field_invalid"))]
        return _flow_page(desk, flow_id, status=422, errors=errors)
    if step == "choose" and _chosen(form) is None:
        errors = [(KINDS_FIELD, browser.t("console.flow.choose_missing"))]
        return _flow_page(desk, flow_id, status=422, errors=errors, ticked=ticked)
    result = _run_step(desk, step, flow_id, form)
    if step == "prove":  # after the step: a refused step rolls the session's changes back
        _keep_flow(browser, flow_id, user_id=text["user_id"])
    if isinstance(result, _Refused):
        if result.index:
            _keep_flow(browser, flow_id, index=result.index)
        field = KINDS_FIELD if result.code == InvalidChoice.code else ""
        errors = [(field, message(browser, result.code))]
        return _flow_page(desk, flow_id, status=result.status, errors=errors, ticked=ticked)
    browser.flash(f"console.flow.done_{step}")
    return redirect(browser, f"/console/migrations/{flow_id}")
