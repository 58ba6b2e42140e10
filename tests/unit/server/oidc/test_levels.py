"""Levels and re-authentication: ``acr_values`` and an essential ``acr`` claim set the level
the login pages step up to, and the answer is never a lower level (the person may only
cancel, which the relying party hears as ``access_denied`` with a description);
``prompt=none`` without a session is ``login_required``; ``prompt=login`` and ``max_age``
get a login of their own with a fresh ``auth_time``; ``login_hint`` pre-fills the number."""

from __future__ import annotations

import json

import pytest

from devices.protocol.otp import totp
from tests.unit.server.oidc.harness import (
    PASSWORD,
    PERSON,
    RP,
    Op,
    authorize_params,
    authorized,
    pkce,
    post_form,
    query_of,
    token_request,
)
from tests.unit.server.oidc.test_code_flow import LEVEL, verified
from tests.unit.server.people import SEED
from tests.unit.server.web.forms import csrf_of, text_of

pytestmark = pytest.mark.databases("sqlite")


def start(op: Op, **extra: str) -> tuple[dict[str, str], str]:
    """An authorization request; its parameters and the login page it leads to."""
    _, challenge = pkce()
    params = authorize_params(RP, challenge, **extra)
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return params, answer.headers["location"]


def test_acr_values_high_is_not_answered_at_substantial(op: Op) -> None:
    params, login = start(op, acr_values=LEVEL + "High")
    page = op.browser.get(login)
    assert "Testkommunen beder dig logge på" in text_of(page)
    assert "sikringsniveau Høj" in text_of(page)
    transaction = login.rsplit("/", 1)[-1]
    op.tick()
    assert post_form(op.browser, login, person_number=PERSON).status_code == 303
    assert post_form(op.browser, f"/login/{transaction}/password", password=PASSWORD).is_redirect
    code = totp(SEED, op.now[0])
    assert post_form(op.browser, f"/login/{transaction}/code", code=code).is_redirect
    # Password and a code reach Substantial: the way back sends the browser on to step up.
    back = op.browser.get(f"/authorize/continue?transaction={transaction}", follow_redirects=False)
    assert back.status_code == 303
    assert back.headers["location"] == f"/login/{transaction}/choose"
    token = csrf_of(op.browser.get(f"/login/{transaction}/choose"))
    gone = op.browser.post(
        f"/login/{transaction}/cancel", data={"csrf": token}, follow_redirects=False
    )
    assert gone.status_code == 303
    answer = op.browser.get(
        f"/authorize/continue?error=access_denied&transaction={transaction}",
        follow_redirects=False,
    )
    result = query_of(answer.headers["location"])
    assert result["error"] == "access_denied"
    assert "before level high was reached" in result["error_description"]
    assert result["state"] == params["state"]


def test_acr_values_low_is_answered_at_low_after_the_password(op: Op) -> None:
    _, login = start(op, acr_values="urn:unknown " + LEVEL + "Low")
    transaction = login.rsplit("/", 1)[-1]
    assert post_form(op.browser, login, person_number=PERSON).status_code == 303
    answer = post_form(op.browser, f"/login/{transaction}/password", password=PASSWORD)
    assert answer.status_code == 303
    back = op.browser.get(f"/authorize/continue?transaction={transaction}", follow_redirects=False)
    assert back.status_code == 302, back.text


def test_an_essential_acr_claim_sets_the_level(op: Op) -> None:
    claims = {"id_token": {"acr": {"essential": True, "values": [LEVEL + "Substantial"]}}}
    done = authorized(op, claims=json.dumps(claims), acr_values=LEVEL + "Low")
    tokens = token_request(op, done).json()
    assert verified(op, tokens["id_token"])["acr"] == LEVEL + "Substantial"


def test_an_essential_acr_claim_no_level_here_satisfies_is_refused(op: Op) -> None:
    _, challenge = pkce()
    claims = {"id_token": {"acr": {"essential": True, "values": ["urn:other:loa"]}}}
    params = authorize_params(RP, challenge, claims=json.dumps(claims))
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert query_of(answer.headers["location"])["error"] == "invalid_request"


def test_prompt_none_without_a_session_is_login_required(op: Op) -> None:
    _, challenge = pkce()
    params = authorize_params(RP, challenge, prompt="none")
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert answer.status_code == 302
    result = query_of(answer.headers["location"])
    assert result["error"] == "login_required"
    assert result["state"] == params["state"]


def test_prompt_none_with_another_value_is_refused(op: Op) -> None:
    _, challenge = pkce()
    params = authorize_params(RP, challenge, prompt="none login")
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert query_of(answer.headers["location"])["error"] == "invalid_request"


@pytest.mark.parametrize("extra", [{"prompt": "login"}, {"max_age": "1"}, {"max_age": "10000"}])
def test_a_fresh_login_each_time_with_a_fresh_auth_time(op: Op, extra: dict[str, str]) -> None:
    first = verified(op, token_request(op, authorized(op)).json()["id_token"])
    op.tick(120)
    asked_at = op.now[0]
    second = verified(op, token_request(op, authorized(op, **extra)).json()["id_token"])
    assert isinstance(second["auth_time"], int)
    assert second["auth_time"] >= int(asked_at)
    assert second["auth_time"] > first["auth_time"]  # type: ignore[operator]
    assert second["sid"] != first["sid"]


def test_a_malformed_max_age_is_refused(op: Op) -> None:
    _, challenge = pkce()
    params = authorize_params(RP, challenge, max_age="soon")
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert query_of(answer.headers["location"])["error"] == "invalid_request"


def test_login_hint_pre_fills_the_person_number(op: Op) -> None:
    _, login = start(op, login_hint="0101901234")
    page = op.browser.get(login)
    assert 'value="010190-1234"' in page.text
    _, other = start(op, login_hint="not a number")
    assert 'value=""' in op.browser.get(other).text or "value=" not in op.browser.get(other).text
