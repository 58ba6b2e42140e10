"""The domain errors: stable codes for problem+json, public details without the input."""

from __future__ import annotations

import pytest

from server.domain.errors import DomainError
from server.services import errors
from server.services.errors import (
    AuditChainBroken,
    Breakage,
    InvalidPersonNumber,
    PasswordProblem,
    WeakPassword,
)


def _subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    """This module's subclasses. Errors elsewhere may share a code on purpose: every failed
    login answers "verification-failed", whatever the reason, so nothing leaks."""
    found: list[type[DomainError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return [sub for sub in found if sub.__module__ == errors.__name__]


def test_codes_are_unique_and_url_safe() -> None:
    classes: list[type[DomainError]] = [DomainError, *_subclasses(DomainError)]
    codes = [cls.code for cls in classes]
    assert len(set(codes)) == len(codes)
    assert all(code.replace("-", "").isalpha() and code.islower() for code in codes)


def test_every_error_in_the_module_is_a_domain_error() -> None:
    defined = [
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    ]
    assert set(defined) == set(_subclasses(DomainError))


def test_detail_defaults_to_the_public_text_and_message_may_differ() -> None:
    error = AuditChainBroken(7, Breakage.REMOVED)
    assert error.detail == "the audit log failed verification"
    assert str(error) == "audit chain 0 broken at seq 7: entry removed"
    assert (error.seq, error.reason) == (7, Breakage.REMOVED)


def test_typed_fields_are_kept() -> None:
    weak = WeakPassword(PasswordProblem.TOO_SHORT, "too short")
    assert weak.reason is PasswordProblem.TOO_SHORT
    assert weak.detail == "too short"
    invalid = InvalidPersonNumber("day", "no such day")
    assert invalid.field == "day"


def test_domain_errors_are_raised_and_caught_as_one_family() -> None:
    with pytest.raises(DomainError):
        raise AuditChainBroken(1, Breakage.ALTERED)
