"""The API's reference for people (``/docs``): where the OpenAPI document is, and each
operation with what it does, read from that document. It is a page like the others, with no
third-party viewer: Swagger UI or ReDoc would be large scripts of others' running on the origin
where people log in, which the pages' Content-Security-Policy keeps to the service's own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from server.web.browser import BrowserDep
from server.web.render import mark_page, page

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

_METHODS = ("get", "put", "post", "patch", "delete")
Operation = tuple[str, str, str, str]  # method, path, summary, the description's first paragraph


def operations_by_tag(document: Mapping[str, Any]) -> list[tuple[str, list[Operation]]]:
    """The document's operations grouped by their first tag, in the document's order."""
    groups: dict[str, list[Operation]] = {}
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            tag = (operation.get("tags") or ["other"])[0]
            summary = str(operation.get("summary") or "")
            described = str(operation.get("description") or "").split("\n\n", 1)[0]
            groups.setdefault(str(tag), []).append(
                (method.upper(), str(path), summary, " ".join(described.split()))
            )
    return list(groups.items())


@router.get("/docs")
def api_reference(request: Request, browser: BrowserDep) -> Response:
    document = request.app.openapi()
    return page(
        request,
        browser,
        "api.html",
        title=browser.t("api.title"),
        openapi_version=str(document.get("openapi", "")),
        groups=operations_by_tag(document),
    )


@router.get("/redoc")
def redoc() -> Response:
    """The address FastAPI's ReDoc had: the reference is at ``/docs`` now."""
    return RedirectResponse("/docs", status_code=301)
