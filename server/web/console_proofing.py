"""Console pages: recording another identity proofing of an enrolled person (a document seen
at the desk), from the person's page. Substantial rests on this operator; High waits for a
second operator of the channel, who approves with their own key at the same desk."""

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
from server.services.errors import DomainError
from server.services.identities import proofing_level
from server.services.lifecycle_errors import IdentityNotFound
from server.storage.tables import AssuranceLevel, ProofingChannel
from server.web.browser import Browser, BrowserDep, CheckedForm, OperatorDep
from server.web.console_access import (
    DOCUMENT_FIELD,
    PROOFING_DOCUMENTS,
    ConsoleNotFound,
    approval_rows,
    channel_of,
    check_second_operator,
    message,
    status_of,
)
from server.web.console_person import person_page
from server.web.render import mark_page, page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

# The proofing that waits for a second operator, in the first operator's browser session.
_PENDING = "console.pending_proofing"
_LEVELS = ("substantial", "high")


def _could_give_high(channel: ProofingChannel, document_kind: str) -> bool:
    """Whether two operators at ``channel`` with this document reach High (the service's own
    rule, asked with two placeholder operators)."""
    return proofing_level(channel, document_kind, ("first", "second")) is AssuranceLevel.HIGH


@router.post("/console/people/{identity_id}/proofing")
def record(
    identity_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    form: CheckedForm,
    caller: OperatorDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    """Record a proofing on the operator's own channel (supervisors choose one). Substantial is
    recorded at once; High waits for a second operator (``.../proofing/second``)."""
    caller.require(Permission.ENROL)
    values = {key: str(form.get(key, ""))[:64] for key in ("document_kind", "level")}
    channel = channel_of(form, caller)
    if channel is None:
        raise NotPermitted(f"{caller.actor} may not prove here", detail="not your channel")
    values["channel"] = channel.value
    errors: list[tuple[str, str]] = []
    if values["document_kind"] not in PROOFING_DOCUMENTS:
        errors.append((DOCUMENT_FIELD, browser.t("console.enrol.document_missing")))
    elif values["level"] == "high" and not _could_give_high(channel, values["document_kind"]):
        errors.append((DOCUMENT_FIELD, browser.t("console.proofing.high_needs_document")))
    if values["level"] not in _LEVELS:
        errors.append(("level-substantial", browser.t("console.proofing.level_missing")))
    if errors:
        return person_page(
            request,
            browser,
            caller,
            db,
            services,
            identity_id,
            status=422,
            errors=errors,
            proofing=values,
        )
    pending = {**values, "identity": str(identity_id), "first": caller.key_id}
    if values["level"] == "high":
        api.get_identity(identity_id, db, services, caller)  # 404 before anyone waits
        browser.remember(_PENDING, pending)
        return redirect(browser, f"/console/people/{identity_id}/proofing/second")
    return _finish(request, browser, caller, db, services, pending, [caller.name])


def _finish(
    request: Request,
    browser: Browser,
    caller: Caller,
    db: Session,
    services: Services,
    pending: Mapping[str, Any],
    operators: list[str],
) -> Response:
    """Record through the API's ``record_proofing`` (its channel and operator rules, its
    audit); a refusal shows the person's page with the reason."""
    identity_id = uuid.UUID(str(pending["identity"]))
    values = {key: str(pending[key]) for key in ("channel", "document_kind", "level")}
    errors: list[tuple[str, str]] = []
    status = 422
    try:
        body = api.ProofingIn(
            channel=ProofingChannel(values["channel"]),
            document_kind=values["document_kind"],
            operator_ids=operators,
        )
        api.record_proofing(identity_id, body, db, services, caller)
    except ValidationError:
        errors = [("", browser.t("console.enrol.operator_name_invalid"))]
    except DomainError as exc:
        if isinstance(exc, NotPermitted | IdentityNotFound):
            raise
        db.rollback()
        status = status_of(exc.code)
        errors = [(DOCUMENT_FIELD, message(browser, exc.code))]
    browser.remember(_PENDING, None)
    if errors:
        return person_page(
            request,
            browser,
            caller,
            db,
            services,
            identity_id,
            status=status,
            errors=errors,
            proofing=values,
        )
    browser.flash("console.proofing.done")
    return redirect(browser, f"/console/people/{identity_id}")


def _pending(browser: Browser, caller: Caller, identity_id: uuid.UUID) -> dict[str, Any]:
    pending = browser.data(_PENDING)
    if (
        not isinstance(pending, dict)
        or pending.get("first") != caller.key_id
        or pending.get("identity") != str(identity_id)
    ):
        raise ConsoleNotFound("no proofing waits", detail="no proofing waits for approval")
    return pending


def _second_page(
    request: Request,
    browser: Browser,
    caller: Caller,
    db: Session,
    services: Services,
    pending: Mapping[str, Any],
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    identity = api.get_identity(uuid.UUID(str(pending["identity"])), db, services, caller)
    return page(
        request,
        browser,
        "console_second.html",
        title=browser.t("console.proofing.second_title"),
        status=status,
        errors=errors or [],
        waiting=browser.t("console.proofing.second_waiting"),
        action=f"/console/people/{identity.id}/proofing/second",
        submit_text=browser.t("console.proofing.second_submit"),
        cancel_text=browser.t("console.proofing.second_cancel"),
        rows=[
            (browser.t("console.enrol.name"), identity.name),
            (browser.t("console.person.person_number"), identity.person_number),
            *approval_rows(browser, pending),
        ],
    )


@router.get("/console/people/{identity_id}/proofing/second")
def second_page(
    identity_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    caller: OperatorDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    """The state "waiting for a second operator": what the first operator recorded."""
    caller.require(Permission.ENROL)
    pending = _pending(browser, caller, identity_id)
    return _second_page(request, browser, caller, db, services, pending)


@router.post("/console/people/{identity_id}/proofing/second")
def second(
    identity_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    form: CheckedForm,
    caller: OperatorDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    """A second operator of the channel approves with their own key (not the first
    operator's); the proofing is recorded with both as operators. ``cancel`` drops it."""
    caller.require(Permission.ENROL)
    pending = _pending(browser, caller, identity_id)
    if form.get("cancel"):
        browser.remember(_PENDING, None)
        browser.flash("console.proofing.cancelled")
        return redirect(browser, f"/console/people/{identity_id}")
    channel = ProofingChannel(pending["channel"])
    typed = str(form.get("second_key", ""))
    second_op, error, status = check_second_operator(request, db, services, caller, channel, typed)
    if second_op is None:
        errors = [("second_key", browser.t(error))]
        return _second_page(
            request, browser, caller, db, services, pending, status=status, errors=errors
        )
    return _finish(request, browser, caller, db, services, pending, [caller.name, second_op.name])
