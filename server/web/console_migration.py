"""Console pages: an assisted migration from the legacy eID, started and driven by the
operator of a bank or citizen service centre through the migration API's route functions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import JSONResponse, Response

from server.api import migration as flows_api
from server.services.access import NotPermitted, Permission
from server.services.migration.flow_model import Authenticator
from server.web.browser import Browser, CheckedForm, own_origin
from server.web.console_access import (
    DOCUMENT_FIELD,
    IN_PERSON_DOCUMENTS,
    ConsoleNotFound,
    Desk,
    DeskDep,
    channel_of,
    channels,
    message,
)
from server.web.render import mark_page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

# Where the person continues a migration on their own (the migration pages' resume link).
RESUME_PATH = "/migrate/{flow_id}"
# The key number to show and the user id typed, per flow, in the operator's browser session.
_FLOWS = "console.flows"
_MAX_FLOWS_KEPT = 10


def _flow_page(
    desk: Desk,
    flow_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    """Where the flow stands now (read through the API's ``get_flow``), with ``errors``."""
    flow = flows_api.get_flow(flow_id, desk.db, desk.services, desk.request, desk.caller)
    if isinstance(flow, JSONResponse):
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
    )


def _keep_flow(browser: Browser, flow_id: uuid.UUID, **values: str) -> None:
    """The key number to show and the user id typed, for the operator's next step."""
    kept = dict(browser.data(_FLOWS) or {})
    entry = {**kept.pop(str(flow_id), {}), **values}
    kept[str(flow_id)] = entry
    browser.remember(_FLOWS, dict(list(kept.items())[-_MAX_FLOWS_KEPT:]))


def _problem(answer: JSONResponse) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(bytes(answer.body))
    body["code"] = str(body.get("type", "")).rsplit(":", 1)[-1]
    return body


def _refused_elsewhere(desk: Desk, flow_id: uuid.UUID) -> Response | None:
    """A 403 page if the flow runs on a channel that is not the operator's own assisted one
    (supervisors: any assisted one), so a self-service flow whose id an operator has is not
    driven from the console; ``None`` when the operator may open it. An id nobody has (the
    same answer as for any user id before the legacy proof) is not told apart here."""
    browser, caller = desk.browser, desk.caller
    flows = flows_api.migration_flows(desk.db, desk.services, desk.request, caller.actor)
    channel = flows.channel_of(flow_id)
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


@router.post("/console/migrations")
def migration_start(form: CheckedForm, desk: DeskDep) -> Response:
    """Start an assisted migration for a legacy user id on the operator's channel, through the
    API's ``start`` with this operator as caller and as the operator present."""
    browser, caller = desk.browser, desk.caller
    caller.require(Permission.MANAGE_CREDENTIALS)
    values = {key: str(form.get(key, ""))[:64].strip() for key in ("user_id", "document_kind")}
    channel = channel_of(form, caller)
    if channel is None:
        raise NotPermitted(f"{caller.actor} may not act here", detail="not your channel")
    errors: list[tuple[str, str]] = []
    try:
        body = flows_api.StartIn(
            user_id=values["user_id"],
            channel=channel,
            checks=flows_api.ChecksIn(document_kind=values["document_kind"]),  # type: ignore[arg-type]
            operator_ids=[caller.name],
        )
    except ValidationError as exc:
        fields = {str(part) for error in exc.errors() for part in error.get("loc", ())}
        if "user_id" in fields:
            errors.append(("user_id", browser.t("console.migrate.user_id_invalid")))
        if "document_kind" in fields or "checks" in fields:
            errors.append((DOCUMENT_FIELD, browser.t("console.enrol.document_missing")))
        if not errors:
            errors.append(("", browser.t("console.enrol.operator_name_invalid")))
        return _start_page(desk, status=422, errors=errors, values=values)
    answer = flows_api.start(body, desk.db, desk.services, desk.request, caller)
    if isinstance(answer, JSONResponse):
        problem = _problem(answer)
        errors = [("user_id", message(browser, problem["code"]))]
        return _start_page(desk, status=answer.status_code, errors=errors, values=values)
    desk.audit("console.migration_started", {"flow": str(answer.id)})
    _keep_flow(browser, answer.id, index=answer.index, user_id=values["user_id"])
    return redirect(browser, f"/console/migrations/{answer.id}")


@router.get("/console/migrations/{flow_id}")
def migration(flow_id: uuid.UUID, desk: DeskDep) -> Response:
    """Where the assisted flow stands, the person's resume link, and its next step."""
    desk.caller.require(Permission.MANAGE_CREDENTIALS)
    refused = _refused_elsewhere(desk, flow_id)
    if refused is not None:
        return refused
    return _flow_page(desk, flow_id)


def _step_body(step: str, form: FormData) -> Any:
    """The API's body for ``step`` from the form (pydantic checks it)."""
    text = {key: str(value) for key, value in form.items() if isinstance(value, str)}
    if step == "prove":
        return flows_api.ProveIn(
            user_id=text.get("user_id", ""),
            password=text.get("password", ""),
            code=text.get("code", ""),
        )
    if step == "confirm":
        return flows_api.ConfirmIn(
            person_number=text.get("person_number", ""), name=text.get("name", "")
        )
    if step == "choose":
        known = {kind.value: kind for kind in Authenticator}
        kinds = [known[k] for k in form.getlist("kinds") if isinstance(k, str) and k in known]
        return flows_api.ChooseIn(kinds=kinds or None)
    if step == "activate":
        given = {key: text[key] for key in ("password", "serial", "code") if text.get(key)}
        return flows_api.ActivateIn(**given)
    return None


STEPS = ("prove", "confirm", "choose", "activate", "complete")


def _run_step(
    desk: Desk, step: str, flow_id: uuid.UUID, body: Any
) -> flows_api.FlowOut | JSONResponse:
    """The migration API's route function for ``step``, with this operator as the caller."""
    db, services, request, caller = desk.db, desk.services, desk.request, desk.caller
    if step == "prove":
        return flows_api.prove(flow_id, body, db, services, request, caller)
    if step == "confirm":
        return flows_api.confirm(flow_id, body, db, services, request, caller)
    if step == "choose":
        return flows_api.choose(flow_id, db, services, request, caller, body=body)
    if step == "activate":
        return flows_api.activate(flow_id, db, services, request, caller, body=body)
    return flows_api.complete(flow_id, db, services, request, caller)


@router.post("/console/migrations/{flow_id}/{step}")
def migration_step(flow_id: uuid.UUID, step: str, form: CheckedForm, desk: DeskDep) -> Response:
    """One operator-driven step of the flow, through the API's route function for it (its
    channel check, failure counting and audit); a refused step shows the flow with the reason."""
    browser = desk.browser
    desk.caller.require(Permission.MANAGE_CREDENTIALS)
    if step not in STEPS:
        raise ConsoleNotFound("no such step", detail="no such step")
    refused = _refused_elsewhere(desk, flow_id)
    if refused is not None:
        return refused
    try:
        body = _step_body(step, form)
    except ValidationError as exc:
        field = str(exc.errors()[0].get("loc", ("",))[0]) if exc.errors() else ""
        errors = [(f"{step}-{field}", browser.t("console.flow.field_invalid"))]
        return _flow_page(desk, flow_id, status=422, errors=errors)
    result = _run_step(desk, step, flow_id, body)
    if step == "prove":  # after the step: a refused step rolls the session's changes back
        _keep_flow(browser, flow_id, user_id=body.user_id)
    if isinstance(result, JSONResponse):
        problem = _problem(result)
        if problem.get("index"):
            _keep_flow(browser, flow_id, index=str(problem["index"]))
        errors = [("", message(browser, problem["code"]))]
        return _flow_page(desk, flow_id, status=result.status_code, errors=errors)
    browser.flash(f"console.flow.done_{step}")
    return redirect(browser, f"/console/migrations/{flow_id}")
