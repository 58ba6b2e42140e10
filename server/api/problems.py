"""Every error the API answers is RFC 9457 problem+json, made here and only here: domain errors,
malformed requests and unexpected failures, none of which reveal secrets or internals."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.domain.errors import (
    ConflictingState,
    DomainError,
    Expired,
    Locked,
    Refused,
    ServiceFault,
    TooLarge,
    TooManyAttempts,
    Unavailable,
    UnknownSubject,
    Unprocessable,
    Unverified,
)
from server.services.access import NotAuthenticated
from server.storage.errors import DuplicatePersonNumber, NotFound, StaleWrite, StorageError

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


# Every error a request can end with, by kind -> its HTTP status. A domain error's kind is a
# base class (``server.domain.errors``); the most specific listed class in its MRO wins, and a
# domain error of no listed kind answers 400 (the request was wrong).
STATUS_BY_KIND: Mapping[type[Exception], int] = MappingProxyType(
    {
        UnknownSubject: 404,
        ConflictingState: 409,
        Expired: 410,
        Refused: 403,
        Unverified: 401,
        TooManyAttempts: 429,
        Locked: 423,
        TooLarge: 413,
        Unprocessable: 422,
        ServiceFault: 500,
        Unavailable: 503,
        DomainError: 400,
        # The storage layer's conflicts, which a request may meet (its other errors are ours).
        NotFound: 404,
        DuplicatePersonNumber: 409,
        StaleWrite: 409,
    }
)
# Storage errors carry no public text of their own: they are answered with these words.
_STORAGE_ANSWERS: Mapping[type[StorageError], tuple[str, str]] = MappingProxyType(
    {
        NotFound: ("not-found", "Not found"),
        DuplicatePersonNumber: ("duplicate-person-number", "This person is enrolled already"),
        StaleWrite: ("conflict", "Changed by someone else meanwhile; try again"),
    }
)


def status_of(error: BaseException) -> int:
    """The HTTP status of ``error``: that of the first class of its MRO in ``STATUS_BY_KIND``;
    500 for anything else (a fault of the service's own)."""
    for kind in type(error).__mro__:
        status = STATUS_BY_KIND.get(kind)
        if status is not None:
            return status
    return 500


def answer_of(error: DomainError) -> JSONResponse:
    """The problem document of a domain error: its kind's status, its code as the type, its
    public detail and the members it adds (never the input)."""
    status = status_of(error)
    title = error.title or error.code.replace("-", " ").capitalize()
    answer = problem(status, error.code, title, error.detail, **error.extensions())
    if isinstance(error, NotAuthenticated):
        answer.headers["WWW-Authenticate"] = 'Bearer realm="akkreditiv"'
    if error.retry_after is not None:
        answer.headers["Retry-After"] = str(error.retry_after)
    return answer


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, DomainError):
        return await _unexpected(request, exc)
    if isinstance(exc, Unavailable):
        log.warning("answering %s %s: unavailable: %s", request.method, request.url.path, exc)
    return answer_of(exc)


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
    for kind, (code, title) in _STORAGE_ANSWERS.items():
        if isinstance(exc, kind):
            return problem(status_of(exc), code, title)
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected failure answering %s %s", request.method, request.url.path)
    return problem(500, "internal", "Something went wrong on our side")


def install(app: FastAPI) -> None:
    """Map errors to problem+json in one place."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
