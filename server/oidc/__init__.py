"""The OpenID Provider: discovery, authorize (handing off to the login pages), token and
userinfo, on Authlib's authorization-server classes (``provider``), whose grant, extension
and client-authentication subclasses are in ``grants`` and ``client_auth``."""

from __future__ import annotations

from fastapi import FastAPI

from server.oidc import logout, routes


def install(app: FastAPI) -> None:
    app.include_router(routes.router)
    app.include_router(logout.router)
