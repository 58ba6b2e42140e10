"""The migration wizard's pages and wording: which page a flow's state shows (with the
errors of the last attempt and what was typed put back), what the browser keeps between
steps, and how a failed step is told in the browser's language."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from server.api.deps import ServicesDep
from server.domain.errors import DomainError
from server.services.credentials.admission import AddedBy
from server.services.errors import WeakPassword
from server.services.migration.flow import DEFAULT_MAX_STEP_FAILURES
from server.services.migration.flow_enrolment import LEGACY_PROOF_LEVEL
from server.services.migration.flow_errors import DetailsMismatch
from server.services.migration.flow_model import (
    STEP_OF_STATE,
    STEPS,
    TOKENS,
    Authenticator,
    FlowState,
    FlowView,
    NextAction,
)
from server.services.throttles import SUBJECT_RATE
from server.storage.migration_tables import MigrationFlow
from server.web.browser import Browser, own_origin
from server.web.render import page

# The start page is step 1, then the flow's own steps (prove ... finish).
TOTAL = STEPS + 1
MEMORY = "migrate"  # browser page state: the flow, its user id and the key number shown
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


# --- what the browser keeps between steps -------------------------------------------------------


def remember(browser: Browser, flow_id: uuid.UUID, user_id: str, index: str | None) -> None:
    browser.remember(MEMORY, {"flow": str(flow_id), "user_id": user_id, "index": index})


def memory(browser: Browser, flow_id: uuid.UUID) -> dict[str, Any]:
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
        return f"{own_origin(self.request)}/migrate/{flow_id}"

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
            kept = memory(self.browser, view.id)
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
        the browser session for the answer. The person proved themselves with the legacy eID
        only, so the key is added on the strength of that proof (a self-service identity made
        from it is no higher, so the key is admitted)."""
        assert view.identity_id is not None  # noqa: S101 - checked by the caller
        db = self.browser.db
        service = self.services.fido(db)
        options, state_id = service.register_begin(
            view.identity_id, added_by=AddedBy.login(LEGACY_PROOF_LEVEL)
        )
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
        """The throttle a user id meets from one connection, for the page's explanation."""
        return {
            "max": SUBJECT_RATE.burst,
            "minutes": max(1, int(SUBJECT_RATE.interval.total_seconds() // 60)),
        }


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


def field_for(error: DomainError, default: str) -> str:
    fields = {
        "verification-failed": "password",
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
