"""``create_app(settings)``: the FastAPI application, built from settings with no import-time
state, so tests and several worker processes build their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import oidc, web
from server.api import problems
from server.api.identities import MAX_BATCH_BYTES
from server.api.routers import ROUTERS
from server.body_limit import BodyLimit, RequestTooLarge
from server.proxies import ForwardedBy, TrustedProxies
from server.settings import Settings
from server.storage.engine import migrate, ping
from server.web.render import asks_for_page, error_page
from server.wiring import build_services

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


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` and ``Cache-Control: no-store`` to every HTTP answer that does
    not set them itself. A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (what
    ``@app.middleware("http")`` makes) runs each request through an extra task and stream,
    which cost more than a whole OTP check's own work in the server benchmark."""

    _HEADERS: ClassVar[tuple[tuple[bytes, bytes], ...]] = tuple(
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in {**SECURITY_HEADERS, "Cache-Control": "no-store"}.items()
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in self._HEADERS if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings) -> FastAPI:
    services = build_services(settings)
    engine = services.engine

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(engine)
        services.check_shared_keys()
        services.audit_checkpoints.start()
        if services.background_sweep is not None:
            services.background_sweep.start()
        yield
        if services.background_sweep is not None:
            services.background_sweep.stop()
        services.audit_checkpoints.stop()
        engine.dispose()

    app = FastAPI(
        title="akkreditiv",
        version="0.1.0",
        summary="Identities, credentials and multi-factor authentication with assurance levels",
        lifespan=lifespan,
        # FastAPI's viewers load their scripts from a CDN, which the CSP refuses: /docs is a
        # page of the service's own (server.web.reference) over /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = services.sessions
    app.state.services = services
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    oidc.install(app)
    web.install(app)

    # Outermost last: the 413 of BodyLimit gets the security headers too.
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        refuse=_too_large,
        # A PSKC document of a batch of tokens may be larger than any other body.
        larger={"/token-batches": max(MAX_BATCH_BYTES, settings.max_body_bytes)},
    )
    app.add_middleware(SecurityHeaders)
    if settings.trusted_proxies:
        # uvicorn's own proxy headers are off (server.uvicorn_run): whose headers are
        # believed is a setting of the service, read with the others.
        app.add_middleware(ForwardedBy, proxies=TrustedProxies(tuple(settings.trusted_proxies)))

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, Any]:
        """Liveness and database reachability."""
        ping(engine)
        return {"status": "ok", "database": engine.dialect.name}

    return app


def _too_large(request: Request, error: RequestTooLarge) -> Response:
    """A body over the limit: an error page for a browser's form, else problem+json."""
    return error_page(request, error) if asks_for_page(request) else problems.answer_of(error)


def app_from_environment() -> FastAPI:
    """The app with settings from AKKREDITIV_* variables (for ``uvicorn --factory`` and for
    several worker processes)."""
    return create_app(Settings())
