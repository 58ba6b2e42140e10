"""The OpenID Provider's code flow, as the OpenID conformance suite's basic OP plan checks it:
discovery, authorize through the real login pages, the code (with PKCE S256) exchanged with
``private_key_jwt`` or a development secret, the ID token's signature and claims, userinfo by
header and by body, a code used twice, an unregistered redirect URI, unknown parameters."""

from __future__ import annotations

from urllib.parse import quote

import jwt as pyjwt
import pytest

from server.services.oidc.claims import CPR_CLAIM
from tests.unit.server.oidc.harness import (
    CALLBACK,
    DEV_RP,
    ISSUER,
    RP,
    RSA_RP,
    Op,
    authorize_params,
    authorized,
    pkce,
    query_of,
    token_request,
)

pytestmark = pytest.mark.databases("sqlite")

LEVEL = "https://data.gov.dk/concept/core/nsis/loa/"


def verified(op: Op, id_token: str, audience: str = RP) -> dict[str, object]:
    keys = op.browser.get("/.well-known/jwks.json").json()["keys"]
    header = pyjwt.get_unverified_header(id_token)
    expected = "RS256" if audience == RSA_RP else "ES256"  # as each was registered
    assert header["alg"] == expected
    key = next(k for k in keys if k["kid"] == header["kid"])
    assert key["alg"] == expected
    # The services' clock runs behind the test's (see harness.Op): its times are checked here.
    claims: dict[str, object] = pyjwt.decode(
        id_token,
        pyjwt.PyJWK(key).key,
        algorithms=[expected],
        audience=audience,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert isinstance(claims["iat"], int)
    assert claims["iat"] <= op.now[0]
    assert claims["exp"] == claims["iat"] + 300
    return claims


def test_discovery_names_the_endpoints_and_what_is_supported(op: Op) -> None:
    found = op.browser.get("/.well-known/openid-configuration").json()
    assert found["issuer"] == ISSUER
    # OpenID Connect Discovery: RS256 must be offered; ES256 is the default.
    assert found["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert found["token_endpoint"] == ISSUER + "/token"
    assert found["response_types_supported"] == ["code"]
    assert found["code_challenge_methods_supported"] == ["S256"]
    assert found["token_endpoint_auth_methods_supported"] == [
        "private_key_jwt",
        "client_secret_basic",
    ]
    assert found["authorization_response_iss_parameter_supported"] is True
    assert LEVEL + "High" in found["acr_values_supported"]
    assert found["end_session_endpoint"] == ISSUER + "/end-session"
    assert found["backchannel_logout_session_supported"] is True


@pytest.mark.databases("sqlite", "postgresql")
def test_a_login_ends_in_a_code_with_state_and_issuer_then_tokens(op: Op) -> None:
    done = authorized(op, scope="openid profile cpr", unknown_parameter="ignored")
    assert done.answer["state"] == done.params["state"]
    assert done.answer["iss"] == ISSUER
    answer = token_request(op, done)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer"  # noqa: S105 - a token type
    assert "refresh_token" not in tokens
    claims = verified(op, tokens["id_token"])
    assert claims["acr"] == LEVEL + "Substantial"
    assert claims["amr"] == ["mfa", "otp", "pwd"]
    assert claims["nonce"] == done.params["nonce"]
    assert isinstance(claims["auth_time"], int)
    assert abs(claims["auth_time"] - op.now[0]) < 5
    assert claims["sid"]
    assert claims[CPR_CLAIM] == "010190-1234"
    assert claims["name"] == "Test Person"
    assert "at_hash" in claims


def test_the_subject_is_the_per_provider_pseudonym(op: Op) -> None:
    first = token_request(op, authorized(op)).json()
    other = token_request(op, authorized(op, RSA_RP), client_id=RSA_RP).json()
    again = token_request(op, authorized(op)).json()
    sub = verified(op, first["id_token"])["sub"]
    assert verified(op, again["id_token"])["sub"] == sub
    assert verified(op, other["id_token"], RSA_RP)["sub"] != sub


def test_person_data_only_for_an_entitled_provider_that_asks(op: Op) -> None:
    not_asked = verified(op, token_request(op, authorized(op)).json()["id_token"])
    assert CPR_CLAIM not in not_asked
    assert "name" not in not_asked
    not_entitled = token_request(
        op, authorized(op, RSA_RP, scope="openid cpr profile"), client_id=RSA_RP
    ).json()
    claims = verified(op, not_entitled["id_token"], RSA_RP)
    assert CPR_CLAIM not in claims
    assert "name" not in claims
    assert not_entitled["scope"] == "openid"


def test_a_missing_nonce_is_accepted(op: Op) -> None:
    done = authorized(op, nonce="")
    assert "nonce" not in done.params
    claims = verified(op, token_request(op, done).json()["id_token"])
    assert "nonce" not in claims


def test_userinfo_by_header_and_by_body(op: Op) -> None:
    tokens = token_request(op, authorized(op, scope="openid cpr")).json()
    sub = verified(op, tokens["id_token"])["sub"]
    by_header = op.browser.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert by_header.status_code == 200, by_header.text
    assert by_header.json() == {"sub": sub, CPR_CLAIM: "010190-1234"}
    by_body = op.browser.post("/userinfo", data={"access_token": tokens["access_token"]})
    assert by_body.json() == by_header.json()
    wrong = op.browser.get("/userinfo", headers={"Authorization": "Bearer nothing"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    both = op.browser.post(
        "/userinfo",
        data={"access_token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert both.status_code == 400


@pytest.mark.databases("sqlite", "postgresql")
def test_a_code_used_twice_is_refused_and_revokes_the_first_tokens(op: Op) -> None:
    done = authorized(op)
    first = token_request(op, done)
    assert first.status_code == 200
    access = first.json()["access_token"]
    assert op.browser.get("/userinfo", headers={"Authorization": f"Bearer {access}"}).is_success
    second = token_request(op, done)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    revoked = op.browser.get("/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert revoked.status_code == 401


def test_the_development_client_authenticates_with_its_secret(op: Op) -> None:
    done = authorized(op, DEV_RP)
    assert token_request(op, done, client_id=DEV_RP).status_code == 200
    wrong = op.browser.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": authorized(op, DEV_RP).code,
            "redirect_uri": DEV_RP + "/cb",
        },
        auth=(quote(DEV_RP, safe=""), "not the secret"),
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"


# --- the authorization request refused ---


def test_an_unregistered_redirect_uri_is_never_redirected_to(op: Op) -> None:
    _, challenge = pkce()
    params = authorize_params(RP, challenge, redirect_uri="https://evil.example/cb")
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert "evil.example" not in answer.text


def test_an_unknown_client_gets_a_page_not_a_redirect(op: Op) -> None:
    _, challenge = pkce()
    params = authorize_params("https://nobody.example", challenge)
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert answer.status_code == 400
    assert "location" not in answer.headers


@pytest.mark.parametrize(
    "change",
    [
        {"code_challenge": "", "code_challenge_method": ""},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": ""},
    ],
)
def test_pkce_s256_is_required(op: Op, change: dict[str, str]) -> None:
    _, challenge = pkce()
    params = authorize_params(RP, challenge, **change)
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert answer.status_code == 302
    back = query_of(answer.headers["location"])
    assert back["error"] == "invalid_request"
    assert back["state"] == params["state"]
    assert back["iss"] == ISSUER
    assert answer.headers["location"].startswith(CALLBACK)


def test_a_wrong_code_verifier_is_refused(op: Op) -> None:
    done = authorized(op)
    answer = token_request(op, done, verifier=pkce()[0])
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_a_token_request_without_code_verifier_is_refused(op: Op) -> None:
    answer = token_request(op, authorized(op), verifier=None)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


def test_without_openid_scope_the_request_is_refused(op: Op) -> None:
    _, challenge = pkce()
    params = authorize_params(RP, challenge, scope="profile")
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert query_of(answer.headers["location"])["error"] == "invalid_scope"


def test_a_response_type_other_than_code_is_refused(op: Op) -> None:
    _, challenge = pkce()
    params = authorize_params(RP, challenge, response_type="id_token")
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert query_of(answer.headers["location"])["error"] == "unsupported_response_type"
