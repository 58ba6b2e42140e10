"""Behind reverse proxies: whose X-Forwarded-For and X-Forwarded-Proto are believed, which
address of a chain is the client, and what the service then keys its throttles on."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from server.app import create_app
from server.proxies import ForwardedBy, TrustedProxies, address_of
from server.services.access import Role
from server.settings import Settings
from server.storage.throttle_repositories import ThrottleRepository
from tests.unit.server.conftest import SQLITE_ONLY, TEST_PROVIDER, make_key

PROXIES = TrustedProxies((ipaddress.ip_network("127.0.0.3"), ipaddress.ip_network("10.20.0.0/16")))
FORGED = "203.0.113.66"


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # Nobody's header is believed but a trusted proxy's.
        ("192.0.2.7", [FORGED], "192.0.2.7"),
        ("192.0.2.7", [], "192.0.2.7"),
        # nginx appends the address it was reached from: the right-most is the client, and
        # what the client wrote to the left of it counts for nothing.
        ("127.0.0.3", ["192.0.2.7"], "192.0.2.7"),
        ("127.0.0.3", [f"{FORGED}, 192.0.2.7"], "192.0.2.7"),
        ("127.0.0.3", [f"{FORGED},192.0.2.7"], "192.0.2.7"),
        # A chain: each trusted proxy is passed over, the first address none has is the client.
        ("127.0.0.3", [f"{FORGED}, 192.0.2.7, 10.20.1.1"], "192.0.2.7"),
        ("127.0.0.3", [f"{FORGED}, 192.0.2.7, 10.20.1.1, 10.20.9.9"], "192.0.2.7"),
        # Header lines are one list, in order.
        ("127.0.0.3", [FORGED, "192.0.2.7, 10.20.1.1"], "192.0.2.7"),
        # Everyone in it is a trusted proxy: the left-most, the first of them, is the client.
        ("127.0.0.3", ["10.20.1.1, 10.20.9.9"], "10.20.1.1"),
        # A trusted proxy's own request, with no header: the proxy is the client.
        ("127.0.0.3", [], "127.0.0.3"),
        # Something no address where a trusted proxy wrote: believe nothing past that proxy.
        ("127.0.0.3", [f"{FORGED}, unknown"], "127.0.0.3"),
        ("127.0.0.3", [f"{FORGED}, unknown, 10.20.1.1"], "10.20.1.1"),
        ("127.0.0.3", [""], "127.0.0.3"),
        # Ports some proxies add, and IPv6.
        ("127.0.0.3", ["192.0.2.7:4711"], "192.0.2.7"),
        ("127.0.0.3", ["[2001:db8::7]:4711"], "2001:db8::7"),
        ("127.0.0.3", ["2001:db8::7"], "2001:db8::7"),
        # A dual-stack socket shows IPv4 peers as IPv4-mapped IPv6 addresses.
        ("::ffff:127.0.0.3", ["192.0.2.7"], "192.0.2.7"),
        ("127.0.0.3", ["::ffff:192.0.2.7"], "192.0.2.7"),
        # A peer that is no address at all (a unix socket) is its own client.
        ("unix-socket", ["192.0.2.7"], "unix-socket"),
    ],
)
def test_the_client_is_the_right_most_address_no_trusted_proxy_has(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    assert PROXIES.client(peer, forwarded_for) == client


def test_without_trusted_proxies_every_header_is_ignored() -> None:
    nobody = TrustedProxies(())
    assert nobody.client("127.0.0.1", ["192.0.2.7"]) == "127.0.0.1"
    assert nobody.scheme("127.0.0.1", ["https"], "http") == "http"


@pytest.mark.parametrize(
    ("peer", "forwarded_proto", "scheme"),
    [
        ("127.0.0.3", ["https"], "https"),
        ("127.0.0.3", [" HTTPS "], "https"),
        ("10.20.0.1", ["http"], "http"),
        ("192.0.2.7", ["https"], "http"),  # not a proxy's word
        ("127.0.0.3", [], "http"),
        ("127.0.0.3", ["https, http"], "http"),  # several: which one is unclear
        ("127.0.0.3", ["https", "https"], "http"),
        ("127.0.0.3", ["gopher"], "http"),
    ],
)
def test_the_scheme_is_a_trusted_proxys_one_word(
    peer: str, forwarded_proto: list[str], scheme: str
) -> None:
    assert PROXIES.scheme(peer, forwarded_proto, "http") == scheme


@pytest.mark.parametrize("text", ["", "unknown", "_hidden", "1.2.3", "[::1", "300.1.1.1"])
def test_what_is_no_address_is_none(text: str) -> None:
    assert address_of(text) is None


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that answers the client and scheme it was given."""
    body = f"{scope['client'][0]} {scope['scheme']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize(
    ("peer", "headers", "seen"),
    [
        ("127.0.0.3", {"x-forwarded-for": f"{FORGED}, 192.0.2.7"}, "192.0.2.7 http"),
        (
            "127.0.0.3",
            {"x-forwarded-for": "192.0.2.7", "x-forwarded-proto": "https"},
            "192.0.2.7 https",
        ),
        ("127.0.0.3", {"x-forwarded-proto": "https"}, "127.0.0.3 https"),
        (
            "192.0.2.8",
            {"x-forwarded-for": FORGED, "x-forwarded-proto": "https"},
            "192.0.2.8 http",
        ),
    ],
)
def test_the_middleware_gives_the_app_the_forwarded_client_and_scheme(
    peer: str, headers: dict[str, str], seen: str
) -> None:
    client = TestClient(ForwardedBy(_echo, PROXIES), client=(peer, 4711))
    assert client.get("/", headers=headers).text == seen


def _wrong_password_from(client: TestClient, headers: dict[str, str]) -> int:
    begun = client.post("/authentications", json={"provider": TEST_PROVIDER})
    transaction = begun.json()["id"]
    identified = client.post(
        f"/authentications/{transaction}/identify",
        json={"person_number": "010190-1234"},
        headers=headers,
    )
    assert identified.status_code == 200, identified.text
    answer = client.post(
        f"/authentications/{transaction}/password",
        json={"password": "not the password"},
        headers=headers,
    )
    return answer.status_code


def _networks_throttled(app: Any) -> set[str]:
    with app.state.sessions() as session:
        return set(ThrottleRepository(session).with_prefix("net:"))


@SQLITE_ONLY
def test_the_throttles_key_the_client_a_trusted_proxy_forwarded(settings: Settings) -> None:
    proxied = settings.model_copy(update={"trusted_proxies": list(PROXIES.networks)})
    app = create_app(proxied)
    key = make_key(settings, TEST_PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(app, client=("127.0.0.3", 4711), headers=key) as through_proxy:
        forged = {"x-forwarded-for": f"{FORGED}, 192.0.2.7"}
        assert _wrong_password_from(through_proxy, forged) == 401
    with TestClient(app, client=("192.0.2.8", 4711), headers=key) as direct:
        assert _wrong_password_from(direct, {"x-forwarded-for": FORGED}) == 401
    assert _networks_throttled(app) == {"net:192.0.2.7", "net:192.0.2.8"}


def test_the_settings_read_proxies_and_the_external_origin_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AKKREDITIV_TRUSTED_PROXIES", " 127.0.0.3, 10.20.0.0/16,2001:db8::/64 ")
    monkeypatch.setenv("AKKREDITIV_EXTERNAL_ORIGIN", "HTTPS://Eid.Example.dk:443/")
    for name in ("ISSUER", "RP_ID", "RP_ORIGINS"):
        monkeypatch.delenv(f"AKKREDITIV_{name}", raising=False)
    settings = Settings()
    assert [str(network) for network in settings.trusted_proxies] == [
        "127.0.0.3/32",
        "10.20.0.0/16",
        "2001:db8::/64",
    ]
    # One origin, as a browser writes it; the issuer and the FIDO2 relying party follow it.
    assert settings.external_origin == "https://eid.example.dk"
    assert settings.issuer == "https://eid.example.dk"
    assert settings.rp_id == "eid.example.dk"
    assert settings.rp_origins == ["https://eid.example.dk"]


def test_settings_named_outright_win_over_the_external_origin() -> None:
    settings = Settings(
        external_origin="https://eid.example.dk:8443",
        issuer="https://issuer.example.dk",
        rp_id="example.dk",
        rp_origins=["https://login.example.dk"],
    )
    assert settings.external_origin == "https://eid.example.dk:8443"
    assert (settings.issuer, settings.rp_id) == ("https://issuer.example.dk", "example.dk")
    assert settings.rp_origins == ["https://login.example.dk"]


def test_without_an_external_origin_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EXTERNAL_ORIGIN", "TRUSTED_PROXIES", "ISSUER", "RP_ID", "RP_ORIGINS"):
        monkeypatch.delenv(f"AKKREDITIV_{name}", raising=False)
    settings = Settings()
    assert (settings.external_origin, settings.trusted_proxies) == (None, [])
    assert (settings.issuer, settings.rp_id) == ("http://localhost:8000", "localhost")
    assert settings.rp_origins == ["http://localhost:8000"]


@pytest.mark.parametrize(
    "origin",
    [
        "eid.example.dk",
        "ftp://eid.example.dk",
        "https://eid.example.dk/login",
        "https://eid.example.dk?next=/",
        "https://user@eid.example.dk",
        "https://eid.example.dk:port",
        "https://",
    ],
)
def test_an_external_origin_that_is_no_origin_is_refused(origin: str) -> None:
    with pytest.raises(ValidationError, match="external_origin"):
        Settings(external_origin=origin)


@pytest.mark.parametrize("proxies", ["10.20.0.1/16", "proxy.example.dk", "*"])
def test_a_trusted_proxy_that_is_no_address_or_network_is_refused(proxies: str) -> None:
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(trusted_proxies=proxies)  # type: ignore[arg-type]  # as the environment gives it


def test_the_readme_shows_the_nginx_configuration_the_integration_test_runs() -> None:
    root = Path(__file__).resolve().parents[3]
    configuration = (root / "deploy" / "nginx" / "akkreditiv.conf").read_text("utf-8")
    assert f"```nginx\n{configuration}```\n" in (root / "README.md").read_text("utf-8")
