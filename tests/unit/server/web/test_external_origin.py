"""The pages behind a reverse proxy that ends TLS: the external origin
(``AKKREDITIV_EXTERNAL_ORIGIN``) is the pages' own, whatever the request to the service says,
and the scheme a trusted proxy forwards counts where no external origin is set."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from server.web.browser import COOKIE, SECURE_COOKIE
from tests.unit.server.conftest import ORIGIN
from tests.unit.server.web.forms import csrf_of, text_of
from tests.unit.server.web.test_migrate_support import Wizard, add_person

EXTERNAL = "https://eid.example.dk:8443"
PROXY = "127.0.0.3"


@pytest.fixture
def behind_tls(settings: Settings) -> Iterator[TestClient]:
    """A browser on the service's plain-http side, the service told its external origin."""
    external = settings.model_copy(update={"external_origin": EXTERNAL})
    with TestClient(create_app(external), base_url=ORIGIN) as client:
        yield client


def test_behind_an_https_origin_the_session_cookie_is_host_only_and_secure(
    behind_tls: TestClient,
) -> None:
    cookie = behind_tls.get("/").headers["set-cookie"]
    assert cookie.startswith(f"{SECURE_COOKIE}=")
    assert "Secure" in cookie
    assert "Path=/" in cookie
    assert "Domain" not in cookie


def test_forms_must_come_from_the_external_origin(behind_tls: TestClient) -> None:
    token = csrf_of(behind_tls.get("/"))
    # The cookie is Secure: the test browser on plain http keeps it only when told to.
    behind_tls.cookies.set(SECURE_COOKIE, behind_tls.cookies[SECURE_COOKIE])

    def choose_english(origin: str) -> int:
        answer = behind_tls.post(
            "/lang",
            data={"csrf": token, "lang": "en"},
            headers={"origin": origin},
            follow_redirects=False,
        )
        return answer.status_code

    assert choose_english(ORIGIN) == 403  # the service's own address is not where people are
    assert choose_english("https://eid.example.dk") == 403  # another port, another origin
    assert choose_english(EXTERNAL) == 303


def test_links_the_pages_show_name_the_external_origin(settings: Settings) -> None:
    external = settings.model_copy(update={"external_origin": EXTERNAL})
    with TestClient(create_app(external), base_url=ORIGIN) as browser:
        browser.headers["origin"] = EXTERNAL
        person = add_person(browser)
        wizard = Wizard(browser)
        browser.cookies.set(SECURE_COOKIE, browser.cookies[SECURE_COOKIE])
        wizard.start(person)
    assert f"{EXTERNAL}/migrate/{wizard.flow}" in text_of(wizard.page)


def test_an_http_external_origin_keeps_the_plain_cookie(settings: Settings) -> None:
    plain = settings.model_copy(update={"external_origin": "http://eid.test:8080"})
    with TestClient(create_app(plain), base_url="https://localhost:8000") as browser:
        cookie = browser.get("/").headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "Secure" not in cookie


@pytest.mark.parametrize(("peer", "secure"), [(PROXY, True), ("192.0.2.7", False)])
def test_without_an_external_origin_a_trusted_proxys_https_counts(
    settings: Settings, peer: str, secure: bool
) -> None:
    proxied = settings.model_copy(update={"trusted_proxies": [ipaddress.ip_network(PROXY)]})
    with TestClient(create_app(proxied), base_url=ORIGIN, client=(peer, 4711)) as browser:
        cookie = browser.get("/", headers={"x-forwarded-proto": "https"}).headers["set-cookie"]
    assert cookie.startswith(f"{SECURE_COOKIE if secure else COOKIE}=")
    assert ("Secure" in cookie) is secure
