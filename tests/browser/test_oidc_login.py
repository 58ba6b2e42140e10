"""A service provider that speaks OpenID Connect logs a person in through the real login pages
in Chromium: the provider is registered with ``akkreditiv providers add`` (its public key),
and Authlib's standard client (``OAuth2Session``, PKCE S256 and ``private_key_jwt``) reads
the discovery document, sends the browser to the authorization endpoint, gets the code back
(with ``iss``, RFC 9207), exchanges it, validates the ID token against the JWKS and calls
userinfo. The pages name the service and the level and stay accessible."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.browser.axe import assert_accessible
from tests.browser.conftest import PageFactory, WebServer
from tests.browser.relying_party import RelyingParty, running_relying_party
from tests.browser.test_login_provider import enrol, log_in_by_keyboard

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.integration

SHOWN_AS = "Testkommunen"
CPR_CLAIM = "https://data.gov.dk/model/core/eid/cprNumber"
SUBSTANTIAL = "https://data.gov.dk/concept/core/nsis/loa/Substantial"


@pytest.fixture(scope="module")
def api(web_server: WebServer) -> Iterator[httpx.Client]:
    with web_server.process.client() as client:
        yield client


def register(web_server: WebServer, party: RelyingParty, name: str, *extra: str) -> None:
    """Register ``party`` by the command a service's onboarding runs."""
    jwks = web_server.folder / f"jwks-{party.origin.rsplit(':', 1)[1]}.json"
    jwks.write_text(json.dumps({"keys": [party.key.as_dict(private=False)]}))
    command = ["providers", "add", "--client-id", party.client_id, "--name", name]
    command += ["--redirect-uri", party.callback, "--jwks", str(jwks), *extra]
    registered = subprocess.run(
        [sys.executable, "-m", "akkreditiv", *command],
        env=web_server.process.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert registered.returncode == 0, registered.stderr


@pytest.fixture(scope="module")
def relying_party(web_server: WebServer) -> Iterator[RelyingParty]:
    with running_relying_party() as party:
        register(web_server, party, SHOWN_AS, "--entitled", "cpr,name")
        yield party


@pytest.fixture(scope="module")
def health(web_server: WebServer) -> Iterator[tuple[RelyingParty, RelyingParty]]:
    """Two relying parties of one SSO group."""
    with running_relying_party() as first, running_relying_party() as second:
        register(web_server, first, "Lægen", "--sso-group", "health")
        register(web_server, second, "Apoteket", "--sso-group", "health")
        yield first, second


def client_of(party: RelyingParty, token_endpoint: str, scope: str = "openid") -> OAuth2Session:
    """Authlib's client for ``party``: PKCE S256 and private_key_jwt (ES256)."""
    client = OAuth2Session(
        party.client_id,
        party.key,
        scope=scope,
        redirect_uri=party.callback,
        code_challenge_method="S256",
        token_endpoint_auth_method="private_key_jwt",  # noqa: S106 - a method's name
    )
    client.register_client_auth_method(
        PrivateKeyJWT(token_endpoint, alg="ES256", headers={"kid": party.key.kid})
    )
    return client


def test_authlibs_client_logs_in_through_the_pages_and_validates_the_id_token(
    page: Page, web_server: WebServer, api: httpx.Client, relying_party: RelyingParty
) -> None:
    _, secret = enrol(api, "0202901234", "Olivia Openid")
    issuer = web_server.process.url
    discovery = httpx.get(f"{issuer}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == issuer
    token_endpoint = discovery["token_endpoint"]

    client = client_of(relying_party, token_endpoint, "openid profile cpr")
    verifier = "v" * 20 + "-verifier-of-the-relying-party-1234567890"
    url, state = client.create_authorization_url(
        discovery["authorization_endpoint"], code_verifier=verifier, nonce="rp-nonce-1"
    )

    page.goto(url)
    page.wait_for_url(re.compile(r"/login/[0-9a-f-]{36}$"))
    text = page.locator("main").inner_text()
    assert f"{SHOWN_AS} beder dig logge på" in text
    assert "Betydelig" in text
    assert_accessible(page, "an OpenID login's first page, da")
    log_in_by_keyboard(page, "020290-1234", secret)
    page.wait_for_url(re.compile(re.escape(relying_party.callback) + r"\?"))

    back = relying_party.last()
    returned = {name: values[-1] for name, values in parse_qs(urlsplit(back).query).items()}
    assert returned["state"] == state
    assert returned["iss"] == issuer  # RFC 9207: the answer names who gave it

    token = client.fetch_token(token_endpoint, authorization_response=back, code_verifier=verifier)
    keys = KeySet.import_key_set(httpx.get(discovery["jwks_uri"]).json())
    id_token = jwt.decode(token["id_token"], keys, algorithms=["ES256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": relying_party.client_id},
        nonce={"essential": True, "value": "rp-nonce-1"},
        acr={"essential": True, "value": SUBSTANTIAL},
        exp={"essential": True},
    ).validate(id_token.claims)
    assert id_token.header["alg"] == "ES256"
    assert id_token.claims[CPR_CLAIM] == "020290-1234"
    assert id_token.claims["name"] == "Olivia Openid"
    assert set(id_token.claims["amr"]) >= {"pwd", "otp"}

    info = client.get(discovery["userinfo_endpoint"])
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == id_token.claims["sub"]
    assert info.json()[CPR_CLAIM] == "020290-1234"


def test_an_unregistered_redirect_uri_gets_an_accessible_page_and_no_redirect(
    page: Page, web_server: WebServer, relying_party: RelyingParty
) -> None:
    query = (
        f"response_type=code&client_id={relying_party.client_id}"
        "&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&scope=openid"
        "&code_challenge=" + "a" * 43 + "&code_challenge_method=S256"
    )
    answer = page.goto(f"{web_server.process.url}/authorize?{query}")
    assert answer is not None
    assert answer.status == 400
    assert urlsplit(page.url).netloc == urlsplit(web_server.process.url).netloc
    assert_accessible(page, "a refused authorization request, da")


def test_single_sign_on_within_the_group_and_a_step_up_that_says_so(
    page: Page, web_server: WebServer, api: httpx.Client, health: tuple[RelyingParty, RelyingParty]
) -> None:
    """The doctor's login serves the pharmacy without factors; the pharmacy asking for High
    gets the credentials page, which says the person is logged in already (axe-clean)."""
    _, secret = enrol(api, "0303901234", "Sigrid Sso")
    doctor, pharmacy = health
    discovery = httpx.get(f"{web_server.process.url}/.well-known/openid-configuration").json()
    token_endpoint = discovery["token_endpoint"]
    verifier = "s" * 43
    first = client_of(doctor, token_endpoint)
    url, _ = first.create_authorization_url(
        discovery["authorization_endpoint"], code_verifier=verifier, nonce="n-doctor"
    )
    page.goto(url)
    page.wait_for_url(re.compile(r"/login/[0-9a-f-]{36}$"))
    log_in_by_keyboard(page, "030390-1234", secret)
    page.wait_for_url(re.compile(re.escape(doctor.callback) + r"\?"))
    doctor_tokens = first.fetch_token(
        token_endpoint, authorization_response=doctor.last(), code_verifier=verifier
    )

    second = client_of(pharmacy, token_endpoint)
    url, _ = second.create_authorization_url(
        discovery["authorization_endpoint"], code_verifier=verifier, nonce="n-pharmacy"
    )
    page.goto(url)  # no login page: straight back with a code
    page.wait_for_url(re.compile(re.escape(pharmacy.callback) + r"\?"))
    pharmacy_tokens = second.fetch_token(
        token_endpoint, authorization_response=pharmacy.last(), code_verifier=verifier
    )
    keys = KeySet.import_key_set(httpx.get(discovery["jwks_uri"]).json())
    at_doctor = jwt.decode(doctor_tokens["id_token"], keys, algorithms=["ES256"]).claims
    at_pharmacy = jwt.decode(pharmacy_tokens["id_token"], keys, algorithms=["ES256"]).claims
    assert at_pharmacy["sid"] == at_doctor["sid"]
    assert at_pharmacy["auth_time"] == at_doctor["auth_time"]
    assert at_pharmacy["sub"] != at_doctor["sub"]

    url, _ = second.create_authorization_url(
        discovery["authorization_endpoint"],
        code_verifier=verifier,
        acr_values="https://data.gov.dk/concept/core/nsis/loa/High",
    )
    page.goto(url)
    page.wait_for_url(re.compile(r"/login/[0-9a-f-]{36}/choose$"))
    notice = page.locator("#sso-step-up")
    assert "Du er allerede logget på" in notice.inner_text()
    assert "Apoteket beder dig logge på" in page.locator("main").inner_text()
    assert "Høj" in page.locator("main").inner_text()
    assert_accessible(page, "a single sign-on step-up, da")


@pytest.fixture(scope="module")
def idpy_party(web_server: WebServer) -> Iterator[RelyingParty]:
    with running_relying_party() as party:
        register(
            web_server, party, "Idpy-tjenesten", "--entitled", "cpr", "--id-token-alg", "RS256"
        )
        yield party


def test_idpyoidcs_client_logs_in_through_the_pages_too(
    page: Page, web_server: WebServer, api: httpx.Client, idpy_party: RelyingParty
) -> None:
    """A second, independent relying-party library (idpyoidc's ``StandAloneClient``, the
    OpenID Foundation-certified idpy stack): code, PKCE S256 and private_key_jwt through the
    same pages, reading the discovery document itself (which it checks strictly: RS256 must
    be offered); the library verifies the ID token against the JWKS and calls userinfo. The
    provider is registered for RS256 ID tokens, so both algorithms are used end to end."""
    from cryptojwt.jwk.ec import ECKey as IdpyKey
    from cryptojwt.key_jar import KeyJar
    from idpyoidc.client.oauth2.stand_alone_client import StandAloneClient

    _, secret = enrol(api, "0505901234", "Ivar Idpy")
    issuer = web_server.process.url
    keyjar = KeyJar()
    keyjar.add_keys("", [IdpyKey(**idpy_party.key.as_dict(private=True))])
    client = StandAloneClient(
        config={
            "issuer": issuer,
            "client_id": idpy_party.client_id,
            "client_type": "oidc",
            "base_url": idpy_party.origin,
            "redirect_uris": [idpy_party.callback],
            "client_authn_methods": ["private_key_jwt"],
            "preference": {
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code"],
                "scopes_supported": ["openid", "cpr"],
            },
            "add_ons": {
                "pkce": {
                    "function": "idpyoidc.client.oauth2.add_on.pkce.add_support",
                    "kwargs": {"code_challenge_length": 64, "code_challenge_method": "S256"},
                }
            },
        },
        keyjar=keyjar,
    )
    client.do_provider_info()
    client.do_client_registration()
    url = client.init_authorization(req_args={"scope": ["openid", "cpr"]})

    page.goto(url)
    page.wait_for_url(re.compile(r"/login/[0-9a-f-]{36}$"))
    assert "Idpy-tjenesten beder dig logge på" in page.locator("main").inner_text()
    log_in_by_keyboard(page, "050590-1234", secret)
    page.wait_for_url(re.compile(re.escape(idpy_party.callback) + r"\?"))

    back = idpy_party.last()
    returned = {name: values[-1] for name, values in parse_qs(urlsplit(back).query).items()}
    assert returned["iss"] == issuer
    result = client.finalize(returned)  # token (private_key_jwt), ID token checked, userinfo
    id_token = result["id_token"]
    assert id_token.jws_header["alg"] == "RS256"
    assert id_token["iss"] == issuer
    assert id_token["acr"] == SUBSTANTIAL
    assert id_token[CPR_CLAIM] == "050590-1234"
    assert result["userinfo"]["sub"] == id_token["sub"]
    assert result["userinfo"][CPR_CLAIM] == "050590-1234"


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_the_consoles_provider_list_is_accessible(
    new_page: PageFactory, web_server: WebServer, relying_party: RelyingParty, locale: str
) -> None:
    """A supervisor (the test service's own key is one) reads the registered providers."""
    page = new_page(locale=locale)
    page.goto(f"{web_server.url}/console/login?next=/console/providers")
    key = web_server.process.headers["Authorization"].removeprefix("Bearer ")
    page.locator("#api_key").fill(key)
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_url(f"{web_server.url}/console/providers")
    table = page.locator("main table").inner_text()
    assert SHOWN_AS in table
    assert relying_party.callback in table
    assert_accessible(page, f"console providers, {locale[:2]}")
