"""Every router the app serves, in one list."""

from __future__ import annotations

from fastapi import APIRouter

ROUTERS: list[APIRouter] = []
