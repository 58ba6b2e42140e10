"""``akkreditiv demo rp``: a demo service provider that logs people in with OpenID Connect, as a
real one would, with a standard client library (Authlib's ``OAuth2Session``: code flow, PKCE
S256, ``private_key_jwt``). Its page has one link, "Log ind med akkreditiv / Log in with
akkreditiv"; after the login it shows the ID token's claims (verified against the service's
JWKS) and what userinfo answered. It registers itself once (``providers add``), with a key
kept in the demo folder."""

from __future__ import annotations

import html
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlsplit

import typer

from akkreditiv.cli.common import cli_actor, database_session, fail
from akkreditiv.cli.demo import DemoFolder, ServiceDatabase, demo_app

if TYPE_CHECKING:
    from joserfc.jwk import ECKey

DEMO_RP_NAME = "Demo-tjenesten (OpenID Connect)"
SCOPE = "openid profile cpr"
LOGIN_TEXT = "Log ind med akkreditiv / Log in with akkreditiv"


def rp_key(path: Path) -> ECKey:
    """The demo provider's signing key (a P-256 JWK, mode 0600), made once."""
    from joserfc.jwk import ECKey

    if path.exists():
        return ECKey.import_key(json.loads(path.read_text(encoding="utf-8")))
    key = ECKey.generate_key("P-256", parameters={"kid": "demo-rp-1", "use": "sig"}, private=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(key.as_dict(private=True)), encoding="utf-8")
    return key


def register(database_url: str | None, origin: str, key: ECKey) -> None:
    """Register the demo provider with its current key (again, when the key changed)."""
    from server.services.audit import AuditLog
    from server.services.oidc.registry import ProviderRegistry, Registration
    from server.settings import Settings

    settings = Settings() if database_url is None else Settings(database_url=database_url)
    public = {"keys": [key.as_dict(private=False)]}
    with database_session(settings, "database error") as session:
        log, actor = AuditLog(session), cli_actor()

        def record(event: str, details: dict[str, Any]) -> None:
            log.append(event, actor=actor, subject=origin, details=details)

        registry = ProviderRegistry(session, record)
        found = registry.find(origin)
        if found is not None and found.jwks == public:
            return
        if found is not None:
            registry.remove(origin)
        registry.add(
            Registration(
                client_id=origin,
                name=DEMO_RP_NAME,
                redirect_uris=[origin + "/callback"],
                jwks=public,
                post_logout_redirect_uris=[origin + "/"],
                entitled=["cpr", "name"],
                sso_group="demo",
            )
        )
        session.commit()


class DemoProvider:
    """The demo provider's logins: each begun one's PKCE verifier and nonce, by state."""

    def __init__(self, service: str, origin: str, key: ECKey) -> None:
        self.service = service.rstrip("/")
        self.origin = origin
        self.key = key
        self._begun: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def discovery(self) -> dict[str, Any]:
        import httpx

        found: dict[str, Any] = httpx.get(
            f"{self.service}/.well-known/openid-configuration", timeout=10
        ).json()
        return found

    def client(self, op: dict[str, Any]) -> Any:
        from authlib.integrations.requests_client import OAuth2Session
        from authlib.oauth2.rfc7523 import PrivateKeyJWT

        client = OAuth2Session(
            self.origin,
            self.key,
            scope=SCOPE,
            redirect_uri=self.origin + "/callback",
            code_challenge_method="S256",
            token_endpoint_auth_method="private_key_jwt",  # noqa: S106 - a method's name
        )
        client.register_client_auth_method(
            PrivateKeyJWT(op["token_endpoint"], alg="ES256", headers={"kid": self.key.kid})
        )
        return client

    def begin(self) -> str:
        """Where the browser goes to log in."""
        op = self.discovery()
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
        url, state = self.client(op).create_authorization_url(
            op["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        with self._lock:
            self._begun[state] = (verifier, nonce)
        return str(url)

    def finish(self, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The verified ID token's claims and userinfo's answer for the callback ``path``."""
        from joserfc import jwt
        from joserfc.jwk import KeySet

        query = {name: values[-1] for name, values in parse_qs(urlsplit(path).query).items()}
        if "error" in query:
            raise ValueError(f"{query['error']}: {query.get('error_description', '')}")
        with self._lock:
            verifier, nonce = self._begun.pop(query.get("state", ""), ("", ""))
        if not verifier:
            raise ValueError("no login of this provider has that state")
        op = self.discovery()
        if query.get("iss") != op["issuer"]:
            raise ValueError("the answer does not name the expected issuer (RFC 9207)")
        client = self.client(op)
        tokens = client.fetch_token(
            op["token_endpoint"],
            authorization_response=self.origin + path,
            code_verifier=verifier,
        )
        import httpx

        keys = KeySet.import_key_set(httpx.get(op["jwks_uri"], timeout=10).json())
        token = jwt.decode(tokens["id_token"], keys, algorithms=["ES256"])
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": op["issuer"]},
            aud={"essential": True, "value": self.origin},
            nonce={"essential": True, "value": nonce},
            exp={"essential": True},
        ).validate(token.claims)
        userinfo: dict[str, Any] = client.get(op["userinfo_endpoint"]).json()
        return dict(token.claims), userinfo


def page(title: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html><html lang="da"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head><body><main>"
        f"<h1>{html.escape(title)}</h1>{body}</main></body></html>"
    ).encode()


def _claims_table(caption: str, claims: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{html.escape(name)}</th>'
        f"<td>{html.escape(json.dumps(value))}</td></tr>"
        for name, value in sorted(claims.items())
    )
    return f"<table><caption>{html.escape(caption)}</caption><tbody>{rows}</tbody></table>"


def send_html(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """Answer ``handler``'s request with the HTML page ``body``."""
    handler.send_response(status)
    handler.send_header("Content-Type", "text/html; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _handler(provider: DemoProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/":
                link = f'<p><a id="login" href="/login">{LOGIN_TEXT}</a></p>'
                self._send(200, page(DEMO_RP_NAME, link))
            elif path == "/login":
                self.send_response(302)
                self.send_header("Location", provider.begin())
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/callback":
                try:
                    claims, userinfo = provider.finish(self.path)
                except Exception as exc:
                    body = f"<p>{html.escape(str(exc))}</p><p><a href='/'>Forfra / Again</a></p>"
                    self._send(400, page("Login mislykkedes / Login failed", body))
                    return
                body = _claims_table("ID token", claims) + _claims_table("userinfo", userinfo)
                self._send(200, page("Du er logget på / You are logged in", body))
            else:
                self._send(404, page("Not found", ""))

        def _send(self, status: int, body: bytes) -> None:
            send_html(self, status, body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@demo_app.command("rp")
def relying_party(
    url: Annotated[str, typer.Option(help="The running service.")] = "http://localhost:8000",
    port: Annotated[int, typer.Option(help="The demo provider's port on localhost.")] = 8001,
    folder: DemoFolder = Path("var/demo"),
    database_url: ServiceDatabase = None,
) -> None:
    """Run a demo service provider on http://localhost:PORT that logs people in with OpenID
    Connect and shows the ID token's claims; it registers itself the first time."""
    origin = f"http://localhost:{port}"
    key = rp_key(folder / "rp-key.json")
    register(database_url, origin, key)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(DemoProvider(url, origin, key)))
    except OSError as exc:
        raise fail(f"cannot listen on port {port}: {exc}") from None
    typer.echo(f"demo service provider: {origin}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
