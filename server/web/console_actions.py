"""The console's actions that take something away from a person: blocking or replacing a
credential and suspending the identity. Each has a page of its own that names what it acts on,
says what will happen and asks the operator's reason; the action is taken only when that page
is sent with a reason, which goes into the audit entry the action writes (as lifting throttles
does). Resuming and admitting give something back and stay one click on the person's page."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from starlette.datastructures import FormData
from starlette.responses import Response

from server.domain.model import CredentialState, IdentityStatus
from server.services.access import Permission
from server.services.credentials.rules import REPLACED_WHEN_BLOCKED
from server.services.identities import IDENTITY_TRANSITIONS
from server.services.identity_operations import IdentityOperations
from server.services.lifecycle_errors import InvalidTransition
from server.storage.tables import Credential
from server.web.console_access import ConsoleNotFound, Desk, DeskDep
from server.web.console_person import PersonView, act, blockable, own_credential, replaceable
from server.web.credential_display import CredentialNames
from server.web.render import mark_page

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

# A reason counts from this many characters, its white space folded, and is kept to the most.
REASON_LEAST = 3
REASON_MOST = 500
# The credential actions that ask first: the state each leads to, and whether it can be taken.
CREDENTIAL_ACTIONS = {
    "block": (CredentialState.BLOCKED, blockable),
    "replace": (CredentialState.REPLACED, replaceable),
}
SUSPEND = "suspend"


def reason_of(form: FormData) -> str:
    """The reason the form gives, white space folded, at most ``REASON_MOST`` characters; one
    shorter than ``REASON_LEAST`` is no reason (the caller says so at the field)."""
    return " ".join(str(form.get("reason", "")).split())[:REASON_MOST]


def _consequence(action: str, credential: Credential | None) -> str:
    """The catalogue key of what ``action`` does to ``credential`` (or to the identity)."""
    if credential is None:
        return "console.confirm.suspend_consequence"
    if action == "block":
        final = credential.kind in REPLACED_WHEN_BLOCKED
        return f"console.confirm.block_{'final' if final else 'liftable'}"
    live = credential.state in (CredentialState.ACTIVE, CredentialState.ACTIVATION_PENDING)
    return f"console.confirm.replace_{'live' if live else 'out_of_use'}"


def _person(desk: Desk, identity_id: uuid.UUID) -> PersonView:
    """The person as the confirmation shows them; reading them is audited as their page is
    (``identity.viewed``)."""
    return PersonView.of(desk.operations().view(identity_id))


def confirm_page(
    desk: Desk,
    identity: PersonView,
    action: str,
    credential: Credential | None = None,
    *,
    reason: str = "",
    missing: bool = False,
) -> Response:
    """The page that asks to confirm ``action`` on the person (or their ``credential``) with a
    reason; ``missing``: it was sent without one (422, the reason typed kept in its field)."""
    t = desk.browser.t
    names = CredentialNames(t)
    person = f"/console/people/{identity.id}"
    rows = [
        (t("console.confirm.person"), identity.name),
        (t("console.person.person_number"), identity.person_number),
        (t("console.person.status"), t(f"console.status.{identity.status.value}")),
    ]
    target = f"{person}/status"
    if credential is not None:
        rows += [
            (t("console.credentials.kind"), names.kind(credential.kind)),
            (t("console.credentials.serial"), names.serial(credential)),
            (t("console.credentials.state"), t(f"console.state.{credential.state.value}")),
        ]
        target = f"{person}/credentials/{credential.id}/{action}"
    errors = [("reason", t(f"console.confirm.{action}_reason_missing"))] if missing else []
    return desk.page(
        "console_confirm.html",
        title=t(f"console.confirm.{action}_title"),
        status=422 if missing else 200,
        errors=errors,
        rows=rows,
        consequence=t(_consequence(action, credential)),
        target=target,
        # The status route takes several actions: the form names this one.
        status_action=action if credential is None else None,
        reason=reason,
        person_path=person,
        submit=t(f"console.confirm.{action}_title"),
    )


def _asked_credential(
    desk: Desk, identity_id: uuid.UUID, credential_id: uuid.UUID, action: str
) -> Credential:
    """The person's credential ``action`` is asked for, if it can be taken on it now (an action
    the table does not offer is 409, as the service would answer)."""
    if action not in CREDENTIAL_ACTIONS:
        raise ConsoleNotFound(f"unknown action {action!r}", detail="no such action")
    desk.caller.require(Permission.MANAGE_CREDENTIALS)
    credential = own_credential(desk, identity_id, credential_id)
    target, possible = CREDENTIAL_ACTIONS[action]
    if not possible(credential):
        raise InvalidTransition("credential", credential.state.value, target.value)
    return credential


def _suspendable(desk: Desk, identity_id: uuid.UUID) -> PersonView:
    """The person, if they can be suspended now (409 otherwise, as the service would answer)."""
    desk.caller.require(Permission.SUSPEND)
    identity = _person(desk, identity_id)
    if IdentityStatus.SUSPENDED not in IDENTITY_TRANSITIONS[identity.status]:
        raise InvalidTransition("identity", identity.status.value, IdentityStatus.SUSPENDED.value)
    return identity


@router.get("/console/people/{identity_id}/credentials/{credential_id}/{action}")
def confirm_credential_action(
    identity_id: uuid.UUID, credential_id: uuid.UUID, action: str, desk: DeskDep
) -> Response:
    """Block or replace one of the person's credentials: what it is, what will happen, and
    the reason asked (sent to the same path)."""
    credential = _asked_credential(desk, identity_id, credential_id, action)
    return confirm_page(desk, _person(desk, identity_id), action, credential)


@router.get("/console/people/{identity_id}/suspend")
def confirm_suspend(identity_id: uuid.UUID, desk: DeskDep) -> Response:
    """Suspend the identity: what will happen, and the reason asked (sent to the status
    route, as resuming and closing are)."""
    return confirm_page(desk, _suspendable(desk, identity_id), SUSPEND)


def credential_action(
    desk: Desk, identity_id: uuid.UUID, credential_id: uuid.UUID, action: str, form: FormData
) -> Response:
    """Block or replace the credential as confirmed with a reason (audited with it); without a
    reason, the confirmation again with the error at its field."""
    reason = reason_of(form)
    if len(reason) < REASON_LEAST:
        credential = _asked_credential(desk, identity_id, credential_id, action)
        identity = _person(desk, identity_id)
        return confirm_page(desk, identity, action, credential, reason=reason, missing=True)

    def run(ops: IdentityOperations) -> object:
        if action == "block":
            return ops.transition(credential_id, CredentialState.BLOCKED, reason)
        return ops.replace(credential_id, reason=reason)

    return act(
        desk, identity_id, Permission.MANAGE_CREDENTIALS, run, f"console.person.done_{action}"
    )


def suspend(desk: Desk, identity_id: uuid.UUID, form: FormData) -> Response:
    """Suspend the identity as confirmed with a reason (audited with it); without a reason,
    the confirmation again with the error at its field."""
    desk.caller.require(Permission.SUSPEND)
    reason = reason_of(form)
    if len(reason) < REASON_LEAST:
        identity = _suspendable(desk, identity_id)
        return confirm_page(desk, identity, SUSPEND, reason=reason, missing=True)
    return act(
        desk,
        identity_id,
        Permission.SUSPEND,
        lambda ops: ops.suspend(identity_id, reason),
        "console.person.done_suspend",
    )
