"""The base of every domain error, and the one error a failed login factor raises. The HTTP
layer maps them to problem+json by class, in one table (``server.api.problems``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar


class DomainError(Exception):
    """Base of every error raised by ``server.services``.

    ``code`` names the problem type (the HTTP layer turns it into a problem+json ``type``).
    ``detail`` is public text: it never holds a secret, a person number or other input. ``str()``
    is for operators and logs: it may name files or sequence numbers, never secrets.

    ``recorded``: the failure changed state that must outlive the error answer (a failure
    counter, a spent challenge, a closed ceremony, its audit entry): the unit of work commits
    before the error becomes an answer, instead of rolling back.
    """

    code: ClassVar[str] = "domain-error"
    default_detail: ClassVar[str] = "the request could not be completed"
    recorded: bool = False  # a class default; ``recorded_failures`` sets it on an instance

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        self.detail = detail if detail is not None else self.default_detail
        super().__init__(message if message is not None else self.detail)


class FactorRejected(DomainError):
    """A login factor was not accepted, whatever the reason: one answer, so an attacker learns
    neither whether the person exists nor which part was wrong. ``reason`` is a stable code for
    the audit log and the operators, never shown to the person."""

    code = "verification-failed"
    default_detail = "the login did not succeed; check what you entered"
    recorded = True

    def __init__(self, reason: str, *, detail: str | None = None) -> None:
        super().__init__(reason, detail=detail)
        self.reason = reason


@contextmanager
def recorded_failures() -> Iterator[None]:
    """A domain error raised inside is ``recorded``: for a step that has already written what
    a failure must leave behind (a ceremony closed, a turn spent) before it can fail."""
    try:
        yield
    except DomainError as exc:
        exc.recorded = True
        raise
