"""Console pages: recording another identity proofing of an enrolled person (a document seen
at the desk), from the person's page. Substantial rests on this operator; High becomes a
proofing waiting for a second operator of the channel (``console_approvals``)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from starlette.responses import Response

from server.domain.errors import DomainError
from server.services.access import Permission
from server.services.identities import can_give_high
from server.services.identity_operations import ProofingCommand
from server.services.lifecycle_errors import IdentityNotFound
from server.web import console_approvals
from server.web.browser import CheckedForm
from server.web.console_access import (
    DOCUMENT_FIELD,
    PROOFING_DOCUMENTS,
    DeskDep,
    channel_missing,
    channel_of,
    operators_fit,
)
from server.web.console_person import person_page
from server.web.render import mark_page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

_LEVELS = ("substantial", "high")


@router.post("/console/people/{identity_id}/proofing")
def record(identity_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """Record a proofing on the operator's own channel (supervisors choose one), with the API's
    rules. Substantial is recorded at once; High records this operator's check and waits for a
    second operator, who approves from their own console or at this desk."""
    browser, caller = desk.browser, desk.caller
    caller.require(Permission.ENROL)
    values = {key: str(form.get(key, ""))[:64] for key in ("document_kind", "level")}
    channel = channel_of(form, caller)
    values["channel"] = channel.value if channel else ""
    errors = [] if channel else [channel_missing(browser, caller)]
    high = values["level"] == "high"
    if values["document_kind"] not in PROOFING_DOCUMENTS:
        errors.append((DOCUMENT_FIELD, browser.t("console.enrol.document_missing")))
    elif channel and high and not can_give_high(channel, values["document_kind"]):
        errors.append((DOCUMENT_FIELD, browser.t("console.proofing.high_needs_document")))
    if values["level"] not in _LEVELS:
        errors.append(("level-substantial", browser.t("console.proofing.level_missing")))
    if not errors and not operators_fit([caller.name]):
        errors.append(("", browser.t("console.enrol.operator_name_invalid")))
    if errors or channel is None:
        return person_page(desk, identity_id, status=422, errors=errors, proofing=values)
    proofing = ProofingCommand(channel, values["document_kind"], (caller.name,), high=high)
    try:
        recorded = desk.operations().record_proofing(identity_id, proofing)
    except DomainError as exc:
        status, errors = desk.refusal(exc, DOCUMENT_FIELD, IdentityNotFound)
        return person_page(desk, identity_id, status=status, errors=errors, proofing=values)
    if high:
        return console_approvals.requested(desk, recorded)
    browser.flash("console.proofing.done")
    return redirect(browser, f"/console/people/{identity_id}")
