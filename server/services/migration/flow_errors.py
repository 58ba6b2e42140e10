"""Why a step of the guided migration did not go through: a stable ``code`` and a public
``detail`` that tells the person what to do, never whether a legacy user id exists before the
legacy proof succeeded, and never a person number, password or code."""

from __future__ import annotations

from typing import Any

from server.domain.errors import ConflictingState, DomainError, Unprocessable
from server.services.lifecycle_errors import ConcurrentChange


class FlowError(DomainError):
    """Base of the migration flow's own errors."""

    code = "migration-error"


class ProofRequired(FlowError, ConflictingState):
    """The step needs the legacy proof first: the flow waits for it (as every flow does before
    the proof, and one started again does), or the id is nobody's."""

    code = "proof-required"
    default_detail = (
        "prove yourself first with your legacy user ID, password and the code for the key "
        "number shown"
    )


class StartAgain(FlowError, ConflictingState):
    """The flow was left idle too long (or its proof was used up): a new legacy proof resumes
    it where it stopped."""

    code = "start-again"
    default_detail = (
        "this migration was paused; start again with your legacy user ID and you will "
        "continue where you stopped"
    )


class AlreadyMigrated(FlowError, ConflictingState):
    """The person has moved to the new eID already (told only after the legacy proof)."""

    code = "already-migrated"
    default_detail = "you have moved to the new eID already; log in with it"


class StepNotAvailable(FlowError, ConflictingState):
    """A step out of order; ``next_action`` says which step is due."""

    code = "step-not-available"

    def __init__(self, step: str, next_action: str | None) -> None:
        self.next_action = next_action
        due = f"the next step is {next_action!r}" if next_action else "the migration is complete"
        super().__init__(f"{step} not available; {due}", detail=f"not available now: {due}")

    def extensions(self) -> dict[str, Any]:
        return {"next_action": self.next_action, **self.extra}


class DetailsMismatch(FlowError, Unprocessable):
    """The person number (or name) typed is not the one the legacy eID holds; ``field`` says
    which, never the value."""

    code = "details-mismatch"

    def __init__(self, field: str) -> None:
        self.field = field
        what = "person number" if field == "person_number" else "name"
        super().__init__(
            f"{field} does not match the legacy record",
            detail=(
                f"the {what} does not match what the legacy eID holds; check it, or contact a "
                "citizen service centre if it has changed"
            ),
        )

    def extensions(self) -> dict[str, Any]:
        return {"field": self.field, **self.extra}


class InvalidChoice(FlowError, Unprocessable):
    code = "invalid-choice"

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)


class ActivationInputMissing(FlowError, Unprocessable):
    """The activation step lacks what the chosen authenticators need."""

    code = "activation-input-missing"

    def __init__(self, missing: tuple[str, ...]) -> None:
        self.missing = missing
        super().__init__(detail=f"to activate what you chose, send: {', '.join(missing)}")

    def extensions(self) -> dict[str, Any]:
        return {"missing": list(self.missing), **self.extra}


class ActivationIncomplete(FlowError, ConflictingState):
    """Completion before every chosen authenticator is active."""

    code = "activation-incomplete"

    def __init__(self, missing: tuple[str, ...]) -> None:
        self.missing = missing
        super().__init__(detail=f"still to activate: {', '.join(missing)}")

    def extensions(self) -> dict[str, Any]:
        return {"missing": list(self.missing), **self.extra}


class CredentialNotUsable(FlowError, ConflictingState):
    """A credential recorded for the flow that is not an active one of the new identity, of a
    kind the person chose."""

    code = "credential-not-usable"
    default_detail = "this is not an active security key or smartcard of the new identity"


class FlowChanged(ConcurrentChange, ConflictingState):
    """Another request changed the flow since this one read it (a second browser)."""

    default_detail = (
        "this migration was changed at the same moment elsewhere (another browser or window?); "
        "reload it and continue there"
    )
