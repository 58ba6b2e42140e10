"""FastAPI's side of the composition root (``server.wiring``): the app's services, a request's
transaction, the caller behind an API key, and the ``Annotated`` aliases routes use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from server.domain.errors import DomainError
from server.services.access import Caller, NotAuthenticated, Permission
from server.wiring import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One database transaction per request: committed when the route returns normally,
    rolled back on any error. It ends *before* the response is sent (scope "function"), so a
    client that got a 2xx can rely on the change being committed: with FastAPI's default
    scope the commit ran after the response, and a quick next request missed the write.

    Async, so that FastAPI does not hand it to the thread pool twice (to enter and to leave):
    opening the session does no I/O (the connection, and on SQLite ``BEGIN IMMEDIATE``, come
    with the route's first statement, in the route's thread), and only the end of the
    transaction, which waits for the database, goes to the pool."""
    session = get_services(request).sessions()
    session.begin()
    try:
        yield session
    except BaseException as exc:
        # Shielded: a cancelled request (the client went away) still ends its transaction and
        # returns its connection to the pool. A recorded failure keeps what it wrote.
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_end, session, commit=keeps_changes(exc))
        raise
    if session.in_transaction():
        await run_in_threadpool(_end, session, commit=True)
    else:
        session.close()  # the route committed already: nothing waits here


T = TypeVar("T")


async def in_transaction(request: Request, work: Callable[[Session, Services], T]) -> T:
    """Run ``work`` in one worker thread with a session of its own, committed when ``work``
    returns and rolled back when it raises, before the answer is sent (as ``SessionDep``).

    For the steps of a login, the service's busiest routes: an ``async`` route that hands its
    whole transaction to the thread pool at once skips the dependency machinery of a sync
    route with ``SessionDep`` (an async generator with its exit stack, a second dependency
    for the services), which took a sixth of an OTP check's time in the server. A client
    that goes away does not cut the transaction short: the thread runs to its end. A
    recorded failure (``DomainError.recorded``) is committed before it is raised on."""
    services = get_services(request)

    def run() -> T:
        with services.sessions() as session:  # closing rolls back what was not committed
            session.begin()
            try:
                result = work(session, services)
            except DomainError as exc:
                if exc.recorded and session.in_transaction():
                    session.commit()
                raise
            if session.in_transaction():  # ``work`` may have committed itself
                session.commit()
            return result

    return await run_in_threadpool(run)


def keeps_changes(exc: BaseException) -> bool:
    """Whether the unit of work commits although ``exc`` ends it: a recorded failure (a
    rejected factor's counters and audit entry) must outlive the error answer."""
    return isinstance(exc, DomainError) and exc.recorded


def _end(session: Session, *, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


async def _services(request: Request) -> Services:
    # Async for the same reason: a thread-pool hand-off costs more than this lookup.
    return get_services(request)


ServicesDep = Annotated[Services, Depends(_services)]

_bearer = HTTPBearer(auto_error=False, description="an API key: akk_<id>_<secret>")


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller behind the request's API key; 401 without a valid one. Async, as is
    ``require``'s dependency: a sync one is handed to the thread pool and back, twice a
    request, for a digest and a look-up in memory (the key file is read again only when it
    changed: a ``stat`` a request)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("no API key")
    caller = get_services(request).api_keys.authenticate(credentials.credentials)
    if caller is None:
        raise NotAuthenticated("unknown API key", detail="this API key is not valid")
    return caller


def require(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, who must hold ``permission`` (403 if not)."""

    async def dependency(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        caller.require(permission)
        return caller

    dependency.__name__ = f"require_{permission.value}"
    return dependency


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def source_of(request: Request) -> str:
    """The client's address, which throttles and audit entries name: the peer's, or the one
    a trusted reverse proxy forwarded (``server.proxies``)."""
    return request.client.host if request.client else "unknown"


def actor_of(request: Request) -> str:
    """Who acts, as far as the API can tell until callers authenticate: the source address."""
    return f"source:{source_of(request)}"
