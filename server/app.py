"""``create_app(settings)``: the FastAPI application, built from settings with no import-time
state, so tests and several worker processes build their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from sqlalchemy import text

from server.api import problems
from server.api.deps import build_services
from server.api.routers import ROUTERS
from server.services.errors import DomainError
from server.settings import Settings
from server.storage.engine import create_engine_for, migrate, session_factory
from server.storage.errors import StorageError

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def create_app(settings: Settings) -> FastAPI:
    # Nearly every request writes (the audit log at least): SQLite transactions take the
    # write lock up front and queue for it, instead of failing when they upgrade.
    engine = create_engine_for(settings.database_url, sqlite_immediate=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(engine)
        yield
        engine.dispose()

    app = FastAPI(
        title="akkreditiv",
        version="0.1.0",
        summary="Identities, credentials and multi-factor authentication with assurance levels",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.services = build_services(settings, app.state.sessions)
    problems.install(app, DomainError, StorageError)
    for router in ROUTERS:
        app.include_router(router)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, Any]:
        """Liveness and database reachability."""
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return {"status": "ok", "database": engine.dialect.name}

    return app


def app_from_environment() -> FastAPI:
    """The app with settings from AKKREDITIV_* variables (for ``uvicorn --factory`` and for
    several worker processes)."""
    return create_app(Settings())
