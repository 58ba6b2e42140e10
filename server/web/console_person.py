"""The console's page of one person: the identity, its proofing records, its credentials and
the actions the operator's role allows. Shared by the routes that act on the person, which show
the page again with the reason when an action is refused."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

from starlette.responses import Response

from server.api import identities as api
from server.services.access import Permission
from server.services.credentials.rules import TRANSITIONS
from server.storage.tables import CredentialKind, CredentialState
from server.web.console_access import PROOFING_DOCUMENTS, Desk, channels

# What an operator may order for a person: devices (a password is set, a key card is legacy).
ORDERABLE = tuple(
    k for k in CredentialKind if k not in (CredentialKind.PASSWORD, CredentialKind.KEY_CARD)
)


def when(value: dt.datetime, lang: str) -> str:
    """A proofing's date and time as the operator reads it (local time, the language's form)."""
    local = value.astimezone()
    if lang == "da":
        return local.strftime("%d.%m.%Y kl. %H.%M")
    return local.strftime("%d/%m/%Y %H:%M")


def person_page(
    desk: Desk,
    identity_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    proofing: Mapping[str, str] | None = None,
) -> Response:
    """The person's page; reading it is audited as ``identity.viewed`` (``get_identity``).
    ``proofing`` holds what the operator chose in the proofing form, shown again on an error."""
    browser, caller, db, services = desk.browser, desk.caller, desk.db, desk.services
    caller.require(Permission.VIEW_IDENTITY)
    identity = api.get_identity(identity_id, db, services, caller)
    credentials: list[api.CredentialOut] = []
    manage = caller.may(Permission.MANAGE_CREDENTIALS)
    if manage:
        credentials = api.list_credentials(identity_id, db, services, caller)
    own = channels(caller)
    return desk.page(
        "console_person.html",
        title=browser.t("console.person.title", name=identity.name),
        status=status,
        errors=errors,
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
        may_block=lambda c: CredentialState.BLOCKED in TRANSITIONS[c.state],
        may_replace=lambda c: (
            c.kind is not CredentialKind.PASSWORD
            and CredentialState.REPLACED in TRANSITIONS[c.state]
        ),
        orderable=ORDERABLE,
    )
