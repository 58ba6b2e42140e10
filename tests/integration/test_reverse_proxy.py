"""Behind a real reverse proxy: Debian's nginx ends TLS, with a certificate the test makes, in
front of ``akkreditiv serve``, configured by ``deploy/nginx/akkreditiv.conf`` (the README's)
with only its names, port and paths changed. The service is told its external origin and that
nginx is its one trusted proxy, and nothing else about where it is: the pages' sign-in gets the
``__Host-`` Secure cookie, forms pass the Origin check from the external origin only, a FIDO2
key registers for the external origin only, and failures are throttled by the address nginx
was reached from, whatever a client writes in X-Forwarded-For, through nginx or past it.

nginx reaches the service from 127.0.0.3 (``proxy_bind``, the trusted proxy); the clients
come from other 127.0.0.x addresses, each its own source, as in the attack tests."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.webauthn import CredentialCreationOptions

from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens.attestation import Manufacturer, root_authority
from firmware_sim.tokens.ctap2 import AlwaysPresent, load_authenticator, new_fido_state
from server.services.throttles import NETWORK_RATE
from server.storage.engine import create_engine_for, session_factory
from server.storage.throttle_repositories import ThrottleRepository
from tests.integration.conftest import missing_component
from tests.integration.pages import add_citizen, citizen_signs_in, csrf
from tests.integration.server_process import (
    ServerProcess,
    follow_stderr,
    free_port,
    start_server,
)
from tests.unit.server.people import PERSON_STORED, SEED, enrol_via_api

pytestmark = pytest.mark.integration

SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "akkreditiv.conf"
PROXY = "127.0.0.3"  # the address nginx reaches the service from: the trusted proxy
PROVIDER = "https://sp.example"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test person's password
NGINX_READY = "start worker process "
_numbers = itertools.count(5000)


# --- the certificate, nginx and the service ------------------------------------------------------


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a server certificate for localhost it signed: the CA's
    certificate, the server's certificate and the server's key (PEM files)."""
    now = dt.datetime.now(dt.UTC)
    ca_key, ca = root_authority("akkreditiv test CA", path_length=0)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "localhost.pem", folder / "localhost-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def site_config(changes: dict[str, str]) -> str:
    """The README's nginx configuration with ``changes`` made, each to one line of it."""
    text = SITE.read_text("utf-8")
    for old, new in changes.items():
        assert text.count(old) == 1, f"{old!r} is not once in {SITE}"
        text = text.replace(old, new)
    return text


# The rest of an nginx.conf around the site, everything in the test's folder. proxy_bind: the
# service tells its proxy (127.0.0.3) from the clients on this machine (other 127.0.0.x).
NGINX_CONF = """\
{user}
worker_processes 1;
pid {folder}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 128; }}
http {{
    # Which process served each request (test_scale_out reads it).
    log_format upstream '$request $status $upstream_addr';
    access_log {folder}/access.log upstream;
    client_body_temp_path {folder}/client-body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    proxy_bind {proxy};
    include {site};
}}
"""


@dataclass
class Nginx:
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        if self.reader is not None:
            self.reader.join(timeout=15)  # it ends at the end of nginx's output
        if self.process.stderr is not None:
            self.process.stderr.close()


def site_for(tls: tuple[Path, Path, Path], port: int, *upstreams: int) -> str:
    """The README's site on 127.0.0.1:``port``, its upstream the services on ``upstreams``."""
    _, certificate, key = tls
    servers = "\n    ".join(f"server 127.0.0.1:{upstream};" for upstream in upstreams)
    return site_config(
        {
            "server 127.0.0.1:8000;": servers,
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            "server_name eid.example.dk;": "server_name localhost;",
            "/etc/ssl/akkreditiv/fullchain.pem": str(certificate),
            "/etc/ssl/akkreditiv/privkey.pem": str(key),
        }
    )


def start_nginx(folder: Path, site: str) -> Nginx:
    """nginx in the foreground with ``site`` (``site_for``'s), returns once its worker runs
    (its own notice on stderr, not a poll)."""
    binary = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if binary is None:
        missing_component("nginx is not installed (scripts/setup installs Debian's)")
        raise AssertionError  # unreachable: missing_component always leaves
    site_file = folder / "akkreditiv.conf"
    site_file.write_text(site, "utf-8")
    conf = folder / "nginx.conf"
    # As root, nginx's workers would be nobody, who may not write the test's temp folders.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        NGINX_CONF.format(user=user, folder=folder, proxy=PROXY, site=site_file), "utf-8"
    )
    process = subprocess.Popen(
        [binary, "-e", "stderr", "-p", f"{folder}/", "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    nginx = Nginx(process)
    nginx.reader, ready = follow_stderr(process, NGINX_READY, nginx.log, f"nginx-{folder.name}")
    if not ready.wait(30) or process.poll() is not None:
        nginx.stop()
        pytest.fail(f"nginx did not start:\n{''.join(nginx.log)}")
    return nginx


@dataclass
class Stack:
    """nginx in front of the service: ``external`` is where people reach it (https, through
    nginx), ``internal`` the origin the service itself listens at."""

    external: str
    internal: str
    server: ServerProcess
    tls: ssl.SSLContext
    folder: Path
    sim_home: Path

    def client(
        self,
        address: str = "127.0.0.1",
        *,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Client:
        """A client from ``address`` through nginx, over TLS with the test's CA trusted; with
        the provider's API key unless ``headers`` are given (a browser has none)."""
        return httpx.Client(
            base_url=self.external,
            headers=self.server.headers if headers is None else headers,
            timeout=30,
            follow_redirects=follow_redirects,
            transport=httpx.HTTPTransport(verify=self.tls, local_address=address),
        )

    def direct(self, address: str) -> httpx.Client:
        """A client from ``address`` straight to the service, past nginx."""
        return httpx.Client(
            base_url=self.server.url,
            headers=self.server.headers,
            timeout=30,
            transport=httpx.HTTPTransport(local_address=address),
        )

    def networks_throttled(self) -> set[str]:
        engine = create_engine_for(self.server.env["AKKREDITIV_DATABASE_URL"])
        try:
            with session_factory(engine)() as session:
                return set(ThrottleRepository(session).with_prefix("net:"))
        finally:
            engine.dispose()


def behind_nginx(external: str) -> dict[str, str | None]:
    """What the README tells an operator to set behind nginx, and no more: the issuer and the
    FIDO2 relying party follow the external origin. (And Argon2id at its cheapest.)"""
    return {
        "AKKREDITIV_EXTERNAL_ORIGIN": external,
        "AKKREDITIV_TRUSTED_PROXIES": PROXY,
        "AKKREDITIV_ISSUER": None,
        "AKKREDITIV_RP_ID": None,
        "AKKREDITIV_RP_ORIGINS": None,
        "AKKREDITIV_PASSWORD_HASH_TIME_COST": "1",
        "AKKREDITIV_PASSWORD_HASH_MEMORY_KIB": "8",
        "AKKREDITIV_PASSWORD_HASH_PARALLELISM": "1",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("reverse-proxy")
    tls = make_tls(folder)
    sim_home = folder / "sim-home"
    roots = folder / "fido-roots.pem"
    roots.write_bytes(Manufacturer.load_or_create(sim_home).root_pem())
    port = free_port()
    external = f"https://localhost:{port}"
    server = start_server(
        folder / "service",
        f"sqlite+pysqlite:///{folder / 'akkreditiv.db'}",
        provider=PROVIDER,
        extra_env={**behind_nginx(external), "AKKREDITIV_FIDO_TRUSTED_ROOTS": str(roots)},
    )
    nginx: Nginx | None = None
    try:
        upstream = int(server.url.rsplit(":", 1)[1])
        nginx = start_nginx(folder, site_for(tls, port, upstream))
        context = ssl.create_default_context(cafile=str(tls[0]))
        yield Stack(external, f"http://localhost:{upstream}", server, context, folder, sim_home)
    finally:
        if nginx is not None:
            nginx.stop()
        server.stop()


def test_nginx_answers_over_tls_for_the_service(stack: Stack) -> None:
    with stack.client() as http:
        health = http.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    assert health.headers["server"].startswith("nginx")
    assert health.headers["strict-transport-security"] == "max-age=63072000"


# --- the pages -----------------------------------------------------------------------------------


def test_a_citizen_signs_in_through_the_pages_with_a_host_only_secure_cookie(
    stack: Stack,
) -> None:
    env = stack.server.env
    with stack.client() as http:
        add_citizen(
            env["AKKREDITIV_DATABASE_URL"], Path(env["AKKREDITIV_KEK_FILE"]), http, PASSWORD
        )
    origin = {"origin": stack.external}
    with stack.client(headers=origin, follow_redirects=True) as browser:
        page = citizen_signs_in(browser, "/account/login", PERSON_STORED, PASSWORD, SEED)
        assert str(page.url) == f"{stack.external}/account", page.url
        # Signing in gave the browser a new session: its cookie host-only and for TLS only.
        issued = [
            header
            for answer in (*page.history, page)
            for header in answer.headers.get_list("set-cookie")
            if header.startswith("__Host-akk_session=")
        ]
        assert issued, [answer.headers for answer in page.history]
        for header in issued:
            attributes = [part.strip().lower() for part in header.split(";")]
            assert "secure" in attributes
            assert "path=/" in attributes
            assert not any(part.startswith("domain=") for part in attributes)
        assert {cookie.name for cookie in browser.cookies.jar} == {"__Host-akk_session"}
        assert all(cookie.secure for cookie in browser.cookies.jar)


def test_a_form_passes_the_origin_check_from_the_external_origin_only(stack: Stack) -> None:
    with stack.client(headers={}) as browser:
        token = csrf(browser.get("/"))

        def choose_english(origin: str) -> int:
            return browser.post(
                "/lang", data={"csrf": token, "lang": "en"}, headers={"origin": origin}
            ).status_code

        assert choose_english(stack.internal) == 403
        assert choose_english(stack.external) == 303


# --- a security key ------------------------------------------------------------------------------


def as_json(value: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return document


def test_a_security_key_registers_for_the_external_origin_only(
    stack: Stack, tmp_path: Path
) -> None:
    state = tmp_path / "fido.json"
    new_fido_state(state, manufacturer_home=stack.sim_home)
    device = InProcessCtapDevice(load_authenticator(state, AlwaysPresent()))
    with stack.client() as http:
        identity, _ = enrol_via_api(http, f"240291-{next(_numbers)}", "Inger Christensen")

        def register(origin: str) -> httpx.Response:
            """The key's registration as a browser at ``origin`` makes it (python-fido2)."""
            begun = http.post(f"/identities/{identity}/fido2/register/begin", json={})
            assert begun.status_code == 201, begun.text
            options = CredentialCreationOptions.from_dict(begun.json()["options"])
            assert options.public_key.rp.id == "localhost"  # the external origin's host
            client = Fido2Client(device, DefaultClientDataCollector(origin))
            made = client.make_credential(options.public_key)
            return http.post(
                f"/fido2/registrations/{begun.json()['state_id']}/complete",
                json={"response": as_json(made)},
            )

        # The service's own address is not where people are: a page there is somebody else's.
        refused = register(stack.internal)
        assert refused.status_code == 400, refused.text
        assert refused.json()["type"].endswith(":registration-rejected")
        accepted = register(stack.external)
        assert accepted.status_code == 201, accepted.text
        assert (accepted.json()["kind"], accepted.json()["state"]) == ("fido2", "active")


# --- throttles -----------------------------------------------------------------------------------


def wrong_password(http: httpx.Client, headers: dict[str, str] | None = None) -> int:
    """A login naming a new person number, and a wrong password for it: the status."""
    begun = http.post("/authentications", json={"provider": PROVIDER})
    assert begun.status_code == 201, begun.text
    transaction = begun.json()["id"]
    identified = http.post(
        f"/authentications/{transaction}/identify",
        json={"person_number": f"010190-{next(_numbers)}"},
    )
    assert identified.status_code == 200, identified.text
    answer = http.post(
        f"/authentications/{transaction}/password",
        json={"password": "not the password"},
        headers=headers,
    )
    assert answer.status_code in (401, 429), answer.text
    return answer.status_code


def test_failures_are_throttled_by_the_address_nginx_was_reached_from(stack: Stack) -> None:
    attacker, neighbour = "127.0.0.10", "127.0.0.11"
    statuses: list[int] = []
    with stack.client(attacker) as http:
        # Each failure claims another address: nginx appends the real one, which counts.
        for n in range(2 * NETWORK_RATE.burst):
            statuses.append(wrong_password(http, {"x-forwarded-for": f"203.0.113.{n + 1}"}))
            if statuses[-1] == 429:
                break
    assert statuses[-1] == 429, statuses
    assert statuses.count(401) >= NETWORK_RATE.burst  # the burst, then the network waits
    # Another address on the same machine is another source, with its own allowance.
    with stack.client(neighbour) as http:
        assert wrong_password(http, {"x-forwarded-for": attacker}) == 401
    # Past nginx, the header is the client's own word: not believed from a stranger.
    with stack.direct(attacker) as http:
        assert wrong_password(http, {"x-forwarded-for": "198.51.100.7"}) == 429
    networks = stack.networks_throttled()
    assert {f"net:{attacker}", f"net:{neighbour}"} <= networks
    assert not {key for key in networks if key.startswith(("net:203.0.113.", "net:198.51."))}
    assert f"net:{PROXY}" not in networks  # nginx itself is nobody's source
