"""The web pages (Jinja2, progressive enhancement): login, self-service, the migration
wizard and the operator console, in Danish and English, over the same services as the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from server.web import account, account_password, console, login, migrate, pages, reference
from server.web.render import install_error_pages

STATIC = Path(__file__).parent / "static"

PAGE_ROUTERS = [
    pages.router,
    login.router,
    account.router,
    account_password.router,
    migrate.router,
    console.router,
    reference.router,
]


def install(app: FastAPI) -> None:
    """Serve the pages, their static files and their error pages on ``app``."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in PAGE_ROUTERS:
        app.include_router(router)
    install_error_pages(app)
