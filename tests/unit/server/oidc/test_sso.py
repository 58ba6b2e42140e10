"""Single sign-on within an SSO group and logout: a second provider of the group asking for a
level the session reached gets its code without a login (the same ``sid`` and ``auth_time``,
its own ``sub``); asking for more steps up; a provider of another group gets a login of its
own; ``prompt=none`` answers from the session, ``prompt=login`` and an old session under
``max_age`` do not. RP-initiated logout checks the hint and the return address, ends the
session and sends every provider it served a logout token it can verify."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from sqlalchemy import select

from server.domain.model import CredentialKind, CredentialState
from server.services.oidc.sso import BACKCHANNEL_EVENT
from server.storage.tables import Credential
from tests.unit.server.oidc.harness import (
    ELSEWHERE,
    HEALTH_A,
    HEALTH_B,
    ISSUER,
    Op,
    authorize_params,
    authorized,
    pkce,
    query_of,
    token_request,
)
from tests.unit.server.oidc.test_code_flow import LEVEL, verified

pytestmark = pytest.mark.databases("sqlite")


def ask(op: Op, client_id: str, **extra: str) -> tuple[object, dict[str, str]]:
    """An authorization request of ``client_id``: the answer and the verifier's pair."""
    verifier, challenge = pkce()
    params = authorize_params(client_id, challenge, **extra)
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    return answer, {"verifier": verifier, **params}


def id_token_of(op: Op, client_id: str, location: str, sent: dict[str, str]) -> dict[str, object]:
    """Exchange the code in ``location`` and verify the ID token."""
    from tests.unit.server.oidc.harness import Authorized

    done = Authorized(sent, query_of(location), sent["verifier"])
    tokens = token_request(op, done, client_id=client_id)
    assert tokens.status_code == 200, tokens.text
    claims = verified(op, tokens.json()["id_token"], client_id)
    claims["_raw"] = tokens.json()["id_token"]
    return claims


def logged_in_at_a(op: Op) -> dict[str, object]:
    done = authorized(op, HEALTH_A)
    tokens = token_request(op, done, client_id=HEALTH_A).json()
    claims = verified(op, tokens["id_token"], HEALTH_A)
    claims["_raw"] = tokens["id_token"]
    return claims


def test_a_second_provider_of_the_group_gets_a_code_without_a_login(op: Op) -> None:
    first = logged_in_at_a(op)
    answer, sent = ask(op, HEALTH_B)
    assert answer.status_code == 302, answer.text  # type: ignore[attr-defined]
    location = answer.headers["location"]  # type: ignore[attr-defined]
    assert location.startswith(HEALTH_B + "/cb?")
    assert query_of(location)["iss"] == ISSUER
    second = id_token_of(op, HEALTH_B, location, sent)
    assert second["sid"] == first["sid"]
    assert second["auth_time"] == first["auth_time"]
    assert second["acr"] == LEVEL + "Substantial"
    assert second["sub"] != first["sub"]


def test_a_provider_of_another_group_gets_a_login_of_its_own(op: Op) -> None:
    logged_in_at_a(op)
    answer, _ = ask(op, ELSEWHERE)
    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert answer.headers["location"].startswith("/login/")  # type: ignore[attr-defined]


def test_asking_for_more_steps_up_from_the_credentials(op: Op) -> None:
    logged_in_at_a(op)
    answer, _ = ask(op, HEALTH_B, acr_values=LEVEL + "High")
    assert answer.status_code == 303  # type: ignore[attr-defined]
    login = answer.headers["location"]  # type: ignore[attr-defined]
    # The person is known already: the login goes straight to the credentials.
    first_page = op.browser.get(login, follow_redirects=False)
    assert first_page.status_code == 303
    assert first_page.headers["location"] == login + "/choose"
    choice = op.browser.get(login + "/choose")
    assert "Du er allerede logget på" in choice.text
    assert 'href="/end-session">Er det ikke dig? Log ud</a>' in choice.text


def test_prompt_none_answers_from_the_session(op: Op) -> None:
    logged_in_at_a(op)
    answer, _ = ask(op, HEALTH_B, prompt="none")
    assert answer.status_code == 302  # type: ignore[attr-defined]
    assert "code" in query_of(answer.headers["location"])  # type: ignore[attr-defined]
    below, _ = ask(op, HEALTH_B, prompt="none", acr_values=LEVEL + "High")
    assert query_of(below.headers["location"])["error"] == "login_required"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("extra", "fresh"),
    [({"prompt": "login"}, True), ({"max_age": "60"}, True), ({"max_age": "10000"}, False)],
)
def test_prompt_login_and_max_age_against_the_session(
    op: Op, extra: dict[str, str], fresh: bool
) -> None:
    logged_in_at_a(op)
    op.tick(120)
    answer, _ = ask(op, HEALTH_B, **extra)
    assert answer.status_code == (303 if fresh else 302)  # type: ignore[attr-defined]


@pytest.mark.databases("sqlite", "postgresql")
def test_rp_initiated_logout_ends_the_session_and_tells_every_provider(op: Op) -> None:
    first = logged_in_at_a(op)
    answer, sent = ask(op, HEALTH_B)
    id_token_of(op, HEALTH_B, answer.headers["location"], sent)  # type: ignore[attr-defined]
    assert op.logouts is not None
    bye = op.browser.get(
        "/end-session",
        params={
            "id_token_hint": str(first["_raw"]),
            "post_logout_redirect_uri": HEALTH_A + "/bye",
            "state": "s-1",
        },
        follow_redirects=False,
    )
    assert bye.status_code == 303
    assert bye.headers["location"] == HEALTH_A + "/bye?state=s-1"
    keys = op.browser.get("/.well-known/jwks.json").json()["keys"]
    told = {}
    for path, body in op.logouts.received:
        token = body["logout_token"]
        header = pyjwt.get_unverified_header(token)
        key = next(k for k in keys if k["kid"] == header["kid"])
        audience = "https://" + path.split("/", 2)[2]
        claims = pyjwt.decode(
            token,
            pyjwt.PyJWK(key).key,
            algorithms=["ES256"],
            audience=audience,
            issuer=ISSUER,
            options={"verify_iat": False, "verify_exp": False},
        )
        assert claims["events"] == {BACKCHANNEL_EVENT: {}}
        assert claims["sid"] == first["sid"]
        assert "nonce" not in claims
        told[audience] = claims
    assert set(told) == {HEALTH_A, HEALTH_B}
    # The session is over: the group's providers get logins of their own again.
    again, _ = ask(op, HEALTH_B)
    assert again.status_code == 303  # type: ignore[attr-defined]


def test_logout_refuses_an_unregistered_return_address_or_a_foreign_hint(op: Op) -> None:
    first = logged_in_at_a(op)
    elsewhere = op.browser.get(
        "/end-session",
        params={
            "id_token_hint": str(first["_raw"]),
            "post_logout_redirect_uri": "https://evil.example/",
        },
        follow_redirects=False,
    )
    assert elsewhere.status_code == 400
    assert "location" not in elsewhere.headers
    forged = pyjwt.encode({"iss": ISSUER, "aud": HEALTH_A}, "k" * 32, algorithm="HS256")
    foreign = op.browser.get(
        "/end-session", params={"id_token_hint": forged}, follow_redirects=False
    )
    assert foreign.status_code == 400
    # Neither ended the session.
    answer, _ = ask(op, HEALTH_B)
    assert answer.status_code == 302  # type: ignore[attr-defined]


def test_logout_without_a_return_address_says_so_on_a_page(op: Op) -> None:
    logged_in_at_a(op)
    page = op.browser.get("/end-session")
    assert page.status_code == 200
    assert "Du er logget ud" in page.text


def test_a_credential_blocked_since_ends_what_it_proved(op: Op) -> None:
    """The session was proven with a code display and a password; the code display is blocked
    (lost) since: the next provider of the group gets a login of its own, not a code."""
    logged_in_at_a(op)
    services = op.browser.app.state.services  # type: ignore[attr-defined]
    with services.sessions.begin() as session:
        blocked = session.scalars(
            select(Credential).where(Credential.kind == CredentialKind.CODE_DISPLAY)
        ).all()
        assert blocked
        for credential in blocked:
            credential.state = CredentialState.BLOCKED
    answer, _ = ask(op, HEALTH_B)
    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert answer.headers["location"].startswith("/login/")  # type: ignore[attr-defined]
