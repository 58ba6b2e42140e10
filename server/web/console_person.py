"""The console's page of one person: the identity, its proofing records, its credentials and
the actions the operator's role allows. Shared by the routes that act on the person (``act``),
which show the page again with the reason when an action is refused."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.responses import Response

from server.domain.errors import DomainError
from server.domain.model import CredentialKind, CredentialState, IdentityStatus, Level
from server.services.access import Permission
from server.services.credentials.admission import held_back, recorded_level
from server.services.credentials.rules import TRANSITIONS
from server.services.identities import masked_person_number
from server.services.identity_operations import IdentityOperations, IdentityRecord
from server.services.lifecycle_errors import CredentialNotFound, IdentityNotFound
from server.storage.tables import Credential, ProofingRecord
from server.web.console_access import PROOFING_DOCUMENTS, Desk, channels
from server.web.credential_display import CredentialNames, matches, searchable
from server.web.render import redirect

# What an operator may order for a person: devices (a password is set, a key card is legacy).
ORDERABLE = tuple(
    k for k in CredentialKind if k not in (CredentialKind.PASSWORD, CredentialKind.KEY_CARD)
)


@dataclass(frozen=True)
class PersonView:
    """What the person's page shows of the identity: the CPR-nummer masked (ddmmyy-****)."""

    id: uuid.UUID
    name: str
    person_number: str
    status: IdentityStatus
    identity_assurance: Level
    proofing: list[ProofingRecord]

    @classmethod
    def of(cls, record: IdentityRecord) -> PersonView:
        identity = record.identity
        return cls(
            identity.id,
            identity.name,
            masked_person_number(identity.person_number),
            identity.status,
            identity.identity_assurance,
            record.proofing,
        )


def when(value: dt.datetime, lang: str) -> str:
    """A proofing's date and time as the operator reads it (local time, the language's form)."""
    local = value.astimezone()
    if lang == "da":
        return local.strftime("%d.%m.%Y kl. %H.%M")
    return local.strftime("%d/%m/%Y %H:%M")


def blockable(credential: Credential) -> bool:
    """Whether an operator may block the credential now (the transition table allows it)."""
    return CredentialState.BLOCKED in TRANSITIONS[credential.state]


def replaceable(credential: Credential) -> bool:
    """Whether an operator may replace the credential now (a password is changed instead)."""
    return (
        credential.kind is not CredentialKind.PASSWORD
        and CredentialState.REPLACED in TRANSITIONS[credential.state]
    )


def admittable(credentials: list[Credential], identity: PersonView) -> frozenset[uuid.UUID]:
    """The credentials an operator may admit in person (the person at the desk): active ones
    the person added at a level below what they could count toward now (proofed higher since,
    see ``credentials.admission``)."""
    if identity.status is not IdentityStatus.ACTIVE:
        return frozenset()
    return frozenset(
        c.id
        for c in credentials
        if c.state is CredentialState.ACTIVE
        and held_back(c, identity.identity_assurance) is not None
    )


def found(t: Callable[[str], str], credentials: list[Credential], sought: str) -> list[str]:
    """The credentials whose identifier has what the person read out, as the page names them
    (kind, identifier and state), so the operator knows which row the person means."""
    names = CredentialNames(t)
    return [
        f"{names.described(c)} ({t(f'console.state.{c.state.value}')})"
        for c in credentials
        if matches(c, sought)
    ]


def person_page(
    desk: Desk,
    identity_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    proofing: Mapping[str, str] | None = None,
    sought: str | None = None,
) -> Response:
    """The person's page; reading it is audited as ``identity.viewed``.
    ``proofing`` holds what the operator chose in the proofing form, shown again on an error;
    ``sought`` what the person read out of a credential's serial number, to find it by."""
    browser, caller = desk.browser, desk.caller
    caller.require(Permission.VIEW_IDENTITY)
    operations = desk.operations()
    identity = PersonView.of(operations.view(identity_id))
    manage = caller.may(Permission.MANAGE_CREDENTIALS)
    credentials = operations.credentials(identity_id) if manage else []
    own = channels(caller)
    errors = list(errors or [])
    sought = (sought or "").strip()[:64] or None
    matching = None
    if sought is not None and manage:
        if searchable(sought):
            matching = found(browser.t, credentials, sought)
        else:
            errors.append(("credential", browser.t("console.credentials.find_too_short")))
            status = 422
    return desk.page(
        "console_person.html",
        title=browser.t("console.person.title", name=identity.name),
        status=status,
        errors=errors,
        sought=sought or "",
        found=matching,
        identity=identity,
        credentials=credentials,
        may_manage=manage,
        may_suspend=caller.may(Permission.SUSPEND),
        may_close=caller.may(Permission.CLOSE),
        may_prove=caller.may(Permission.ENROL) and bool(own),
        channels=own,
        documents=PROOFING_DOCUMENTS,
        proofing_values={"channel": "", "document_kind": "", "level": "", **(proofing or {})},
        when=lambda value: when(value, browser.lang),
        may_block=blockable,
        may_replace=replaceable,
        # The level each counts toward at most (None: not recorded), and whether admitting it
        # in person would raise that (the person proofed higher since they added it).
        admitted=lambda c: recorded_level(c.public_data),
        admittable=admittable(credentials, identity),
        orderable=ORDERABLE,
    )


def act(
    desk: Desk,
    identity_id: uuid.UUID,
    permission: Permission,
    action: Callable[[IdentityOperations], object],
    done: str,
    field: str = "",
) -> Response:
    """Run one action on a person for the operator (who must hold ``permission``: a forged form
    is refused 403); a refused action rolls back and shows the person's page with the reason."""
    desk.caller.require(permission)
    try:
        action(desk.operations())
    except DomainError as exc:
        status, errors = desk.refusal(exc, field, IdentityNotFound, CredentialNotFound)
        return person_page(desk, identity_id, status=status, errors=errors)
    desk.browser.flash(done)
    return redirect(desk.browser, f"/console/people/{identity_id}")


def own_credential(desk: Desk, identity_id: uuid.UUID, credential_id: uuid.UUID) -> Credential:
    """The credential, which must be this person's: a form cannot reach another person's
    through the page of this one (and its audit entries name the right person)."""
    credential = desk.operations().credential(credential_id)
    if credential.identity_id != identity_id:
        raise CredentialNotFound
    return credential
