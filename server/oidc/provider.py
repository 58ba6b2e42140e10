"""Authlib's ``AuthorizationServer`` on Starlette requests: one per request (it is cheap), made
from that request's database session, so the grants read and write in its transaction.
Authlib ships no Starlette server integration; this is the small one it asks for
(``create_oauth2_request``, ``handle_response``, ``query_client``, ``generate_token``)."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, RedirectResponse, Response

from server.services.oidc.claims import allowed_scope
from server.services.oidc.grants import Grants
from server.services.oidc.registry import ProviderRegistry, secret_matches
from server.services.oidc.sso import SingleSignOn
from server.storage.oidc_tables import OidcClient
from server.wiring import Services

TOKEN_PATH = "/token"  # noqa: S105 - a path, not a secret
AUTHORIZE_PATH = "/authorize"
USERINFO_PATH = "/userinfo"


class RelyingParty(ClientMixin):  # type: ignore[misc]
    """A registered provider as Authlib's client: code flow only, its registered redirect
    URIs exactly, one way to authenticate (its keys, or a development secret)."""

    def __init__(self, row: OidcClient) -> None:
        self.row = row
        self.client_id = row.client_id
        self.client_metadata: dict[str, Any] = {}

    @property
    def auth_method(self) -> str:
        return "client_secret_basic" if self.row.secret_digest is not None else "private_key_jwt"

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # OpenID Connect: the request names one, always

    def get_allowed_scope(self, scope: str | None) -> str:
        return allowed_scope(self.row, scope)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.row.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secret_matches(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


class Payload(BasicOAuth2Payload):  # type: ignore[misc]
    """The request's parameters, each name with all the values it was sent with."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        first: dict[str, str] = {}
        every: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in pairs:
            first.setdefault(name, value)
            every[name].append(value)
        self._data = first
        self._datalist = every


class Request(OAuth2Request):  # type: ignore[misc]
    """An OAuth 2 request made of what Starlette parsed: the query (authorize) or the form
    body (token), with the headers."""

    def __init__(
        self, method: str, uri: str, pairs: list[tuple[str, str]], headers: Mapping[str, str]
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = Payload(pairs)
        self._form = dict(self.payload.data) if method == "POST" else {}
        self._args = dict(self.payload.data) if method != "POST" else {}
        self.provider: Any = None  # the Provider that made it

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return self._args


@dataclass(frozen=True)
class Incoming:
    """What a route hands the provider: the method, the path, the parameters as sent and the
    headers (the route reads the body, which needs ``await``)."""

    method: str
    path: str
    pairs: list[tuple[str, str]]
    headers: Mapping[str, str]


class Provider(AuthorizationServer):  # type: ignore[misc]
    """The OpenID Provider of one request."""

    def __init__(self, session: Session, services: Services) -> None:
        super().__init__(scopes_supported=None)  # unknown scopes are ignored, not refused
        self.session = session
        self.services = services
        self.issuer = services.settings.issuer.rstrip("/")
        audit = services.audit_hook(session, "oidc")
        self.audit = audit
        self.registry = ProviderRegistry(session, audit)
        self.grants = Grants(session, self.now, audit)
        self.sso = SingleSignOn(session, self.now, services.pseudonyms, audit)

    def sso_logout_audit(self, client_id: str | None, notified: int) -> None:
        self.services.audit_hook(self.session, "oidc")(
            "oidc.logout", {"provider": client_id or "-", "backchannel_notified": notified}
        )

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.services.clock(), dt.UTC)

    def url(self, path: str) -> str:
        return self.issuer + path

    # --- what Authlib asks of an integration ---

    def query_client(self, client_id: str) -> RelyingParty | None:
        row = self.registry.find(client_id) if isinstance(client_id, str) else None
        return None if row is None else RelyingParty(row)

    def create_oauth2_request(self, request: Incoming | Request) -> Request:
        if isinstance(request, Request):
            return request
        made = Request(request.method, self.url(request.path), request.pairs, request.headers)
        made.provider = self
        return made

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        answer_headers = dict(headers or [])
        location = answer_headers.pop("Location", None)
        if location is not None:
            return RedirectResponse(self.with_issuer(location), status_code=302)
        answer_headers.pop("Content-Type", None)
        if isinstance(body, (dict, list)):
            return JSONResponse(body, status_code=status, headers=answer_headers)
        return Response(str(body), status_code=status, headers=answer_headers)

    def with_issuer(self, location: str) -> str:
        """RFC 9207: every authorization response, errors too, names the issuer."""
        from authlib.common.urls import add_params_to_uri

        return str(add_params_to_uri(location, [("iss", self.issuer)]))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def handle_error_response(self, request: Request, error: Any) -> Response:
        """Every refused token request is audited (the client it claimed to be, the error),
        so a client whose assertions fail, or codes replayed, show in the audit log."""
        if request.uri.endswith(TOKEN_PATH):
            claimed = request.client.get_client_id() if request.client else None
            self.audit(
                "oidc.token_refused",
                {
                    "provider": claimed or str(request.payload.client_id or "-")[:128],
                    "error": str(error.error),
                },
            )
        answer: Response = super().handle_error_response(request, error)
        return answer

    def save_token(self, token: dict[str, Any], request: Request) -> None:
        return None  # the grant kept it when it made it (``CodeGrant.generate_token``)


def error_body(error: str, description: str) -> str:
    return json.dumps({"error": error, "error_description": description})
