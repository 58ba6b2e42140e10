"""Console pages of High proofings waiting for a second operator: the list of those a signed-in
operator may approve (their channel and organisation; their own shown as waiting), and one
proofing's page, where another operator approves it from their own session (or declines it),
or where the first operator waits, cancels, or lets a colleague type their key at this desk.
Every decision is the API's (``IdentityOperations.approve`` and ``cancel_proofing``)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from server.domain.errors import DomainError
from server.domain.model import ProofingChannel
from server.services.access import Permission
from server.services.identities import masked_person_number
from server.services.identity_operations import IdentityRecord, WaitingProofing
from server.services.proofing_approvals import ProofingNotFound
from server.storage.tables import PendingState
from server.web.browser import Browser, CheckedForm
from server.web.console_access import ConsoleNotFound, Desk, DeskDep, check_second_operator
from server.web.console_person import when
from server.web.render import mark_page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

LIST_PATH = "/console/proofings"


def proofing_path(pending_id: uuid.UUID) -> str:
    return f"{LIST_PATH}/{pending_id}"


def requested(desk: Desk, record: IdentityRecord) -> Response:
    """The page of the High proofing this operator just recorded (``record``'s newest of
    theirs), which now waits for a second operator."""
    own = [pending for pending in record.pending if pending.first_key_id == desk.caller.key_id]
    if not own:
        raise ConsoleNotFound("no proofing waits", detail="no proofing waits for approval")
    desk.browser.flash("console.approvals.requested")
    return redirect(desk.browser, proofing_path(own[-1].id))


def _document(browser: Browser, kind: str) -> str:
    key = f"console.document.{kind}"
    return browser.t(key) if browser.t.has(key) else kind


def _person(browser: Browser, shown: WaitingProofing) -> tuple[str, str]:
    """The person's name and masked CPR-nummer (a migration's person: not enrolled yet)."""
    if shown.identity is None:
        return browser.t("console.approvals.not_enrolled"), "\u2013"
    return shown.identity.name, masked_person_number(shown.identity.person_number)


def _state(shown: WaitingProofing) -> str:
    """What became of the proofing, as its catalogue text's last part."""
    if shown.waiting:
        return "waiting_own" if shown.own else "waiting"
    if shown.pending.state is PendingState.WAITING:
        return "expired"
    return shown.pending.state.value


def _row(browser: Browser, shown: WaitingProofing) -> dict[str, Any]:
    pending = shown.pending
    name, person_number = _person(browser, shown)
    return {
        "id": pending.id,
        "name": name,
        "person_number": person_number,
        "channel": browser.t(f"console.channel.{pending.channel.value}"),
        "document": _document(browser, pending.document_kind),
        "first": pending.first_operator,
        "created_at": pending.created_at,
        "expires_at": pending.expires_at,
        "state": browser.t(f"console.approvals.state_{_state(shown)}"),
    }


@router.get(LIST_PATH)
def waiting_list(desk: DeskDep) -> Response:
    """The proofings waiting now that this operator may approve, and their own waiting for a
    colleague; showing the people is audited."""
    desk.caller.require(Permission.ENROL)
    browser = desk.browser
    shown = desk.operations().waiting_list()
    desk.audit(
        "console.proofings_listed",
        {"proofings": [str(item.pending.id) for item in shown]},
    )
    return desk.page(
        "console_proofings.html",
        title=browser.t("console.approvals.title"),
        others=[_row(browser, item) for item in shown if not item.own],
        own=[_row(browser, item) for item in shown if item.own],
        when=lambda value: when(value, browser.lang),
    )


def _proofing_page(
    desk: Desk,
    pending_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    """One proofing: what the first operator recorded and what this operator may do now."""
    browser = desk.browser
    shown = desk.operations().proofing(pending_id)
    row = _row(browser, shown)
    identity = shown.identity
    desk.audit(
        "console.proofing_viewed",
        {"proofing": str(pending_id), "identity": str(identity.id) if identity else None},
    )
    t = browser.t
    pending = shown.pending
    rows = [
        (t("console.enrol.name"), row["name"]),
        (t("console.person.person_number"), row["person_number"]),
        (t("console.proofing.channel"), row["channel"]),
        (t("console.proofing.document"), row["document"]),
        (t("console.proofing.level"), t("console.level.high")),
        (t("console.approvals.first"), row["first"]),
        (t("console.approvals.created"), when(pending.created_at, browser.lang)),
        (t("console.approvals.expires"), when(pending.expires_at, browser.lang)),
    ]
    if pending.approver:
        rows.append((t("console.approvals.approver"), pending.approver))
    return desk.page(
        "console_proofing.html",
        title=t("console.approvals.item_title", name=row["name"]),
        status=status,
        errors=errors,
        shown=shown,
        state=row["state"],
        rows=rows,
        action=proofing_path(pending_id),
        person_path=f"/console/people/{identity.id}" if identity else None,
    )


@router.get(f"{LIST_PATH}/{{pending_id}}")
def proofing(pending_id: uuid.UUID, desk: DeskDep) -> Response:
    desk.caller.require(Permission.ENROL)
    return _proofing_page(desk, pending_id)


def _refused(desk: Desk, pending_id: uuid.UUID, exc: DomainError) -> Response:
    """The page again with the reason a decision was refused (not waiting any more, the person
    not enrolled yet). The first operator approving their own, or another organisation's
    proofing, is raised on (403, 404: their own error pages)."""
    status, errors = desk.refusal(exc, "", ProofingNotFound)
    return _proofing_page(desk, pending_id, status=status, errors=errors)


@router.post(f"{LIST_PATH}/{{pending_id}}/approve")
def approve(pending_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """A second operator approves from their own session, after confirming they checked the
    person's document themselves: the identity gets the High proofing with both operators."""
    desk.caller.require(Permission.ENROL)
    if form.get("checked_myself") != "yes":
        error = [("checked_myself-yes", desk.browser.t("console.approvals.unconfirmed"))]
        return _proofing_page(desk, pending_id, status=422, errors=error)
    try:
        record = desk.operations().approve(pending_id)
    except DomainError as exc:
        return _refused(desk, pending_id, exc)
    desk.browser.flash("console.approvals.approved")
    return redirect(desk.browser, f"/console/people/{record.identity.id}")


@router.post(f"{LIST_PATH}/{{pending_id}}/cancel")
def cancel(pending_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """Decline (a second operator) or cancel (the first): the proofing waits no more; what the
    first operator's check gave the identity stays."""
    desk.caller.require(Permission.ENROL)
    try:
        desk.operations().cancel_proofing(pending_id)
    except DomainError as exc:
        return _refused(desk, pending_id, exc)
    desk.browser.flash("console.approvals.cancelled")
    return redirect(desk.browser, LIST_PATH)


@router.post(f"{LIST_PATH}/{{pending_id}}/desk")
def approve_at_desk(pending_id: uuid.UUID, form: CheckedForm, desk: DeskDep) -> Response:
    """At the first operator's desk, a second operator types their own key: another operator
    of the channel and organisation, whose key approves it as ``POST /proofings/{id}/approve``
    does (the typed key is rate-limited and audited like a sign-in)."""
    desk.caller.require(Permission.ENROL)
    shown = desk.operations().proofing(pending_id)
    if not shown.own:
        raise ConsoleNotFound("not this operator's proofing", detail="not your proofing")
    channel = ProofingChannel(shown.pending.channel)
    typed = str(form.get("second_key", ""))
    second, error, status = check_second_operator(
        desk.request, desk.db, desk.services, desk.caller, channel, typed
    )
    if second is None:
        return _proofing_page(
            desk, pending_id, status=status, errors=[("second_key", desk.browser.t(error))]
        )
    try:
        record = desk.services.identity_operations(desk.db, second).approve(pending_id)
    except DomainError as exc:
        return _refused(desk, pending_id, exc)
    desk.browser.flash("console.approvals.approved")
    return redirect(desk.browser, f"/console/people/{record.identity.id}")
