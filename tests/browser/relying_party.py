"""A relying party for the OpenID browser test: a local HTTP server on another port (another
origin than the service's) whose ``/cb`` records the URL the browser came back to, and a key
pair of its own for ``private_key_jwt``. The OpenID client itself is the test's (a standard
library's), as a real service's would be."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc.jwk import ECKey

from akkreditiv.cli.demo_rp import page, send_html


@dataclass
class RelyingParty:
    """The running relying party: its origin (its client id), callback and key."""

    origin: str
    key: ECKey
    returns: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def client_id(self) -> str:
        return self.origin

    @property
    def callback(self) -> str:
        return self.origin + "/cb"

    def returned(self, url: str) -> None:
        with self._lock:
            self.returns.append(url)

    def last(self) -> str:
        with self._lock:
            assert self.returns, "the browser never came back to the relying party"
            return self.returns[-1]


def _handler(party: RelyingParty) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not self.path.startswith("/cb"):
                self.send_error(404)
                return
            party.returned(party.origin + self.path)
            send_html(self, 200, page("Back at the service", ""))

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def running_relying_party() -> Iterator[RelyingParty]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    origin = f"http://localhost:{server.server_address[1]}"
    key = ECKey.generate_key("P-256", parameters={"kid": "rp-1", "use": "sig"}, private=True)
    party = RelyingParty(origin, key)
    server.RequestHandlerClass = _handler(party)
    thread = threading.Thread(target=server.serve_forever, name="relying-party", daemon=True)
    thread.start()
    try:
        yield party
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
