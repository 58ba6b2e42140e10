"""A relying party's side of the OpenID Provider's unit tests: registered clients, an
authorization request with PKCE, the login through the real pages (password, then a code),
client assertions and the token request."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from devices.protocol.otp import totp
from server.app import create_app
from server.services.access import Role
from server.services.oidc.registry import ProviderRegistry, Registration
from server.services.secretbox import SecretBox
from server.settings import Settings
from tests.unit.server.conftest import ORIGIN, make_key
from tests.unit.server.oidc.keys import ec_key, rsa_key
from tests.unit.server.people import SEED, seed_person_with_code_display
from tests.unit.server.web.forms import csrf_of

PERSON = "010190-1234"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test password
RP = "https://rp.example"
RSA_RP = "https://rsa.example"
DEV_RP = "https://dev.example"
CALLBACK = "https://rp.example/cb"
ISSUER = ORIGIN
TOKEN_URL = ORIGIN + "/token"
# Single sign-on: two providers of one group (each taking back-channel logout) and one of
# another group.
HEALTH_A = "https://a.health.example"
HEALTH_B = "https://b.health.example"
ELSEWHERE = "https://elsewhere.example"
SSO_GROUPS = {HEALTH_A: "health", HEALTH_B: "health", ELSEWHERE: "schools"}


class LogoutReceiver:
    """The providers' back-channel logout endpoints: a local HTTP server that keeps each
    POSTed body by path."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, str]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                received.append((self.path, {k: v[-1] for k, v in parse_qs(body).items()}))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@dataclass
class Op:
    """The service as relying parties reach it: the test browser, the keys of the registered
    clients, the development client's secret, and the services' clock (moved on between
    logins, so each login's code is of a new time step)."""

    browser: TestClient
    keys: dict[str, ECKey | RSAKey]
    dev_secret: str
    now: list[float] = field(default_factory=lambda: [time.time()])
    logouts: LogoutReceiver | None = None

    def tick(self, seconds: float = 31.0) -> None:
        self.now[0] += seconds


@pytest.fixture
def op(settings: Settings) -> Iterator[Op]:
    app = create_app(settings)
    key = make_key(settings, "https://admin.example", Role.SUPERVISOR)
    with TestClient(app, base_url=ORIGIN, raise_server_exceptions=False) as browser:
        services = app.state.services
        now = [time.time() - 900]  # moved on 31 s a login, so each code is of its own step
        services.clock = lambda: now[0]
        identity = seed_person_with_code_display(
            services.sessions, SecretBox.from_file(settings.kek_file)
        )
        answer = browser.put(
            f"/identities/{identity}/password", json={"password": PASSWORD}, headers=key
        )
        assert answer.status_code == 200, answer.text
        keys: dict[str, ECKey | RSAKey] = {RP: ec_key(), RSA_RP: rsa_key()}
        with services.sessions() as session, session.begin():
            registry = ProviderRegistry(session)
            for client_id, private in keys.items():
                registry.add(
                    Registration(
                        client_id=client_id,
                        name="Testkommunen" if client_id == RP else "RSA-tjenesten",
                        redirect_uris=[client_id + "/cb"],
                        jwks={"keys": [private.as_dict(private=False)]},
                        entitled=["cpr", "name"] if client_id == RP else [],
                        # The RSA client takes RS256 ID tokens too.
                        id_token_alg="RS256" if client_id == RSA_RP else "ES256",
                    )
                )
            _, secret = registry.add(
                Registration(
                    client_id=DEV_RP,
                    name="Udvikling",
                    redirect_uris=[DEV_RP + "/cb"],
                    dev_secret=True,
                )
            )
            receiver = LogoutReceiver()
            for client_id, group in SSO_GROUPS.items():
                keys[client_id] = ec_key()
                registry.add(
                    Registration(
                        client_id=client_id,
                        name=client_id.split("//")[1],
                        redirect_uris=[client_id + "/cb"],
                        jwks={"keys": [keys[client_id].as_dict(private=False)]},
                        post_logout_redirect_uris=[client_id + "/bye"],
                        backchannel_logout_uri=f"{receiver.url}/{group}/{client_id[8:]}",
                        sso_group=group,
                    )
                )
        assert secret is not None
        try:
            yield Op(browser, keys, secret, now, receiver)
        finally:
            receiver.close()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_params(
    client_id: str = RP, challenge: str | None = None, **extra: str
) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": client_id + "/cb",
        "scope": "openid",
        "state": "st-" + secrets.token_hex(4),
        "nonce": "n-" + secrets.token_hex(4),
    }
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(extra)
    return {name: value for name, value in params.items() if value != ""}


def query_of(url: str) -> dict[str, str]:
    return {name: values[-1] for name, values in parse_qs(urlsplit(url).query).items()}


def post_form(client: TestClient, path: str, **data: str) -> httpx.Response:
    token = csrf_of(client.get(path))
    return client.post(path, data={"csrf": token, **data}, follow_redirects=False)


def log_in(op: Op, login_path: str, person: str = PERSON) -> httpx.Response:
    """Person number, password, then a code on the login's pages; the answer of the way back
    (``/authorize/continue``), which redirects to the relying party."""
    browser = op.browser
    op.tick()
    transaction = login_path.rsplit("/", 1)[-1]
    assert post_form(browser, login_path, person_number=person).status_code == 303
    assert (
        post_form(browser, f"/login/{transaction}/password", password=PASSWORD).status_code == 303
    )
    code = totp(SEED, op.now[0])
    assert post_form(browser, f"/login/{transaction}/code", code=code).status_code == 303
    done = browser.get(f"/login/{transaction}/done", follow_redirects=False)
    assert done.status_code == 200, done.text
    back = f"/authorize/continue?transaction={transaction}"
    assert back.replace("?", "?").split("?")[0] in done.text
    return browser.get(back, follow_redirects=False)


@dataclass
class Authorized:
    """A finished authorization: the redirect's parameters and the PKCE verifier."""

    params: dict[str, str]
    answer: dict[str, str]
    verifier: str

    @property
    def code(self) -> str:
        return self.answer["code"]


def authorized(op: Op, client_id: str = RP, **extra: str) -> Authorized:
    verifier, challenge = pkce()
    params = authorize_params(client_id, challenge, **extra)
    started = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert started.status_code == 303, started.text
    back = log_in(op, started.headers["location"])
    assert back.status_code == 302, back.text
    location = back.headers["location"]
    assert location.startswith(client_id + "/cb?"), location
    return Authorized(params, query_of(location), verifier)


def assertion(
    client_id: str,
    key: ECKey | RSAKey,
    *,
    aud: str = TOKEN_URL,
    alg: str | None = None,
    lifetime: int = 60,
    jti: str | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": jti or str(uuid.uuid4()),
        **claims,
    }
    algorithm = alg or ("ES256" if isinstance(key, ECKey) else "RS256")
    header = {"alg": algorithm, "kid": key.kid}
    return jwt.encode(header, body, key, algorithms=[algorithm])


def token_request(
    op: Op,
    done: Authorized,
    *,
    client_id: str = RP,
    client_assertion: str | None = None,
    verifier: str | None = "",
    **extra: str,
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": done.code,
        "redirect_uri": done.params["redirect_uri"],
        **extra,
    }
    if verifier is not None:
        data["code_verifier"] = verifier or done.verifier
    if client_id == DEV_RP:
        # RFC 6749 section 2.3.1: both form-encoded (a client id like a URL holds a colon).
        return op.browser.post("/token", data=data, auth=(quote(DEV_RP, safe=""), op.dev_secret))
    data["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    data["client_assertion"] = client_assertion or assertion(client_id, op.keys[client_id])
    return op.browser.post("/token", data=data)
