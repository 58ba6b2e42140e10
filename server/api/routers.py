"""Every router the app serves, in one list."""

from __future__ import annotations

from fastapi import APIRouter

from server.api import audit, identities, keycard, legacy, migration, proofings
from server.api.authentication import router as authentication_router
from server.api.fido import router as fido_router
from server.api.piv import router as piv_router

ROUTERS: list[APIRouter] = [
    identities.router,
    authentication_router,
    fido_router,
    piv_router,
    keycard.router,
    legacy.router,
    migration.router,
    audit.router,
    proofings.router,
]
