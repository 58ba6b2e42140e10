"""The base of every domain error, and the one error a failed login factor raises. The HTTP
layer maps them to problem+json by class, in one table (``server.api.problems``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, ClassVar, Self


class DomainError(Exception):
    """Base of every error raised by ``server.services``.

    ``code`` names the problem type (the HTTP layer turns it into a problem+json ``type``).
    ``detail`` is public text: it never holds a secret, a person number or other input. ``str()``
    is for operators and logs: it may name files or sequence numbers, never secrets.

    ``recorded``: the failure changed state that must outlive the error answer (a failure
    counter, a spent challenge, a closed ceremony, its audit entry): the unit of work commits
    before the error becomes an answer, instead of rolling back. ``extra``: members for the
    answer that the failing step adds (the new key number after a failed legacy proof).
    """

    code: ClassVar[str] = "domain-error"
    default_detail: ClassVar[str] = "the request could not be completed"
    title: ClassVar[str | None] = None  # the problem's title; by default made from ``code``
    recorded: bool = False  # a class default; ``record`` sets it on an instance
    extra: Mapping[str, Any] = MappingProxyType({})
    # Seconds to wait before trying again, when known (the answer's ``Retry-After``).
    retry_after: int | None = None

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        self.detail = detail if detail is not None else self.default_detail
        super().__init__(message if message is not None else self.detail)

    def record(self, **extra: Any) -> Self:
        """This error, ``recorded``, with ``extra`` members for the answer."""
        self.recorded = True
        self.extra = {**self.extra, **extra}
        return self

    def extensions(self) -> dict[str, Any]:
        """Members the problem document carries beside the detail (safe to show, like it)."""
        extra = dict(self.extra)
        if self.retry_after is not None:
            extra["retry_after"] = self.retry_after
        return extra


# The kinds of failure. Each domain error is one of these (or a plain DomainError: the request
# was wrong); the HTTP layer answers each kind with its status, by class, in one table.


class UnknownSubject(DomainError):
    """No such thing, or not one the caller may know of."""


class ConflictingState(DomainError):
    """The thing is not in a state that allows this (now)."""


class Expired(DomainError):
    """It was there, and is no more (a login that took too long, a closed service)."""


class Refused(DomainError):
    """The caller may not do this."""


class Unverified(DomainError):
    """A proof (a code, a password, a signature, a key) was not accepted."""


class TooManyAttempts(DomainError):
    """Throttled: wait and try again (``retry_after`` seconds, when known: the answer's
    ``Retry-After``)."""


class Locked(DomainError):
    """Locked for a while after too many failures."""


class TooLarge(DomainError):
    """More than the service takes at once (a request body over its limit)."""


class Unprocessable(DomainError):
    """Well formed, but not something the service can do."""


class ServiceFault(DomainError):
    """The service's own fault (a key or stored secret it cannot use), not the caller's."""


class Unavailable(DomainError):
    """A part of the service is not available on this machine, or not now (the database is
    overloaded: try again after ``retry_after`` seconds)."""


class FactorRejected(Unverified):
    """A login factor was not accepted, whatever the reason: one answer, so an attacker learns
    neither whether the person exists nor which part was wrong. ``reason`` is a stable code for
    the audit log and the operators, never shown to the person."""

    code = "verification-failed"
    title = "Not accepted"
    default_detail = "the login did not succeed; check what you entered"
    recorded = True

    def __init__(self, reason: str, *, detail: str | None = None) -> None:
        super().__init__(reason, detail=detail)
        self.reason = reason


@contextmanager
def recorded_failures(*kinds: type[DomainError]) -> Iterator[None]:
    """A domain error (of ``kinds``, by default any) raised inside is ``recorded``: for a step
    that has already written what a failure must leave behind (a ceremony closed, a turn
    spent, a failure counted) before it can fail. Also a decorator."""
    marked = kinds or (DomainError,)
    try:
        yield
    except marked as exc:
        exc.record()
        raise
