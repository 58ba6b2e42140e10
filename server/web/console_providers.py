"""The console's list of registered service providers (``akkreditiv providers``), for
supervisors: who may log people in by OpenID Connect, where codes go, how each authenticates,
what it is entitled to and its SSO group. Read only (registering is the command's); every
view is audited."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from server.services.access import NotPermitted, Role
from server.services.oidc.registry import ProviderRegistry
from server.web.console_access import DeskDep
from server.web.render import mark_page

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

PATH = "/console/providers"


@router.get(PATH)
def providers(desk: DeskDep) -> Response:
    if Role.SUPERVISOR not in desk.caller.roles:
        raise NotPermitted("providers are for supervisors", detail="only supervisors see this")
    keys = desk.services.api_keys.entries()
    rows = [
        {
            "client": client,
            "authentication": (
                "client_secret_basic" if client.secret_digest is not None else "private_key_jwt"
            ),
            "api_keys": [
                key.key_id
                for key in keys
                if key.name == client.client_id and Role.PROVIDER in key.roles
            ],
        }
        for client in ProviderRegistry(desk.db).all()
    ]
    desk.audit("console.providers_viewed", {"count": len(rows)})
    return desk.page(
        "console_providers.html", title=desk.browser.t("console.providers.title"), rows=rows
    )
