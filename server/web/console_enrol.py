"""Console pages: enrolling a person proved in person at the desk; High becomes a proofing
waiting for a second operator's approval (``console_approvals``)."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Depends
from starlette.responses import Response

from server.domain.errors import DomainError
from server.domain.model import Level
from server.services.access import Permission
from server.services.errors import InvalidPersonNumber
from server.services.identity_operations import TEXT, ProofingCommand
from server.services.person_number import PersonNumber
from server.web import console_approvals
from server.web.browser import Browser, CheckedForm
from server.web.console_access import (
    DOCUMENT_FIELD,
    IN_PERSON_DOCUMENTS,
    Desk,
    DeskDep,
    channel_missing,
    channel_of,
    channels,
    fits,
    operators_fit,
)
from server.web.render import mark_page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

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


@router.post("/console/enrol")
def enrol(form: CheckedForm, desk: DeskDep) -> Response:
    """Enrol a person proved in person here, with the API's rules. Substantial rests on this
    operator; High enrols the person at what this operator's check gives and waits for a
    second operator, who approves from their own console or at this desk."""
    browser, caller = desk.browser, desk.caller
    caller.require(Permission.ENROL)
    values = {key: str(form.get(key, ""))[:200] for key in _FIELDS}
    channel = channel_of(form, caller)
    values["channel"] = channel.value if channel else ""
    errors: list[tuple[str, str]] = []
    if not values["name"].strip():
        errors.append(("name", browser.t("console.enrol.name_missing")))
    try:
        values["person_number"] = PersonNumber.parse(values["person_number"]).formatted
    except InvalidPersonNumber:
        errors.append(("person_number", browser.t("console.search.invalid")))
    if channel is None:
        errors.append(channel_missing(browser, caller))
    if values["document_kind"] not in IN_PERSON_DOCUMENTS:
        errors.append((DOCUMENT_FIELD, browser.t("console.enrol.document_missing")))
    if values["level"] not in ("substantial", "high"):
        errors.append(("level-substantial", browser.t("console.enrol.level_missing")))
    errors = errors or _enrolment_errors(browser, values, [caller.name])
    if errors or channel is None:
        return _enrol_page(desk, values=values, status=422, errors=errors)
    high = values["level"] == "high"
    proofing = ProofingCommand(channel, values["document_kind"], (caller.name,), high=high)
    try:
        record = desk.operations().enrol(
            values["person_number"], values["name"], proofing, Level.parse(values["level"])
        )
    except DomainError as exc:
        field = "person_number" if "person" in exc.code else ""
        status, errors = desk.refusal(exc, field)
        return _enrol_page(desk, values=values, status=status, errors=errors)
    if high:
        return console_approvals.requested(desk, record)
    browser.flash("console.enrol.done")
    return redirect(browser, f"/console/people/{record.identity.id}")
