"""The state "waiting for a second operator", shared by enrolment and a later proofing at High:
the page that shows what the first operator recorded, and the second operator's approval with
their own key typed at the same desk (or the first operator cancelling)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.datastructures import FormData
from starlette.responses import Response

from server.domain.model import ProofingChannel
from server.services.access import Caller
from server.services.identity_operations import IdentityRecord
from server.web.browser import Browser
from server.web.console_access import ConsoleNotFound, Desk, check_second_operator
from server.web.render import redirect


def approval_rows(browser: Browser, pending: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the second operator approves (channel, document, level), as the waiting page's
    summary rows."""
    document = str(pending["document_kind"])
    document_key = f"console.document.{document}"
    return [
        (browser.t("console.proofing.channel"), browser.t(f"console.channel.{pending['channel']}")),
        (
            browser.t("console.proofing.document"),
            browser.t(document_key) if browser.t.has(document_key) else document,
        ),
        (browser.t("console.proofing.level"), browser.t("console.level.high")),
    ]


def second_page(
    desk: Desk,
    texts: str,
    action: str,
    person: tuple[str, str],
    pending: Mapping[str, Any],
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    """The waiting page: ``texts`` is the catalogue prefix of its title, waiting, submit and
    cancel texts; ``person`` the name and (masked) CPR-nummer shown."""
    t = desk.browser.t
    name, person_number = person
    return desk.page(
        "console_second.html",
        title=t(f"{texts}title"),
        status=status,
        errors=errors,
        waiting=t(f"{texts}waiting"),
        action=action,
        submit_text=t(f"{texts}submit"),
        cancel_text=t(f"{texts}cancel"),
        rows=[
            (t("console.enrol.name"), name),
            (t("console.person.person_number"), person_number),
            *approval_rows(desk.browser, pending),
        ],
    )


def approve(
    desk: Desk,
    form: FormData,
    pending_key: str,
    pending: Mapping[str, Any],
    *,
    cancelled: tuple[str, str],
    again: Callable[[int, list[tuple[str, str]]], Response],
    finish: Callable[[Caller], Response],
) -> Response:
    """The second operator's answer to the waiting page. ``cancel`` drops the waiting record
    (``cancelled``: the flash text and where to go); a key that is not another operator of the
    channel and organisation shows the page ``again`` (status, errors); else ``finish`` runs
    with the second operator, who approves with their own key (``approve_waiting``)."""
    browser, caller = desk.browser, desk.caller
    if form.get("cancel"):
        browser.remember(pending_key, None)
        flash, target = cancelled
        browser.flash(flash)
        return redirect(browser, target)
    channel = ProofingChannel(pending["channel"])
    typed = str(form.get("second_key", ""))
    second_op, error, status = check_second_operator(
        desk.request, desk.db, desk.services, caller, channel, typed
    )
    if second_op is None:
        return again(status, [("second_key", browser.t(error))])
    return finish(second_op)


def approve_waiting(desk: Desk, second: Caller, record: IdentityRecord) -> IdentityRecord:
    """The proofing the first operator just recorded, approved by ``second`` with their own
    key: the same approval as ``POST /proofings/{id}/approve``, in the desk's transaction."""
    if not record.pending:
        raise ConsoleNotFound("no proofing waits", detail="no proofing waits for approval")
    approver = desk.services.identity_operations(desk.db, second)
    return approver.approve(record.pending[-1].id)
