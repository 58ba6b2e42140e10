"""A service provider for the browser tests: a second local HTTP server, on another port (so
another origin than the service's), with a provider API key of its own. Its return URL
``/cb`` gets the browser back after a login, as a real provider's would: with
``?transaction=ID`` it asks the service for the assertion (``complete``, with its key) and
verifies it against the service's JWKS; with ``?error=...`` it notes the error and checks
that the login cannot be completed. Each callback is recorded before the page is answered,
so a test that waited for the provider's page finds it in ``callbacks``."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt

from server.services.access import ApiKeys, Role


@dataclass
class Callback:
    """One request to the provider's return URL: its query, what ``complete`` answered (its
    status) and, when it signed, the assertion's verified claims."""

    query: dict[str, str]
    complete_status: int | None = None
    claims: dict[str, Any] | None = None


@dataclass
class Provider:
    """The running provider: ``id`` (its API key's name, its own origin), ``return_url``, and
    the callbacks it received, in order."""

    id: str
    display_name: str | None
    return_url: str
    service_url: str
    headers: dict[str, str]
    callbacks: list[Callback] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.id + path

    def received(self, callback: Callback) -> None:
        with self._lock:
            self.callbacks.append(callback)

    def last(self) -> Callback:
        with self._lock:
            assert self.callbacks, "the provider got no callback"
            return self.callbacks[-1]

    def begin(self, level: str, **extra: Any) -> str:
        """A login of this provider (its key), returning to ``/cb``; the login's id."""
        body = {"min_level": level, "return_url": self.return_url, **extra}
        with httpx.Client(base_url=self.service_url, headers=self.headers, timeout=30) as http:
            answer = http.post("/authentications", json=body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def handle(self, query: dict[str, str]) -> tuple[str, str]:
        """What the return URL does with ``query``: the page's title and text."""
        callback = Callback(query)
        transaction = query.get("transaction", "")
        with httpx.Client(base_url=self.service_url, headers=self.headers, timeout=30) as http:
            done = http.post(f"/authentications/{transaction}/complete")
            callback.complete_status = done.status_code
            if done.status_code == 200 and "error" not in query:
                keys = http.get("/.well-known/jwks.json").json()["keys"]
                callback.claims = jwt.decode(
                    done.json()["assertion"],
                    jwt.PyJWK(keys[0]).key,
                    algorithms=["ES256"],
                    audience=self.id,
                )
        self.received(callback)
        if callback.claims is not None:
            return "Welcome back", f"Logged in at level {callback.claims['loa']}."
        return "Not logged in", f"The login ended: {query.get('error', 'no assertion')}."


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/cb":
                self.send_error(404)
                return
            query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
            title, text = provider.handle(query)
            body = (
                f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                f"<title>{html.escape(title)}</title></head><body><main>"
                f"<h1>{html.escape(title)}</h1><p id='result'>{html.escape(text)}</p>"
                "</main></body></html>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the test's output is the browser's

    return Handler


@contextmanager
def running_provider(
    service_url: str, keys_file: Path, *, display_name: str | None = None
) -> Iterator[Provider]:
    """A provider on ``http://localhost:PORT`` with a provider key made in the service's key
    file (which the service reads again when it changes), optionally with a display name."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    origin = f"http://localhost:{server.server_address[1]}"
    keys = ApiKeys(keys_file)
    if display_name is None:
        entry, key = keys.add(origin, [Role.PROVIDER])
    else:
        entry, key = keys.add(origin, [Role.PROVIDER], display_name=display_name)
    provider = Provider(
        id=origin,
        display_name=display_name,
        return_url=f"{origin}/cb",
        service_url=service_url,
        headers={"Authorization": f"Bearer {key}"},
    )
    server.RequestHandlerClass = _handler(provider)
    thread = threading.Thread(target=server.serve_forever, name="provider", daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        keys.remove(entry.key_id)
