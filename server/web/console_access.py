"""What the console's pages share: the operator's desk (the request, browser, operator and
services every console route works with), the typed operator key check (sign-in and a second
operator's approval; rate-limited per source address and audited), the operator's channels, and
how a refused action is told."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from server.api.deps import ServicesDep, SessionDep, source_of
from server.api.problems import status_of
from server.domain.errors import DomainError, UnknownSubject
from server.domain.model import ProofingChannel
from server.services.access import Caller, NotPermitted, Permission
from server.services.identities import DOCUMENT_KINDS
from server.services.identity_operations import OPERATOR_ID, IdentityOperations
from server.services.proofing_approvals import may_approve_at
from server.services.throttles import KEY_ENTRY_MAX_FAILURES, KEY_ENTRY_WINDOW
from server.storage.throttle_repositories import RateLimitRepository
from server.web.browser import Browser, BrowserDep, OperatorDep
from server.web.render import page
from server.wiring import Services

# Failed key entries (sign-in and a second operator's approval) per source address.
SIGN_IN_WINDOW = KEY_ENTRY_WINDOW
SIGN_IN_MAX_FAILURES = KEY_ENTRY_MAX_FAILURES
ASSISTED = (ProofingChannel.BANK, ProofingChannel.SERVICE_CENTRE)
IN_PERSON_DOCUMENTS = ("passport", "driving_licence", "national_id_card")
# The id an error about the document choice links to: the group's first choice.
DOCUMENT_FIELD = f"document_kind-{IN_PERSON_DOCUMENTS[0]}"
# What a later proofing of an enrolled person may rest on: every kind the service knows, the
# documents shown in person first (only they can give High).
PROOFING_DOCUMENTS = (
    *IN_PERSON_DOCUMENTS,
    *(kind for kind in DOCUMENT_KINDS if kind not in IN_PERSON_DOCUMENTS),
)


def now_of(services: Services) -> dt.datetime:
    return dt.datetime.fromtimestamp(services.clock(), dt.UTC)


def message(browser: Browser, code: str) -> str:
    """The page text for a refused action (a problem code): the console's own text for the
    code, else a general one."""
    key = f"console.error.{code}"
    return browser.t(key) if browser.t.has(key) else browser.t("console.error.generic")


def fits(pattern: str, value: str) -> bool:
    """Whether ``value`` has the shape the API's request models demand (``pattern``)."""
    return re.fullmatch(pattern, value) is not None


def operators_fit(operators: Sequence[str]) -> bool:
    """Whether the operators' names can be recorded as a proofing's operator ids (a key's name
    may hold characters an operator id may not)."""
    return len(operators) <= 10 and all(fits(OPERATOR_ID, name) for name in operators)


def channels(caller: Caller) -> list[ProofingChannel]:
    return [channel for channel in ASSISTED if caller.may_prove_on(channel)]


def channel_of(form: FormData, caller: Caller) -> ProofingChannel | None:
    """The channel the operator chose on the form, or ``None`` when they chose none of theirs
    (a field error, ``channel_missing``). An operator with one channel is told it instead of
    offered a choice, so a form naming none means theirs, and one naming another is a forged
    form, refused as an action their role does not allow."""
    own = channels(caller)
    typed = str(form.get("channel", ""))
    if len(own) == 1 and typed in ("", own[0].value):
        return own[0]
    if len(own) < 2:
        raise NotPermitted(f"{caller.actor} may not act on {typed!r}", detail="not your channel")
    return next((channel for channel in own if channel.value == typed), None)


def channel_missing(browser: Browser, caller: Caller) -> tuple[str, str]:
    """The error of a channel not chosen, tied to the channel group (its first choice)."""
    return f"channel-{channels(caller)[0].value}", browser.t("console.channel.missing")


def check_operator_key(
    request: Request, db: Session, services: Services, typed: str, purpose: str
) -> tuple[Caller | None, str, int]:
    """The operator behind a typed API key, or why not (a catalogue key and a status). Failures
    count per source address, as the login service counts them, and lock it out for a while;
    every attempt is audited."""
    source = source_of(request)
    limit_key = f"console-key:{source}"
    now = now_of(services)
    limits = RateLimitRepository(db)
    state = limits.states([limit_key]).get(limit_key)
    anonymous = services.audit_hook(db, f"source:{source}")
    if state is not None and state.locked_until is not None and state.locked_until > now:
        anonymous("console.sign_in", {"result": "throttled", "purpose": purpose})
        return None, "console.login.throttled", 429
    caller = services.api_keys.authenticate("".join(typed.split()))
    if caller is None:
        limits.record_failure(
            limit_key,
            now,
            window=SIGN_IN_WINDOW,
            max_failures=SIGN_IN_MAX_FAILURES,
            lockout=SIGN_IN_WINDOW,
        )
        anonymous("console.sign_in", {"result": "failed", "purpose": purpose})
        return None, "console.login.wrong_key", 401
    audit = services.audit_hook(db, caller.actor)
    if not caller.may(Permission.VIEW_IDENTITY):
        audit("console.sign_in", {"result": "refused", "purpose": purpose})
        return None, "console.login.not_operator", 403
    audit("console.sign_in", {"result": "ok", "purpose": purpose})
    return caller, "", 200


def check_second_operator(
    request: Request,
    db: Session,
    services: Services,
    first: Caller,
    channel: ProofingChannel,
    typed: str,
) -> tuple[Caller | None, str, int]:
    """The second operator approving a High proofing by typing their own key at the first
    operator's desk, or why not (a catalogue key and a status): another operator, who may
    enrol and prove on ``channel``, of the first operator's organisation (a supervisor: any).
    The key check is rate-limited and audited like a sign-in."""
    second, error, status = check_operator_key(request, db, services, typed, "second_operator")
    if second is None:
        return None, error, status
    if second.key_id == first.key_id or second.name == first.name:
        return None, "console.second.same_operator", 422
    if not may_approve_at(second, channel, first.organisation):
        return None, "console.second.wrong_channel", 403
    return second, "", 200


class ConsoleNotFound(UnknownSubject):
    """A console page for something that is not there (a flow, a step, a waiting enrolment)."""

    code = "not-found"


@dataclass(frozen=True)
class Desk:
    """One console request at an operator's desk: what every console route and page works with,
    so they pass one thing around instead of five."""

    request: Request
    browser: Browser
    caller: Caller
    db: Session
    services: Services

    def page(
        self,
        template: str,
        *,
        title: str,
        status: int = 200,
        errors: list[tuple[str, str]] | None = None,
        **context: Any,
    ) -> Response:
        """``template`` for this operator (``errors`` as ``render.page`` takes them)."""
        return page(
            self.request,
            self.browser,
            template,
            title=title,
            status=status,
            errors=errors or [],
            **context,
        )

    def operations(self) -> IdentityOperations:
        """The identity and credential operations, with this operator as caller and actor."""
        return self.services.identity_operations(self.db, self.caller)

    def audit(self, event: str, details: dict[str, Any]) -> None:
        """An audit entry with this operator as actor."""
        self.services.audit_hook(self.db, self.caller.actor)(event, details)

    def refusal(
        self, exc: DomainError, field: str, *passing: type[DomainError]
    ) -> tuple[int, list[tuple[str, str]]]:
        """The status and error of a refused action, shown on the page again after its changes
        are rolled back. ``NotPermitted`` and the ``passing`` errors are raised on as they are
        (their own error page: a forged form, something that is not there)."""
        if isinstance(exc, (NotPermitted, *passing)):
            raise exc
        self.db.rollback()
        return status_of(exc), [(field, message(self.browser, exc.code))]


def desk(
    request: Request,
    browser: BrowserDep,
    caller: OperatorDep,
    db: SessionDep,
    services: ServicesDep,
) -> Desk:
    return Desk(request, browser, caller, db, services)


# A route's desk; after ``CheckedForm`` in a route's parameters, so the form is checked first.
DeskDep = Annotated[Desk, Depends(desk)]
