"""Console pages: enrolling a person proved in person at the desk, with the state "waiting for
a second operator" when High needs a second operator's approval."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import Response

from server.api import identities as api
from server.api.deps import Services, ServicesDep, SessionDep
from server.services.access import Caller, NotPermitted, Permission
from server.services.errors import DomainError, InvalidPersonNumber
from server.services.person_number import PersonNumber
from server.storage.tables import ProofingChannel
from server.web.browser import Browser, BrowserDep, CheckedForm, OperatorDep
from server.web.console_access import (
    DOCUMENT_FIELD,
    IN_PERSON_DOCUMENTS,
    ConsoleNotFound,
    approval_rows,
    channel_of,
    channels,
    check_second_operator,
    message,
    status_of,
)
from server.web.render import mark_page, page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

# The enrolment that waits for a second operator, in the first operator's browser session.
_PENDING = "console.pending_enrolment"


def _enrol_page(
    request: Request,
    browser: Browser,
    caller: Caller,
    *,
    values: Mapping[str, str] | None = None,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    return page(
        request,
        browser,
        "console_enrol.html",
        title=browser.t("console.enrol.title"),
        status=status,
        errors=errors or [],
        channels=channels(caller),
        documents=IN_PERSON_DOCUMENTS,
        values={
            "name": "",
            "person_number": "",
            "document_kind": "",
            "level": "",
            **(values or {}),
        },
    )


@router.get("/console/enrol")
def enrol_page(request: Request, browser: BrowserDep, caller: OperatorDep) -> Response:
    caller.require(Permission.ENROL)
    return _enrol_page(request, browser, caller)


def _enrolment_errors(browser: Browser, exc: ValidationError) -> list[tuple[str, str]]:
    fields = {str(error["loc"][0]) for error in exc.errors() if error.get("loc")}
    errors = []
    if "name" in fields:
        errors.append(("name", browser.t("console.enrol.name_invalid")))
    if "person_number" in fields:
        errors.append(("person_number", browser.t("console.search.invalid")))
    if not errors:
        errors.append(("", browser.t("console.enrol.operator_name_invalid")))
    return errors


def _enrol(
    db: Session,
    services: Services,
    caller: Caller,
    pending: Mapping[str, Any],
    operators: list[str],
) -> uuid.UUID:
    """Enrol through the API's ``enrol`` (its channel and operator rules, its audit)."""
    body = api.EnrolmentIn(
        person_number=pending["person_number"],
        name=pending["name"],
        proofing=api.ProofingIn(
            channel=ProofingChannel(pending["channel"]),
            document_kind=pending["document_kind"],
            operator_ids=operators,
        ),
        level=pending["level"],
    )
    return api.enrol(body, db, services, caller).id


@router.post("/console/enrol")
def enrol(
    request: Request,
    browser: BrowserDep,
    form: CheckedForm,
    caller: OperatorDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    """Enrol a person proved in person here. Substantial needs this operator; High waits for a
    second operator's approval (``/console/enrol/second``)."""
    caller.require(Permission.ENROL)
    values = {
        key: str(form.get(key, ""))[:200]
        for key in ("name", "person_number", "document_kind", "level")
    }
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
        return _enrol_page(request, browser, caller, values=values, status=422, errors=errors)
    pending = {**values, "channel": channel.value, "first": caller.key_id}
    if values["level"] == "high":
        browser.remember(_PENDING, pending)
        return redirect(browser, "/console/enrol/second")
    return _finish_enrolment(request, browser, caller, db, services, pending, [caller.name])


def _finish_enrolment(
    request: Request,
    browser: Browser,
    caller: Caller,
    db: Session,
    services: Services,
    pending: Mapping[str, Any],
    operators: list[str],
) -> Response:
    values = {key: str(pending[key]) for key in ("name", "person_number", "document_kind", "level")}
    try:
        identity_id = _enrol(db, services, caller, pending, operators)
    except ValidationError as exc:
        errors = _enrolment_errors(browser, exc)
        return _enrol_page(request, browser, caller, values=values, status=422, errors=errors)
    except DomainError as exc:
        if isinstance(exc, NotPermitted):
            raise
        db.rollback()
        field = "person_number" if "person" in exc.code else ""
        errors = [(field, message(browser, exc.code))]
        return _enrol_page(
            request, browser, caller, values=values, status=status_of(exc.code), errors=errors
        )
    browser.remember(_PENDING, None)
    browser.flash("console.enrol.done")
    return redirect(browser, f"/console/people/{identity_id}")


def _pending(browser: Browser, caller: Caller) -> dict[str, Any]:
    pending = browser.data(_PENDING)
    if not isinstance(pending, dict) or pending.get("first") != caller.key_id:
        raise ConsoleNotFound("no enrolment waits", detail="no enrolment waits for approval")
    return pending


def _second_page(
    request: Request,
    browser: Browser,
    pending: Mapping[str, Any],
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    return page(
        request,
        browser,
        "console_second.html",
        title=browser.t("console.second.title"),
        status=status,
        errors=errors or [],
        waiting=browser.t("console.second.waiting"),
        action="/console/enrol/second",
        submit_text=browser.t("console.second.submit"),
        cancel_text=browser.t("console.second.cancel"),
        rows=[
            (browser.t("console.enrol.name"), pending["name"]),
            (
                browser.t("console.person.person_number"),
                PersonNumber.parse(str(pending["person_number"])).masked,
            ),
            *approval_rows(browser, pending),
        ],
    )


@router.get("/console/enrol/second")
def second_page(request: Request, browser: BrowserDep, caller: OperatorDep) -> Response:
    """The state "waiting for a second operator": what the first operator recorded."""
    caller.require(Permission.ENROL)
    return _second_page(request, browser, _pending(browser, caller))


@router.post("/console/enrol/second")
def second(
    request: Request,
    browser: BrowserDep,
    form: CheckedForm,
    caller: OperatorDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    """A second operator approves with their own API key (typed here, at the desk): another
    operator of the same channel; then the person is enrolled with both as operators (High).
    ``cancel`` drops the waiting enrolment."""
    caller.require(Permission.ENROL)
    pending = _pending(browser, caller)
    if form.get("cancel"):
        browser.remember(_PENDING, None)
        browser.flash("console.second.cancelled")
        return redirect(browser, "/console")
    channel = ProofingChannel(pending["channel"])
    typed = str(form.get("second_key", ""))
    second_op, error, status = check_second_operator(request, db, services, caller, channel, typed)
    if second_op is None:
        errors = [("second_key", browser.t(error))]
        return _second_page(request, browser, pending, status=status, errors=errors)
    return _finish_enrolment(
        request, browser, caller, db, services, pending, [caller.name, second_op.name]
    )
