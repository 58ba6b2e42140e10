"""Scaled out: two ``akkreditiv serve`` processes on different ports share one PostgreSQL
database and one set of key files, behind Debian's nginx (the README's site with both in its
upstream). A login begun on one process is finished on the other, through the pages (the
browser session, its CSRF token and the login's state are the database's and the shared
keys', not a process's) and through the provider API (the assertion one process signs
verifies under the key set the other publishes); a person's throttle counts failures at either
process; the audit log both processes wrote, in several chains, verifies against the
checkpoints both signed into one file.

To choose the process a request reaches, nginx also listens on one port per process, each
the README's server block proxying straight to that process (``pinned_site``). The same host
name on every port: the browser's cookies go to all of them, as they would to one origin."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from server.services.throttles import SUBJECT_RATE
from server.storage.audit_repositories import AuditRepository
from server.storage.engine import create_engine_for, session_factory
from tests.integration.pages import add_citizen, citizen_signs_in
from tests.integration.server_process import ServerProcess, free_port, start_server
from tests.integration.test_reverse_proxy import (
    PROVIDER,
    Nginx,
    behind_nginx,
    make_tls,
    site_config,
    site_for,
    start_nginx,
)
from tests.unit.server.people import PERSON_STORED, SEED
from tests.unit.server.storage.databases import postgres_schema

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test person's password


def pinned_site(tls: tuple[Path, Path, Path], port: int, upstream: int) -> str:
    """The README's server block alone on 127.0.0.1:``port``, proxying straight to the
    service on ``upstream`` instead of to the upstream group."""
    _, certificate, key = tls
    site = site_config(
        {
            "proxy_pass http://akkreditiv;": f"proxy_pass http://127.0.0.1:{upstream};",
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            "server_name eid.example.dk;": "server_name localhost;",
            "/etc/ssl/akkreditiv/fullchain.pem": str(certificate),
            "/etc/ssl/akkreditiv/privkey.pem": str(key),
        }
    )
    return site[site.index("\nserver {") :]


@dataclass
class ScaledOut:
    """Two services behind nginx: ``external`` reaches either (nginx's choice), ``via[n]``
    reaches ``servers[n]`` only, through nginx all the same."""

    external: str
    via: tuple[str, str]
    servers: tuple[ServerProcess, ServerProcess]
    tls: ssl.SSLContext
    access_log: Path

    def client(
        self, base: str | None = None, *, address: str = "127.0.0.1", api: bool = True
    ) -> httpx.Client:
        """A client through nginx at ``base`` (the external origin by default), from
        ``address``; with the provider's API key, or as a browser (``api=False``)."""
        headers = self.servers[0].headers if api else {"origin": self.external}
        return httpx.Client(
            base_url=base or self.external,
            headers=headers,
            timeout=30,
            follow_redirects=not api,
            transport=httpx.HTTPTransport(verify=self.tls, local_address=address),
        )

    def served(self, n: int, method: str, path: str) -> int:
        """How many requests for ``path`` nginx passed to process ``n`` (from its access log,
        which names the upstream that answered each request)."""
        # nginx logs a request right after sending its answer, which the client may read
        # first. Its one worker logs it before it takes the next request, so once a request
        # sent now is answered, every earlier one is in the log.
        with self.client() as http:
            http.head("/health")
        upstream = self.servers[n].url.removeprefix("http://")
        lines = self.access_log.read_text("utf-8").splitlines()
        return sum(
            1
            for line in lines
            if line.startswith(f"{method} {path} HTTP/1.1 ") and line.endswith(f" {upstream}")
        )


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaledOut]:
    folder = tmp_path_factory.mktemp("scale-out")
    tls = make_tls(folder)
    ports = free_port(), free_port(), free_port()
    external = f"https://localhost:{ports[0]}"
    servers: list[ServerProcess] = []
    nginx: Nginx | None = None
    with postgres_schema() as url:
        try:
            # The same folder, so the same key files: what several machines get from the
            # deployment. The second starts once the first made the keys and the schema.
            for _ in range(2):
                servers.append(
                    start_server(
                        folder / "service", url, provider=PROVIDER, extra_env=behind_nginx(external)
                    )
                )
            upstreams = [int(server.url.rsplit(":", 1)[1]) for server in servers]
            site = site_for(tls, ports[0], *upstreams)
            for port, upstream in zip(ports[1:], upstreams, strict=True):
                site += pinned_site(tls, port, upstream)
            nginx = start_nginx(folder, site)
            yield ScaledOut(
                external,
                (f"https://localhost:{ports[1]}", f"https://localhost:{ports[2]}"),
                (servers[0], servers[1]),
                ssl.create_default_context(cafile=str(tls[0])),
                folder / "access.log",
            )
        finally:
            if nginx is not None:
                nginx.stop()
            for server in servers:
                server.stop()


def test_nginx_spreads_requests_over_both_processes(scaled: ScaledOut) -> None:
    with scaled.client() as http:
        for _ in range(6):
            assert http.get("/health").json() == {"status": "ok", "database": "postgresql"}
    assert scaled.served(0, "GET", "/health") >= 1
    assert scaled.served(1, "GET", "/health") >= 1
    assert scaled.served(0, "GET", "/health") + scaled.served(1, "GET", "/health") == 6


def test_a_login_begun_on_one_process_is_finished_on_the_other_in_the_pages(
    scaled: ScaledOut,
) -> None:
    env = scaled.servers[0].env
    with scaled.client() as http:
        add_citizen(
            env["AKKREDITIV_DATABASE_URL"], Path(env["AKKREDITIV_KEK_FILE"]), http, PASSWORD
        )
    first, second = scaled.via
    with scaled.client(first, api=False) as browser:
        # The browser session, the form's CSRF token and the login begin at the first process;
        # the password, the code and the end of the login at the second.
        page = citizen_signs_in(
            browser, "/account/login", PERSON_STORED, PASSWORD, SEED, finish_at=second
        )
        assert page.status_code == 200, page.text
        assert page.url.path == "/account", page.url
        assert "__Host-akk_session" in browser.cookies
    login = re.search(r"/login/([0-9a-f-]{36})/", " ".join(str(p.url) for p in page.history))
    assert login is not None, [str(p.url) for p in page.history]
    steps = f"/login/{login.group(1)}"
    assert scaled.served(0, "POST", "/account/login") == 1  # the login begins there
    assert scaled.served(1, "POST", "/account/login") == 0
    assert scaled.served(1, "POST", f"{steps}/password") == 1
    assert scaled.served(1, "POST", f"{steps}/code") == 1
    assert scaled.served(0, "POST", f"{steps}/code") == 0


def _ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, f"{answer.request.url}: {answer.text}"
    return answer.json()


def test_a_provider_login_moves_between_the_processes_at_every_step(
    scaled: ScaledOut,
) -> None:
    number = "020290-4321"
    with scaled.client(scaled.via[0]) as first, scaled.client(scaled.via[1]) as second:
        identity = _ok(
            first.post(
                "/identities",
                json={
                    "person_number": number,
                    "name": "Karen Blixen",
                    "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
                },
            ),
            201,
        )
        _ok(second.put(f"/identities/{identity['id']}/password", json={"password": PASSWORD}))
        begun = _ok(first.post("/authentications", json={"provider": PROVIDER}), 201)
        steps = f"/authentications/{begun['id']}"
        _ok(second.post(f"{steps}/identify", json={"person_number": number}))
        _ok(first.post(f"{steps}/password", json={"password": PASSWORD}))
        done = _ok(second.post(f"{steps}/complete"))
        keys = _ok(first.get("/.well-known/jwks.json"))["keys"]
    kid = jwt.get_unverified_header(done["assertion"])["kid"]
    claims = jwt.decode(
        done["assertion"],
        jwt.PyJWK(next(key for key in keys if key["kid"] == kid)),
        algorithms=["ES256"],
        audience=PROVIDER,
        issuer=scaled.external,
    )
    assert claims["txn"] == begun["id"]
    assert scaled.served(0, "POST", "/authentications") == 1
    assert scaled.served(1, "POST", f"{steps}/complete") == 1


def test_a_persons_failures_count_at_either_process(scaled: ScaledOut) -> None:
    number = "030390-5555"  # nobody's: throttled exactly as somebody's would be
    statuses: list[int] = []
    clients = [scaled.client(base, address="127.0.0.20") for base in scaled.via]
    try:
        for attempt in range(SUBJECT_RATE.burst + 1):
            http = clients[attempt % 2]
            begun = _ok(http.post("/authentications", json={"provider": PROVIDER}), 201)
            steps = f"/authentications/{begun['id']}"
            _ok(http.post(f"{steps}/identify", json={"person_number": number}))
            statuses.append(http.post(f"{steps}/password", json={"password": "wrong"}).status_code)
    finally:
        for http in clients:
            http.close()
    # Five failures at the two processes together, then the person waits at both.
    assert statuses == [401] * SUBJECT_RATE.burst + [429], statuses


def test_the_audit_log_both_processes_wrote_verifies_in_several_chains(
    scaled: ScaledOut,
) -> None:
    env = scaled.servers[0].env
    engine = create_engine_for(env["AKKREDITIV_DATABASE_URL"])
    try:
        with session_factory(engine)() as session:
            chains = [head.chain for head in AuditRepository(session).heads() if head.seq]
    finally:
        engine.dispose()
    assert len(chains) > 1, chains
    verified = subprocess.run(
        [sys.executable, "-m", "akkreditiv", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("audit log intact:"), verified.stdout
    assert "matching" in verified.stdout  # the checkpoints both processes signed


def test_a_process_with_keys_of_its_own_is_refused(
    scaled: ScaledOut, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A machine added without the deployment's key files makes keys of its own on start: it
    # would seal secrets no other process opens and sign what nobody verifies. It stops.
    url = scaled.servers[0].env["AKKREDITIV_DATABASE_URL"]
    with pytest.raises(RuntimeError, match="differ from the ones this database was first served"):
        start_server(tmp_path_factory.mktemp("stranger"), url, provider=PROVIDER)
