"""Console pages: recording another identity proofing of an enrolled person (a document seen
at the desk), from the person's page. Substantial rests on this operator; High waits for a
second operator of the channel, who approves with their own key at the same desk."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from server.domain.errors import DomainError
from server.domain.model import ProofingChannel
from server.services.access import Caller, NotPermitted, Permission
from server.services.identities import can_give_high, masked_person_number
from server.services.identity_operations import ProofingCommand
from server.services.lifecycle_errors import IdentityNotFound
from server.web import console_second
from server.web.browser import CheckedForm
from server.web.console_access import (
    DOCUMENT_FIELD,
    PROOFING_DOCUMENTS,
    ConsoleNotFound,
    Desk,
    DeskDep,
    channel_of,
    operators_fit,
)
from server.web.console_person import person_page
from server.web.render import mark_page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

# The proofing that waits for a second operator, in the first operator's browser session.
_PENDING = "console.pending_proofing"
_LEVELS = ("substantial", "high")


@router.post("/console/people/{identity_id}/proofing")
def record(identity_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """Record a proofing on the operator's own channel (supervisors choose one). Substantial is
    recorded at once; High waits for a second operator (``.../proofing/second``)."""
    browser, caller = desk.browser, desk.caller
    caller.require(Permission.ENROL)
    values = {key: str(form.get(key, ""))[:64] for key in ("document_kind", "level")}
    channel = channel_of(form, caller)
    if channel is None:
        raise NotPermitted(f"{caller.actor} may not prove here", detail="not your channel")
    values["channel"] = channel.value
    errors: list[tuple[str, str]] = []
    if values["document_kind"] not in PROOFING_DOCUMENTS:
        errors.append((DOCUMENT_FIELD, browser.t("console.enrol.document_missing")))
    elif values["level"] == "high" and not can_give_high(channel, values["document_kind"]):
        errors.append((DOCUMENT_FIELD, browser.t("console.proofing.high_needs_document")))
    if values["level"] not in _LEVELS:
        errors.append(("level-substantial", browser.t("console.proofing.level_missing")))
    if errors:
        return person_page(desk, identity_id, status=422, errors=errors, proofing=values)
    pending = {**values, "identity": str(identity_id), "first": caller.key_id}
    if values["level"] == "high":
        desk.operations().view(identity_id)  # 404 before anyone waits
        browser.remember(_PENDING, pending)
        return redirect(browser, f"/console/people/{identity_id}/proofing/second")
    return _finish(desk, pending, None)


def _finish(desk: Desk, pending: Mapping[str, Any], second: Caller | None) -> Response:
    """Record with the API's rules (channel and operators) and audit; with a ``second``
    operator, as a High proofing that operator approves with their own key. A refusal shows
    the person's page with the reason."""
    identity_id = uuid.UUID(str(pending["identity"]))
    values = {key: str(pending[key]) for key in ("channel", "document_kind", "level")}
    operators = [desk.caller.name, *([second.name] if second is not None else [])]
    errors: list[tuple[str, str]] = []
    status = 422
    if not operators_fit(operators):
        errors = [("", desk.browser.t("console.enrol.operator_name_invalid"))]
    else:
        proofing = ProofingCommand(
            ProofingChannel(values["channel"]),
            values["document_kind"],
            tuple(operators),
            high=second is not None,
        )
        try:
            record = desk.operations().record_proofing(identity_id, proofing)
            if second is not None:
                console_second.approve_waiting(desk, second, record)
        except DomainError as exc:
            status, errors = desk.refusal(exc, DOCUMENT_FIELD, IdentityNotFound)
    desk.browser.remember(_PENDING, None)
    if errors:
        return person_page(desk, identity_id, status=status, errors=errors, proofing=values)
    desk.browser.flash("console.proofing.done")
    return redirect(desk.browser, f"/console/people/{identity_id}")


def _pending(desk: Desk, identity_id: uuid.UUID) -> dict[str, Any]:
    pending = desk.browser.data(_PENDING)
    if (
        not isinstance(pending, dict)
        or pending.get("first") != desk.caller.key_id
        or pending.get("identity") != str(identity_id)
    ):
        raise ConsoleNotFound("no proofing waits", detail="no proofing waits for approval")
    return pending


def _second_page(
    desk: Desk,
    pending: Mapping[str, Any],
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    identity_id = uuid.UUID(str(pending["identity"]))
    identity = desk.operations().view(identity_id).identity
    return console_second.second_page(
        desk,
        "console.proofing.second_",
        f"/console/people/{identity.id}/proofing/second",
        (identity.name, masked_person_number(identity.person_number)),
        pending,
        status=status,
        errors=errors,
    )


@router.get("/console/people/{identity_id}/proofing/second")
def second_page(identity_id: uuid.UUID, desk: DeskDep) -> Response:
    """The state "waiting for a second operator": what the first operator recorded."""
    desk.caller.require(Permission.ENROL)
    return _second_page(desk, _pending(desk, identity_id))


@router.post("/console/people/{identity_id}/proofing/second")
def second(identity_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """A second operator of the channel approves with their own key (not the first
    operator's); the proofing is recorded with both as operators. ``cancel`` drops it."""
    desk.caller.require(Permission.ENROL)
    pending = _pending(desk, identity_id)
    return console_second.approve(
        desk,
        form,
        _PENDING,
        pending,
        cancelled=("console.proofing.cancelled", f"/console/people/{identity_id}"),
        again=lambda status, errors: _second_page(desk, pending, status=status, errors=errors),
        finish=lambda second_op: _finish(desk, pending, second_op),
    )
