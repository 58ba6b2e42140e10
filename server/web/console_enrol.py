"""Console pages: enrolling a person proved in person at the desk, with the state "waiting for
a second operator" when High needs a second operator's approval."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from server.domain.errors import DomainError
from server.domain.model import Level, ProofingChannel
from server.services.access import Caller, NotPermitted, Permission
from server.services.errors import InvalidPersonNumber
from server.services.identity_operations import TEXT, ProofingCommand
from server.services.person_number import PersonNumber
from server.web import console_second
from server.web.browser import Browser, CheckedForm
from server.web.console_access import (
    DOCUMENT_FIELD,
    IN_PERSON_DOCUMENTS,
    ConsoleNotFound,
    Desk,
    DeskDep,
    channel_of,
    channels,
    fits,
    operators_fit,
)
from server.web.render import mark_page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

# The enrolment that waits for a second operator, in the first operator's browser session.
_PENDING = "console.pending_enrolment"
_FIELDS = ("name", "person_number", "document_kind", "level")


def _enrol_page(
    desk: Desk,
    *,
    values: Mapping[str, str] | None = None,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    return desk.page(
        "console_enrol.html",
        title=desk.browser.t("console.enrol.title"),
        status=status,
        errors=errors,
        channels=channels(desk.caller),
        documents=IN_PERSON_DOCUMENTS,
        values={**dict.fromkeys(_FIELDS, ""), **(values or {})},
    )


@router.get("/console/enrol")
def enrol_page(desk: DeskDep) -> Response:
    desk.caller.require(Permission.ENROL)
    return _enrol_page(desk)


def _enrolment_errors(
    browser: Browser, values: Mapping[str, str], operators: list[str]
) -> list[tuple[str, str]]:
    """What the API's enrolment request would refuse: the name, else the operators."""
    name = values["name"]
    if not (fits(TEXT, name) and 0 < len(name) <= 200):
        return [("name", browser.t("console.enrol.name_invalid"))]
    if not operators_fit(operators):
        return [("", browser.t("console.enrol.operator_name_invalid"))]
    return []


def _enrol(desk: Desk, pending: Mapping[str, Any], second: Caller | None) -> uuid.UUID:
    """Enrol with the API's rules (channel and operators) and audit; with a ``second``
    operator, whose own key approves the High proofing."""
    operators = (desk.caller.name, *([second.name] if second is not None else []))
    proofing = ProofingCommand(
        ProofingChannel(pending["channel"]),
        pending["document_kind"],
        operators,
        high=second is not None,
    )
    record = desk.operations().enrol(
        pending["person_number"], pending["name"], proofing, Level.parse(pending["level"])
    )
    if second is not None:
        console_second.approve_waiting(desk, second, record)
    return record.identity.id


@router.post("/console/enrol")
def enrol(form: CheckedForm, desk: DeskDep) -> Response:
    """Enrol a person proved in person here. Substantial needs this operator; High waits for a
    second operator's approval (``/console/enrol/second``)."""
    browser, caller = desk.browser, desk.caller
    caller.require(Permission.ENROL)
    values = {key: str(form.get(key, ""))[:200] for key in _FIELDS}
    channel = channel_of(form, caller)
    errors: list[tuple[str, str]] = []
    if not values["name"].strip():
        errors.append(("name", browser.t("console.enrol.name_missing")))
    try:
        values["person_number"] = PersonNumber.parse(values["person_number"]).formatted
    except InvalidPersonNumber:
        errors.append(("person_number", browser.t("console.search.invalid")))
    if values["document_kind"] not in IN_PERSON_DOCUMENTS:
        errors.append((DOCUMENT_FIELD, browser.t("console.enrol.document_missing")))
    if values["level"] not in ("substantial", "high"):
        errors.append(("level-substantial", browser.t("console.enrol.level_missing")))
    if channel is None:
        raise NotPermitted(f"{caller.actor} may not prove here", detail="not your channel")
    if errors:
        return _enrol_page(desk, values=values, status=422, errors=errors)
    pending = {**values, "channel": channel.value, "first": caller.key_id}
    if values["level"] == "high":
        browser.remember(_PENDING, pending)
        return redirect(browser, "/console/enrol/second")
    return _finish_enrolment(desk, pending, None)


def _finish_enrolment(desk: Desk, pending: Mapping[str, Any], second: Caller | None) -> Response:
    values = {key: str(pending[key]) for key in _FIELDS}
    operators = [desk.caller.name, *([second.name] if second is not None else [])]
    errors = _enrolment_errors(desk.browser, values, operators)
    if errors:
        return _enrol_page(desk, values=values, status=422, errors=errors)
    try:
        identity_id = _enrol(desk, pending, second)
    except DomainError as exc:
        field = "person_number" if "person" in exc.code else ""
        status, errors = desk.refusal(exc, field)
        return _enrol_page(desk, values=values, status=status, errors=errors)
    desk.browser.remember(_PENDING, None)
    desk.browser.flash("console.enrol.done")
    return redirect(desk.browser, f"/console/people/{identity_id}")


def _pending(desk: Desk) -> dict[str, Any]:
    pending = desk.browser.data(_PENDING)
    if not isinstance(pending, dict) or pending.get("first") != desk.caller.key_id:
        raise ConsoleNotFound("no enrolment waits", detail="no enrolment waits for approval")
    return pending


def _second_page(
    desk: Desk,
    pending: Mapping[str, Any],
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    masked = PersonNumber.parse(str(pending["person_number"])).masked
    return console_second.second_page(
        desk,
        "console.second.",
        "/console/enrol/second",
        (str(pending["name"]), masked),
        pending,
        status=status,
        errors=errors,
    )


@router.get("/console/enrol/second")
def second_page(desk: DeskDep) -> Response:
    """The state "waiting for a second operator": what the first operator recorded."""
    desk.caller.require(Permission.ENROL)
    return _second_page(desk, _pending(desk))


@router.post("/console/enrol/second")
def second(form: CheckedForm, desk: DeskDep) -> Response:
    """A second operator approves with their own API key (typed here, at the desk): another
    operator of the same channel; then the person is enrolled with both as operators (High).
    ``cancel`` drops the waiting enrolment."""
    desk.caller.require(Permission.ENROL)
    pending = _pending(desk)
    return console_second.approve(
        desk,
        form,
        _PENDING,
        pending,
        cancelled=("console.second.cancelled", "/console"),
        again=lambda status, errors: _second_page(desk, pending, status=status, errors=errors),
        finish=lambda second_op: _finish_enrolment(desk, pending, second_op),
    )
