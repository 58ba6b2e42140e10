"""The errors a login's steps answer with (besides ``FactorRejected``, the domain's)."""

from __future__ import annotations

from typing import Any

from server.domain.errors import (
    ConflictingState,
    DomainError,
    Expired,
    Refused,
    TooManyAttempts,
    UnknownSubject,
    Unverified,
)
from server.domain.model import Level


class TransactionUnknown(UnknownSubject):
    code = "not-found"


class TransactionExpired(Expired):
    code = "transaction-expired"


class TransactionClosed(ConflictingState):
    code = "conflict"


class LoginBoundElsewhere(ConflictingState):
    """The login's pages were opened in another browser, which alone may go on with it."""

    code = "login-bound-elsewhere"


class Throttled(TooManyAttempts):
    """Too many failures from where this came from: nothing is checked until the wait is
    over. Nothing of the person changed; from elsewhere they go on as before."""

    code = "rate-limited"
    default_detail = "too many attempts from here; wait and try again"

    @classmethod
    def after(cls, seconds: int) -> Throttled:
        error = cls(f"throttled for {seconds} s")
        error.retry_after = seconds
        return error


class TemporarilyBlocked(Throttled):
    """The code token or key card was given wrong codes after another factor of a login was
    proven, and refuses codes for a while (told only to a login that proved another factor)."""

    code = "credential-temporarily-blocked"
    default_detail = "too many wrong codes: this device is blocked for a while; try again later"


class NoMoreTime(DomainError):
    """The login was extended as often as it may be."""

    code = "no-more-time"


class StepUpRequired(Refused):
    """The factors so far do not reach the level the provider asked for."""

    code = "step-up-required"
    title = "Step up required"

    def __init__(self, achieved: Level, required: Level) -> None:
        super().__init__(
            f"level {achieved.name} below {required.name}",
            detail=f"this service needs level {required.name.lower()}: add another factor",
        )
        self.achieved = achieved
        self.required = required

    def extensions(self) -> dict[str, Any]:
        return {"achieved": self.achieved.label, "required": self.required.label, **self.extra}


class LoginNoLongerValid(Unverified):
    """At ``complete``: the identity, or a credential the login was proven with, is no longer
    active (suspended, blocked, revoked since its factor). The login is closed."""

    code = "login-no-longer-valid"
    default_detail = "this login can no longer be completed: start again"


class IdentitySuspended(Refused):
    """A factor was proven for a person whose identity is suspended. Only then is it said
    (whoever proved the factor holds it, and learns nothing a stranger could): a factor that
    fails for a suspended person is answered as for anyone, after the same work."""

    code = "identity-suspended"
    default_detail = (
        "this eID is suspended: a citizen service centre or the eID support can lift the suspension"
    )
