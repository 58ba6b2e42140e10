"""Every router the app serves, in one list."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.authentication import router as authentication_router

ROUTERS: list[APIRouter] = [authentication_router]
