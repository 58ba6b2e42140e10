"""Domain errors become problem+json by class: each kind of failure has its status, in one
table. The statuses clients have seen for each problem type stay what they were."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import server
from server.api.problems import STATUS_BY_KIND, answer_of, status_of
from server.domain.errors import DomainError, UnknownSubject, Unverified
from server.domain.model import Level
from server.services.login.errors import StepUpRequired
from server.storage.errors import NotFound, StaleWrite

# The published problem types and their statuses (a type not listed answers 400).
PUBLISHED: dict[str, int] = {
    "activation-code-rejected": 400,
    "activation-incomplete": 409,
    "activation-input-missing": 422,
    "already-migrated": 409,
    "authorization-refused": 400,
    "audit-chain-broken": 500,
    "audit-checkpoint-rejected": 500,
    "card-exhausted": 409,
    "concurrent-change": 409,
    "conflict": 409,
    "conflicting-credential": 409,
    "credential-blocked": 409,
    "credential-temporarily-blocked": 429,
    "credential-limit-reached": 409,
    "credential-not-found": 404,
    "credential-not-usable": 409,
    "details-mismatch": 422,
    "duplicate-person-number": 409,
    "duplicate-serial": 409,
    "forbidden": 403,
    "form-rejected": 403,
    "identity-not-active": 409,
    "identity-not-found": 404,
    "identity-suspended": 403,
    "insufficient-proofing": 422,
    "invalid-choice": 422,
    "invalid-token-batch": 400,
    "invalid-transition": 409,
    "key-material-rejected": 500,
    "legacy-closed": 410,
    "level-too-low-for-credential": 403,
    "login-bound-elsewhere": 409,
    "login-no-longer-valid": 401,
    "new-eid-only": 403,
    "not-found": 404,
    "not-generated-on-card": 422,
    "password-hash-unreadable": 500,
    "proof-required": 409,
    "proofing-identity-pending": 409,
    "proofing-not-found": 404,
    "proofing-not-waiting": 409,
    "request-too-large": 413,
    "provider-exists": 409,
    "provider-rejected": 400,
    "rate-limited": 429,
    "secret-unreadable": 500,
    "speech-unavailable": 503,
    "start-again": 409,
    "step-not-available": 409,
    "step-up-required": 403,
    "temporarily-unavailable": 503,
    "token-not-found": 404,
    "transaction-expired": 410,
    "unauthenticated": 401,
    "unsupported-credential": 422,
    "verification-failed": 401,
    "wrong-password": 401,
}


def _every_domain_error() -> list[type[DomainError]]:
    for module in pkgutil.walk_packages(server.__path__, "server."):
        if ".migrations" not in module.name:
            importlib.import_module(module.name)
    found: list[type[DomainError]] = []
    todo = [DomainError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return [cls for cls in found if cls.__module__.startswith("server.")]


@pytest.mark.parametrize("cls", _every_domain_error(), ids=lambda cls: cls.__qualname__)
def test_each_domain_error_answers_the_status_of_its_problem_type(
    cls: type[DomainError],
) -> None:
    if cls.__module__ == "server.domain.errors":
        assert cls in STATUS_BY_KIND or cls.code in PUBLISHED
        return
    error = cls.__new__(cls)  # the status is the class's, whatever its arguments
    assert status_of(error) == PUBLISHED.get(cls.code, 400)


def test_the_most_specific_kind_wins_and_other_faults_are_500() -> None:
    class Missing(UnknownSubject):
        code = "not-found"

    class Both(Missing, Unverified):
        code = "not-found"

    assert status_of(Missing()) == 404
    assert status_of(Both()) == 404
    assert status_of(NotFound("thing", "1")) == 404
    assert status_of(StaleWrite("thing")) == 409
    assert status_of(RuntimeError("bug")) == 500


def test_a_problem_carries_the_members_of_its_error_and_never_more() -> None:
    answer = answer_of(StepUpRequired(Level.SUBSTANTIAL, Level.HIGH))
    assert answer.status_code == 403
    body = answer.body.decode()
    assert '"achieved":"substantial"' in body
    assert '"required":"high"' in body
    assert '"title":"Step up required"' in body
