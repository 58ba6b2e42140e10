"""Pages: the citizen's own migration wizard from the legacy eID (self-service channel), one
step per page over ``MigrationFlows``: start by legacy user id, prove with password and a
key-card code, confirm the details, choose and activate the new credentials, record a
security key or smartcard, finish.

``/migrate/<flow id>`` always shows the step the flow is due for, so the address is the
resume link. Failed steps that the flow records (failure counters, a lock, the step event) are
answered with the page, not raised, so the record is committed with it, as the API does; any
other refusal rolls the step back (a savepoint: the browser session's own changes stay).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from server.api.deps import ServicesDep, SessionDep, actor_of
from server.api.fido import fido_service
from server.api.keycard import load_secrets
from server.api.legacy import legacy_policy
from server.api.migration import FLOW_STATUS, migration_flows
from server.api.problems import STATUS_BY_CODE
from server.services.credentials import CredentialService
from server.services.errors import DomainError, WeakPassword
from server.services.legacy.errors import LegacyLocked
from server.services.legacy.flow import DEFAULT_MAX_STEP_FAILURES, MigrationFlows
from server.services.legacy.flow_errors import (
    ActivationIncomplete,
    ActivationInputMissing,
    DetailsMismatch,
    Recorded,
)
from server.services.legacy.flow_model import (
    ENROLLED_APART,
    EXCLUSIVE,
    STEP_OF_STATE,
    STEPS,
    TOKENS,
    Authenticator,
    FlowState,
    FlowView,
    NextAction,
)
from server.storage.migration_tables import MigrationFlow
from server.storage.tables import CredentialKind, CredentialState, ProofingChannel
from server.web.browser import Browser, BrowserDep, CheckedForm
from server.web.render import mark_page, page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

# The start page is step 1, then the flow's own steps (prove ... finish).
TOTAL = STEPS + 1
MEMORY = "migrate"  # browser page state: the flow, its user id and the key number shown
_USER_ID = re.compile(r"^[^\x00-\x20\x7f]{1,64}$")
_SERIAL = re.compile(r"^[\x20-\x7e]{1,128}$")
# The order the choices are offered in: the usual first.
KINDS = (
    Authenticator.CODE_DISPLAY,
    Authenticator.AUDIO_READER,
    Authenticator.FIDO2,
    Authenticator.PIV,
    Authenticator.PASSWORD,
)
Errors = list[tuple[str, str]]


@dataclass(frozen=True)
class Failed:
    """A step that did not go through: ``recorded`` if its record was kept (committed)."""

    error: DomainError
    extra: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False


def _attempt(db: Session, step: Callable[[], FlowView]) -> FlowView | Failed:
    savepoint = db.begin_nested()
    try:
        view = step()
    except Recorded as recorded:
        savepoint.commit()  # counters, lock and step event stay with the answer
        return Failed(recorded.error, recorded.extra, recorded=True)
    except DomainError as exc:
        savepoint.rollback()  # nothing of a refused step is kept
        return Failed(exc)
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()
    return view


def _flows(request: Request, db: Session, services: ServicesDep) -> MigrationFlows:
    return migration_flows(db, services, request, actor_of(request))


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _status(error: DomainError) -> int:
    return FLOW_STATUS.get(error.code) or STATUS_BY_CODE.get(error.code, 400)


# --- what the browser keeps between steps -------------------------------------------------------


def _remember(browser: Browser, flow_id: uuid.UUID, user_id: str, index: str | None) -> None:
    browser.remember(MEMORY, {"flow": str(flow_id), "user_id": user_id, "index": index})


def _memory(browser: Browser, flow_id: uuid.UUID) -> dict[str, Any]:
    kept = browser.data(MEMORY)
    if isinstance(kept, dict) and kept.get("flow") == str(flow_id):
        return kept
    return {}


# --- rendering ----------------------------------------------------------------------------------


class Pages:
    """Renders the page of a flow's current step (or a step's error) for one request."""

    def __init__(self, request: Request, browser: Browser, services: ServicesDep) -> None:
        self.request = request
        self.browser = browser
        self.services = services
        self.t = browser.t

    def resume_link(self, flow_id: uuid.UUID) -> str:
        return f"{str(self.request.base_url).rstrip('/')}/migrate/{flow_id}"

    def render(
        self,
        template: str,
        title_key: str,
        step: int | None,
        *,
        flow_id: uuid.UUID | None = None,
        status: int = 200,
        errors: Errors | None = None,
        **context: Any,
    ) -> Response:
        return page(
            self.request,
            self.browser,
            template,
            title=self.t(title_key),
            status=status,
            errors=errors or [],
            step=step,
            total=TOTAL,
            flow_id=str(flow_id) if flow_id else None,
            resume=self.resume_link(flow_id) if flow_id else None,
            kind_name=lambda kind: self.t(f"migrate.kind.{kind}"),
            **context,
        )

    def start(
        self, *, status: int = 200, errors: Errors | None = None, user_id: str = ""
    ) -> Response:
        return self.render(
            "migrate_start.html",
            "migrate.start.title",
            1,
            status=status,
            errors=errors,
            user_id=user_id,
        )

    def current(
        self,
        view: FlowView,
        *,
        status: int = 200,
        errors: Errors | None = None,
        typed: dict[str, str] | None = None,
    ) -> Response:
        """The page of the step ``view`` is due for, with ``errors`` of the last attempt and
        what was ``typed`` (never a password or code) put back."""
        typed = typed or {}
        step = view.step + 1
        common: dict[str, Any] = {"flow_id": view.id, "status": status, "errors": errors}
        action = view.next_action
        if view.state is FlowState.COMPLETED or action is None:
            return self.render(
                "migrate_done.html",
                "migrate.done.title",
                None,
                view=view,
                shutdown=self.shutdown(),
                already=False,
                **common,
            )
        if action is NextAction.START:
            return self.render(
                "migrate_resume.html",
                "migrate.again.title",
                step,
                paused=True,
                user_id=typed.get("user_id", ""),
                **common,
            )
        if action is NextAction.PROVE:
            kept = _memory(self.browser, view.id)
            if not kept.get("index"):
                return self.render(
                    "migrate_resume.html",
                    "migrate.resume.title",
                    step,
                    paused=False,
                    user_id=typed.get("user_id", ""),
                    **common,
                )
            return self.render(
                "migrate_prove.html",
                "migrate.prove.title",
                step,
                index=kept["index"],
                user_id=typed.get("user_id", kept.get("user_id", "")),
                lockout=self.lockout(),
                **common,
            )
        if action is NextAction.CONFIRM:
            return self.render(
                "migrate_confirm.html",
                "migrate.confirm.title",
                step,
                view=view,
                person_number=typed.get("person_number", ""),
                **common,
            )
        if action is NextAction.CHOOSE:
            return self.choose(view, **common)
        if action is NextAction.ACTIVATE:
            tokens = [kind for kind in view.still_to_activate if kind in TOKENS]
            return self.render(
                "migrate_activate.html",
                "migrate.activate.title",
                step,
                view=view,
                token=tokens[0].value if tokens else None,
                needs_password="password" in view.needed,
                serial=typed.get("serial", ""),
                **common,
            )
        if action is NextAction.ENROL:
            return self.enrol(view, **common)
        return self.render(
            "migrate_complete.html",
            "migrate.complete.title",
            step,
            view=view,
            shutdown=self.shutdown(),
            **common,
        )

    def choose(self, view: FlowView, **common: Any) -> Response:
        ticked = [kind.value for kind in (view.chosen or view.proposal)]
        typed = common.pop("ticked", None)
        return self.render(
            "migrate_choose.html",
            "migrate.choose.title",
            STEP_OF_STATE[FlowState.DETAILS_CONFIRMED] + 1,
            view=view,
            kinds=[kind.value for kind in KINDS],
            ticked=typed if typed is not None else ticked,
            **common,
        )

    def enrol(self, view: FlowView, **common: Any) -> Response:
        options = None
        if Authenticator.FIDO2 in view.still_to_activate and view.identity_id is not None:
            options = self.fido_options(view)
        return self.render(
            "migrate_enrol.html",
            "migrate.enrol.title",
            view.step + 1,
            view=view,
            still=[kind.value for kind in view.still_to_activate],
            fido_options=options,
            **common,
        )

    def fido_options(self, view: FlowView) -> dict[str, Any]:
        """Creation options for a security key of the new identity; the state's id is kept in
        the browser session for the answer."""
        assert view.identity_id is not None  # noqa: S101 - checked by the caller
        db = self.browser.db
        service = fido_service(db, self.services, load_secrets(self.request.app))
        options, state_id = service.register_begin(view.identity_id)
        kept = dict(self.browser.data(MEMORY) or {})
        kept.update({"flow": str(view.id), "fido_state": str(state_id)})
        self.browser.remember(MEMORY, kept)
        public = options.get("publicKey", options) if isinstance(options, dict) else options
        return dict(public)

    def shutdown(self) -> str | None:
        day = self.services.settings.legacy_shutdown_date
        if day is None:
            return None
        return day.strftime("%d.%m.%Y") if self.browser.lang == "da" else day.strftime("%d %B %Y")

    def lockout(self) -> dict[str, int]:
        policy = legacy_policy(self.services.settings)
        return {
            "max": policy.max_failures,
            "minutes": max(1, int(policy.lockout.total_seconds() // 60)),
        }

    def clock(self, error: LegacyLocked) -> str:
        local = error.until.astimezone()
        return local.strftime("%H.%M" if self.browser.lang == "da" else "%H:%M")


# --- error messages -----------------------------------------------------------------------------


class Explain:
    """Turns a failed step into (field, message) pairs in the browser's language."""

    def __init__(self, pages: Pages, db: Session, flow_id: uuid.UUID | None) -> None:
        self.pages = pages
        self.t = pages.t
        self.db = db
        self.flow_id = flow_id

    def message(self, failed: Failed) -> str:
        error = failed.error
        key = f"migrate.error.{error.code}"
        if isinstance(error, LegacyLocked):
            return self.t(key, until=self.pages.clock(error))
        if isinstance(error, WeakPassword):
            key = f"{key}.{error.reason.value}"
        if isinstance(error, DetailsMismatch) and error.field != "person_number":
            key = f"{key}-name"
        if error.code == "verification-failed":
            return self.t(key, **{k: str(v) for k, v in self.pages.lockout().items()})
        if self.t.has(key):
            return self.t(key)
        return self.t("migrate.error.generic")

    def attempts_left(self) -> str:
        """How many wrong tries after the proof are left before it is due again."""
        flow = self.db.get(MigrationFlow, self.flow_id) if self.flow_id else None
        failures = flow.failures if flow is not None else 0
        left = max(0, DEFAULT_MAX_STEP_FAILURES - failures)
        if left == 1:
            return self.t("migrate.error.attempts_left_one")
        return self.t("migrate.error.attempts_left_many", left=str(left))


def _field_for(error: DomainError, default: str) -> str:
    fields = {
        "verification-failed": "password",
        "locked": "user_id",
        "card-exhausted": "code",
        "no-key-card": "code",
        "token-not-found": "serial",
        "duplicate-serial": "serial",
        "conflicting-credential": "serial",
        "credential-limit-reached": "serial",
        "activation-code-rejected": "code",
        "weak-password": "password",
        "invalid-person-number": "person_number",
    }
    if isinstance(error, DetailsMismatch):
        return "person_number" if error.field == "person_number" else "name"
    return fields.get(error.code, default)


# --- routes -------------------------------------------------------------------------------------


@router.get("/migrate")
def start_page(request: Request, browser: BrowserDep, services: ServicesDep) -> Response:
    return Pages(request, browser, services).start()


@router.post("/migrate")
def start(
    request: Request,
    browser: BrowserDep,
    form: CheckedForm,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    """Start (or find again) the flow of a legacy user id; the answer is the same for any id,
    and the key number to show is kept in the browser session."""
    pages = Pages(request, browser, services)
    user_id = str(form.get("user_id", "")).strip()
    if not _USER_ID.match(user_id):
        message = pages.t(
            "migrate.error.user_id_missing" if not user_id else "migrate.error.user_id"
        )
        return pages.start(status=422, errors=[("user_id", message)], user_id=user_id)
    flows = _flows(request, db, services)
    savepoint = db.begin_nested()
    try:
        started = flows.start(user_id, ProofingChannel.SELF_SERVICE)
    except DomainError as exc:
        savepoint.rollback()  # nothing of a refused start is kept
        message = Explain(pages, db, None).message(Failed(exc))
        return pages.start(status=_status(exc), errors=[("user_id", message)], user_id=user_id)
    savepoint.commit()
    _remember(browser, started.view.id, user_id, started.index)
    return redirect(browser, f"/migrate/{started.view.id}")


@router.get("/migrate/{flow_id}")
def current(
    flow_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    """The step the flow is due for: the resume link."""
    view = _flows(request, db, services).view(flow_id)
    return Pages(request, browser, services).current(view)


@router.get("/migrate/{flow_id}/choose")
def choose_again(
    flow_id: uuid.UUID,
    request: Request,
    browser: BrowserDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    """Change what was chosen, before it is all active (no audio reader after all)."""
    view = _flows(request, db, services).view(flow_id)
    pages = Pages(request, browser, services)
    if view.next_action not in (NextAction.CHOOSE, NextAction.ACTIVATE, NextAction.ENROL):
        return redirect(browser, f"/migrate/{flow_id}")
    return pages.choose(view, flow_id=view.id)


class Step:
    """One POSTed step of a flow: runs it, and on failure answers the page again."""

    def __init__(
        self,
        flow_id: uuid.UUID,
        request: Request,
        browser: Browser,
        db: Session,
        services: ServicesDep,
    ) -> None:
        self.flow_id = flow_id
        self.browser = browser
        self.db = db
        self.flows = _flows(request, db, services)
        self.pages = Pages(request, browser, services)
        self.explain = Explain(self.pages, db, flow_id)

    def done(self, result: FlowView | Failed, on_error: Callable[[Failed], Response]) -> Response:
        if isinstance(result, FlowView):
            return redirect(self.browser, f"/migrate/{self.flow_id}")
        if result.error.code in ("step-not-available", "proof-required"):
            # Another window moved on (or the proof is due): show where the flow is now.
            self.browser.flash("migrate.moved_on")
            return redirect(self.browser, f"/migrate/{self.flow_id}")
        if result.error.code == "start-again":
            return self.again()
        if result.error.code == "already-migrated":
            return self.pages.render(
                "migrate_done.html",
                "migrate.already.title",
                None,
                status=_status(result.error),
                view=None,
                shutdown=self.pages.shutdown(),
                already=True,
            )
        if result.extra.get("proof_required"):
            return self.prove_again(result)
        return on_error(result)

    def again(self) -> Response:
        return self.pages.render(
            "migrate_resume.html",
            "migrate.again.title",
            None,
            flow_id=self.flow_id,
            status=409,
            errors=[("user_id", self.pages.t("migrate.error.start-again"))],
            paused=True,
            user_id="",
        )

    def prove_again(self, failed: Failed) -> Response:
        """Too many wrong tries after the proof: it is due again, with a new key number."""
        kept = _memory(self.browser, self.flow_id)
        _remember(self.browser, self.flow_id, str(kept.get("user_id", "")), failed.extra["index"])
        view = self.flows.view(self.flow_id)
        message = self.pages.t("migrate.error.proof_again")
        return self.pages.current(
            view, status=_status(failed.error), errors=[("password", message)]
        )

    def view(self) -> FlowView:
        return self.flows.view(self.flow_id)


def _step(
    flow_id: uuid.UUID, request: Request, browser: BrowserDep, db: SessionDep, services: ServicesDep
) -> Step:
    return Step(flow_id, request, browser, db, services)


StepDep = Depends(_step)


@router.post("/migrate/{flow_id}/prove")
def prove(request: Request, form: CheckedForm, step: Step = StepDep) -> Response:
    """The legacy proof: user id, password and the code beside the key number shown."""
    kept = _memory(step.browser, step.flow_id)
    user_id = str(form.get("user_id", "")).strip()
    password = str(form.get("password", ""))
    code = str(form.get("code", ""))
    typed = {"user_id": user_id}
    errors: Errors = []
    if not _USER_ID.match(user_id):
        errors.append(("user_id", step.pages.t("migrate.error.user_id_missing")))
    if not password:
        errors.append(("password", step.pages.t("migrate.error.old_password_missing")))
    if not re.fullmatch(r"[0-9\s]{1,32}", code):
        errors.append(("code", step.pages.t("migrate.error.card_code_missing")))
    if errors or not kept.get("index"):
        return step.pages.current(step.view(), status=422, errors=errors, typed=typed)
    result = _attempt(
        step.db,
        lambda: step.flows.prove(step.flow_id, user_id, password, code, source=_source(request)),
    )

    def failed(failure: Failed) -> Response:
        if "index" in failure.extra:  # a new key number after a failed code
            _remember(step.browser, step.flow_id, user_id, failure.extra["index"])
        else:
            _remember(step.browser, step.flow_id, user_id, kept.get("index"))
        message = step.explain.message(failure)
        field_id = _field_for(failure.error, "")
        return step.pages.current(
            step.view(), status=_status(failure.error), errors=[(field_id, message)], typed=typed
        )

    if isinstance(result, FlowView):
        _remember(step.browser, step.flow_id, user_id, None)
    return step.done(result, failed)


@router.post("/migrate/{flow_id}/confirm")
def confirm(form: CheckedForm, step: Step = StepDep) -> Response:
    """Confirm the CPR-nummer (typed) and the name (as shown)."""
    person_number = str(form.get("person_number", "")).strip()
    name = str(form.get("name", ""))
    typed = {"person_number": person_number}
    if not person_number:
        message = step.pages.t("migrate.error.person_number_missing")
        return step.pages.current(
            step.view(), status=422, errors=[("person_number", message)], typed=typed
        )
    result = _attempt(step.db, lambda: step.flows.confirm(step.flow_id, person_number, name))

    def failed(failure: Failed) -> Response:
        message = step.explain.message(failure)
        if failure.recorded:
            message = f"{message} {step.explain.attempts_left()}"
        field_id = _field_for(failure.error, "person_number")
        return step.pages.current(
            step.view(), status=_status(failure.error), errors=[(field_id, message)], typed=typed
        )

    return step.done(result, failed)


@router.post("/migrate/{flow_id}/choose")
def choose(form: CheckedForm, step: Step = StepDep) -> Response:
    """Choose the new credentials (the proposal is ticked already)."""
    known = {kind.value for kind in Authenticator}
    ticked = [str(value) for value in form.getlist("kinds") if str(value) in known]
    kinds = [Authenticator(value) for value in ticked]
    result = _attempt(step.db, lambda: step.flows.choose(step.flow_id, kinds))

    def failed(failure: Failed) -> Response:
        chosen = set(kinds)
        if not chosen:
            key = "migrate.error.choose_none"
        elif chosen >= EXCLUSIVE:
            key = "migrate.error.choose_exclusive"
        elif chosen <= {Authenticator.PASSWORD}:
            key = "migrate.error.choose_password_only"
        else:
            return step.pages.choose(
                step.view(),
                flow_id=step.flow_id,
                status=_status(failure.error),
                errors=[("kind-code_display", step.explain.message(failure))],
                ticked=ticked,
            )
        return step.pages.choose(
            step.view(),
            flow_id=step.flow_id,
            status=_status(failure.error),
            errors=[("kind-code_display", step.pages.t(key))],
            ticked=ticked,
        )

    return step.done(result, failed)


@router.post("/migrate/{flow_id}/activate")
def activate(form: CheckedForm, step: Step = StepDep) -> Response:
    """Create the new identity and activate the password and the token (serial + code)."""
    password = str(form.get("password", "")) or None
    serial = str(form.get("serial", "")).strip() or None
    code = "".join(str(form.get("code", "")).split()) or None
    typed = {"serial": serial or ""}
    if serial is not None and not _SERIAL.match(serial):
        message = step.pages.t("migrate.error.serial")
        return step.pages.current(
            step.view(), status=422, errors=[("serial", message)], typed=typed
        )
    result = _attempt(
        step.db,
        lambda: step.flows.activate(step.flow_id, password=password, serial=serial, code=code),
    )

    def failed(failure: Failed) -> Response:
        error = failure.error
        if isinstance(error, ActivationInputMissing):
            errors = [
                (need, step.pages.t(f"migrate.error.{need}_missing")) for need in error.missing
            ]
            return step.pages.current(step.view(), status=422, errors=errors, typed=typed)
        message = step.explain.message(failure)
        if failure.recorded and error.code in ("activation-code-rejected", "token-not-found"):
            message = f"{message} {step.explain.attempts_left()}"
        field_id = _field_for(error, "code")
        return step.pages.current(
            step.view(), status=_status(error), errors=[(field_id, message)], typed=typed
        )

    return step.done(result, failed)


@router.post("/migrate/{flow_id}/security-key")
def security_key(form: CheckedForm, step: Step = StepDep) -> Response:
    """The security key's answer to the registration the enrol page began: the key becomes a
    credential of the new identity, recorded in the flow."""
    kept = _memory(step.browser, step.flow_id)
    state = kept.get("fido_state")
    sent = str(form.get("credential", ""))
    services = step.pages.services
    if not state or not sent:
        message = step.pages.t("migrate.error.security_key")
        return step.pages.current(step.view(), status=422, errors=[("security-key", message)])
    try:
        response = json.loads(sent)
    except ValueError:
        response = None
    if not isinstance(response, dict):
        message = step.pages.t("migrate.error.security_key")
        return step.pages.current(step.view(), status=422, errors=[("security-key", message)])
    fido = fido_service(step.db, services, load_secrets(step.pages.request.app))
    savepoint = step.db.begin_nested()
    try:
        credential = fido.register_complete(uuid.UUID(state), response)
    except DomainError:
        savepoint.commit()  # the registration is closed even when refused
        message = step.pages.t("migrate.error.security_key")
        return step.pages.current(step.view(), status=422, errors=[("security-key", message)])
    savepoint.commit()
    result = _attempt(step.db, lambda: step.flows.record_credential(step.flow_id, credential.id))

    def failed(failure: Failed) -> Response:
        message = step.explain.message(failure)
        return step.pages.current(
            step.view(), status=_status(failure.error), errors=[("security-key", message)]
        )

    return step.done(result, failed)


@router.post("/migrate/{flow_id}/record")
def record(form: CheckedForm, step: Step = StepDep) -> Response:
    """Record the security key or smartcard enrolled apart: the new identity's active
    credentials of a chosen kind that the flow has not recorded yet."""
    view = step.view()
    services = step.pages.services
    if view.next_action is not NextAction.ENROL or view.identity_id is None:
        return step.done(view, lambda failure: redirect(step.browser, "/"))
    wanted = {
        CredentialKind(kind.value) for kind in view.still_to_activate if kind in ENROLLED_APART
    }
    found = [
        credential.id
        for credential in CredentialService(
            step.db, services.secrets, services.passwords, clock=services.clock
        ).for_identity(view.identity_id)
        if credential.kind in wanted
        and credential.state is CredentialState.ACTIVE
        and credential.id not in view.credential_ids
    ]
    if not found:
        message = step.pages.t("migrate.error.nothing_enrolled")
        return step.pages.current(view, status=409, errors=[("record", message)])
    result: FlowView | Failed = view
    for credential_id in found:
        result = _attempt(
            step.db,
            lambda credential_id=credential_id: step.flows.record_credential(  # type: ignore[misc]
                step.flow_id, credential_id
            ),
        )
        if isinstance(result, Failed):
            break

    def failed(failure: Failed) -> Response:
        message = step.explain.message(failure)
        return step.pages.current(
            step.view(), status=_status(failure.error), errors=[("record", message)]
        )

    return step.done(result, failed)


@router.post("/migrate/{flow_id}/complete")
def complete(form: CheckedForm, step: Step = StepDep) -> Response:
    """Finish: the legacy user is marked as moved to the new identity."""
    result = _attempt(step.db, lambda: step.flows.complete(step.flow_id))

    def failed(failure: Failed) -> Response:
        error = failure.error
        message = step.explain.message(failure)
        if isinstance(error, ActivationIncomplete):
            message = step.pages.t("migrate.error.activation-incomplete")
        return step.pages.current(step.view(), status=_status(error), errors=[("", message)])

    return step.done(result, failed)
