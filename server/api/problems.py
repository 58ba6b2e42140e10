"""Every error the API answers is RFC 9457 problem+json, made here and only here: domain errors,
malformed requests and unexpected failures, none of which reveal secrets or internals."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:akkreditiv:problem:"


def problem(
    status: int, code: str, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_PREFIX + code, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


# Domain error codes -> HTTP status. Codes not listed answer 400.
STATUS_BY_CODE: dict[str, int] = {
    "not-found": 404,
    "conflict": 409,
    "duplicate-person-number": 409,
    "rate-limited": 429,
    "locked": 423,
    "unauthenticated": 401,
    "forbidden": 403,
    "verification-failed": 401,
    "wrong-password": 401,
    # Identity and credential lifecycles (server/services/lifecycle_errors.py).
    "identity-not-found": 404,
    "credential-not-found": 404,
    "token-not-found": 404,
    "invalid-transition": 409,
    "identity-not-active": 409,
    "credential-limit-reached": 409,
    "conflicting-credential": 409,
    "duplicate-serial": 409,
    "concurrent-change": 409,
    "insufficient-proofing": 422,
    "unsupported-credential": 422,
    "invalid-token-batch": 400,
    "activation-code-rejected": 400,
    "card-exhausted": 409,
    "legacy-closed": 410,
    "new-eid-only": 403,
    "credential-blocked": 409,
    "form-rejected": 403,
    "speech-unavailable": 503,
    "login-bound-elsewhere": 409,
    "transaction-expired": 410,  # a login, enrolment or registration that took too long
    # The server's own faults, not the client's.
    "secret-unreadable": 500,
    "key-material-rejected": 500,
    "password-hash-unreadable": 500,
    "audit-chain-broken": 500,
}

# The statuses of the guided migration's own problem types, which its steps answer (not raise)
# and the migration pages show.
FLOW_STATUS: dict[str, int] = {
    "proof-required": 409,
    "start-again": 409,
    "already-migrated": 409,
    "step-not-available": 409,
    "activation-incomplete": 409,
    "credential-not-usable": 409,
    "details-mismatch": 422,
    "invalid-choice": 422,
    "activation-input-missing": 422,
}


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    code = str(getattr(exc, "code", "bad-request"))
    detail = getattr(exc, "detail", None)
    status = STATUS_BY_CODE.get(code, 400)
    answer = problem(status, code, code.replace("-", " ").capitalize(), detail)
    if status == 401 and code == "unauthenticated":
        answer.headers["WWW-Authenticate"] = 'Bearer realm="akkreditiv"'
    return answer


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        return await _unexpected(request, exc)
    # Where and what, never the submitted value: it may be a PIN, a code or a password.
    errors = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", ""))}
        for error in exc.errors()
    ]
    return problem(422, "invalid-request", "The request is not valid", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        return await _unexpected(request, exc)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return problem(exc.status_code, code, str(exc.detail))


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    # Storage errors carry no public text of their own: answer with fixed words.
    name = type(exc).__name__
    if name == "NotFound":
        return problem(404, "not-found", "Not found")
    if name == "DuplicatePersonNumber":
        return problem(409, "duplicate-person-number", "This person is enrolled already")
    if name == "StaleWrite":
        return problem(409, "conflict", "Changed by someone else meanwhile; try again")
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected failure answering %s %s", request.method, request.url.path)
    return problem(500, "internal", "Something went wrong on our side")


def install(app: FastAPI, domain_error: type[Exception], storage_error: type[Exception]) -> None:
    """Map errors to problem+json in one place; ``domain_error`` is the services' base,
    ``storage_error`` the storage layer's."""
    app.add_exception_handler(domain_error, _domain_error)
    app.add_exception_handler(storage_error, _storage_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
