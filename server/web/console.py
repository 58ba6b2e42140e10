"""Pages: console (being built)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from server.web.render import mark_page

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)
