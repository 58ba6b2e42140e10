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
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from server.api.deps import ServicesDep, SessionDep, actor_of, source_of
from server.api.problems import status_of
from server.domain.errors import DomainError
from server.domain.model import CredentialKind, CredentialState, ProofingChannel
from server.services.errors import WeakPassword
from server.services.migration.flow import MigrationFlows
from server.services.migration.flow_errors import (
    ActivationIncomplete,
    ActivationInputMissing,
)
from server.services.migration.flow_model import (
    ENROLLED_APART,
    EXCLUSIVE,
    Authenticator,
    FlowView,
    NextAction,
)
from server.web.browser import Browser, BrowserDep, CheckedForm
from server.web.migrate_render import (
    Errors,
    Explain,
    Failed,
    Pages,
    field_for,
    memory,
    remember,
)
from server.web.render import mark_page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

_USER_ID = re.compile(r"^[^\x00-\x20\x7f]{1,64}$")
_SERIAL = re.compile(r"^[\x20-\x7e]{1,128}$")


def _attempt(db: Session, step: Callable[[], FlowView]) -> FlowView | Failed:
    savepoint = db.begin_nested()
    try:
        view = step()
    except DomainError as exc:
        if exc.recorded:
            savepoint.commit()  # counters, lock and step event stay with the answer
            return Failed(exc, dict(exc.extra), recorded=True)
        savepoint.rollback()  # nothing of a refused step is kept
        return Failed(exc)
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()
    return view


def _flows(request: Request, db: Session, services: ServicesDep) -> MigrationFlows:
    return services.migration_flows(db, actor_of(request))


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
        return pages.start(status=status_of(exc), errors=[("user_id", message)], user_id=user_id)
    savepoint.commit()
    remember(browser, started.view.id, user_id, started.index)
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
                status=status_of(result.error),
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
        kept = memory(self.browser, self.flow_id)
        remember(self.browser, self.flow_id, str(kept.get("user_id", "")), failed.extra["index"])
        view = self.flows.view(self.flow_id)
        message = self.pages.t("migrate.error.proof_again")
        return self.pages.current(
            view, status=status_of(failed.error), errors=[("password", message)]
        )

    def view(self) -> FlowView:
        return self.flows.view(self.flow_id)

    def refused(
        self, failure: Failed, field_id: str, message: str | None = None, **context: Any
    ) -> Response:
        """The page of the step the flow is due for again, with the failed step's ``message``
        (by default its own wording) at ``field_id``."""
        text = self.explain.message(failure) if message is None else message
        errors = [(field_id, text)]
        return self.pages.current(
            self.view(), status=status_of(failure.error), errors=errors, **context
        )


def _step(
    flow_id: uuid.UUID, request: Request, browser: BrowserDep, db: SessionDep, services: ServicesDep
) -> Step:
    return Step(flow_id, request, browser, db, services)


StepDep = Depends(_step)


@router.post("/migrate/{flow_id}/prove")
def prove(request: Request, form: CheckedForm, step: Step = StepDep) -> Response:
    """The legacy proof: user id, password and the code beside the key number shown."""
    kept = memory(step.browser, step.flow_id)
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
        lambda: step.flows.prove(step.flow_id, user_id, password, code, source=source_of(request)),
    )

    def failed(failure: Failed) -> Response:
        if "index" in failure.extra:  # a new key number after a failed code
            remember(step.browser, step.flow_id, user_id, failure.extra["index"])
        else:
            remember(step.browser, step.flow_id, user_id, kept.get("index"))
        return step.refused(failure, field_for(failure.error, ""), typed=typed)

    if isinstance(result, FlowView):
        remember(step.browser, step.flow_id, user_id, None)
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
        return step.refused(
            failure, field_for(failure.error, "person_number"), message, typed=typed
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
            message = step.pages.t("migrate.error.choose_none")
        elif chosen >= EXCLUSIVE:
            message = step.pages.t("migrate.error.choose_exclusive")
        elif chosen <= {Authenticator.PASSWORD}:
            message = step.pages.t("migrate.error.choose_password_only")
        else:
            message = step.explain.message(failure)
        return step.pages.choose(
            step.view(),
            flow_id=step.flow_id,
            status=status_of(failure.error),
            errors=[("kind-code_display", message)],
            ticked=ticked,
        )

    return step.done(result, failed)


def _activation_problems(
    step: Step, view: FlowView, password: str | None, serial: str | None, code: str | None
) -> Errors:
    """Everything wrong with what was typed that can be told without trying it (a try of a
    serial or code counts), all at once and in the order of the fields."""
    t = step.pages.t
    needed = view.needed if view.next_action is NextAction.ACTIVATE else ()
    errors: Errors = []
    if serial is not None and not _SERIAL.match(serial):
        errors.append(("serial", t("migrate.error.serial")))
    elif serial is None and "serial" in needed:
        errors.append(("serial", t("migrate.error.serial_missing")))
    if code is None and "code" in needed:
        errors.append(("code", t("migrate.error.code_missing")))
    elif code is not None and not code.isdigit():
        errors.append(("code", t("migrate.error.code_digits")))
    if password is None and "password" in needed:
        errors.append(("password", t("migrate.error.password_missing")))
    elif password is not None and "password" in needed:
        try:
            step.pages.services.passwords.check_policy(password, avoid=(view.name or "").split())
        except WeakPassword as exc:
            errors.append(("password", step.explain.message(Failed(exc))))
    return errors


@router.post("/migrate/{flow_id}/activate")
def activate(form: CheckedForm, step: Step = StepDep) -> Response:
    """Create the new identity and activate the password and the token (serial + code)."""
    password = str(form.get("password", "")) or None
    serial = str(form.get("serial", "")).strip() or None
    code = "".join(str(form.get("code", "")).split()) or None
    typed = {"serial": serial or ""}
    view = step.view()
    if errors := _activation_problems(step, view, password, serial, code):
        return step.pages.current(view, status=422, errors=errors, typed=typed)
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
        return step.refused(failure, field_for(error, "code"), message, typed=typed)

    return step.done(result, failed)


@router.post("/migrate/{flow_id}/security-key")
def security_key(form: CheckedForm, step: Step = StepDep) -> Response:
    """The security key's answer to the registration the enrol page began: the key becomes a
    credential of the new identity, recorded in the flow."""
    kept = memory(step.browser, step.flow_id)
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
    fido = services.fido(step.db)
    savepoint = step.db.begin_nested()
    try:
        credential = fido.register_complete(uuid.UUID(state), response)
    except DomainError:
        savepoint.commit()  # the registration is closed even when refused
        message = step.pages.t("migrate.error.security_key")
        return step.pages.current(step.view(), status=422, errors=[("security-key", message)])
    savepoint.commit()
    result = _attempt(step.db, lambda: step.flows.record_credential(step.flow_id, credential.id))
    return step.done(result, lambda failure: step.refused(failure, "security-key"))


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
        for credential in services.credentials(step.db).for_identity(view.identity_id)
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
    return step.done(result, lambda failure: step.refused(failure, "record"))


@router.post("/migrate/{flow_id}/complete")
def complete(form: CheckedForm, step: Step = StepDep) -> Response:
    """Finish: the legacy user is marked as moved to the new identity."""
    result = _attempt(step.db, lambda: step.flows.complete(step.flow_id))

    def failed(failure: Failed) -> Response:
        if isinstance(failure.error, ActivationIncomplete):
            return step.refused(failure, "", step.pages.t("migrate.error.activation-incomplete"))
        return step.refused(failure, "")

    return step.done(result, failed)
