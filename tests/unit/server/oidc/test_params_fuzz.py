"""The authorization request's parameters come from anyone: parsing them gives what the login
is asked for or a ``BadParameter`` naming the parameter, never another error; the authorize
endpoint answers any query with a redirect to the client's own URI or a page, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.domain.model import Level
from server.services.oidc.levels import ACR
from server.services.oidc.params import PROMPTS, Ask, BadParameter, parse_ask
from tests.unit.server.oidc.harness import CALLBACK, RP, Op, authorize_params, pkce

pytestmark = pytest.mark.databases("sqlite")

NAMES = ("acr_values", "claims", "prompt", "max_age", "login_hint", "nonce", "other")
ACRS = st.sampled_from([*ACR.values(), "urn:x", "", " "])
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10) | ACRS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
CLAIMS = st.one_of(
    st.text(max_size=40),
    JSON_VALUES.map(json.dumps),
    st.fixed_dictionaries(
        {
            "id_token": st.fixed_dictionaries(
                {
                    "acr": JSON_VALUES
                    | st.fixed_dictionaries(
                        {"essential": st.booleans(), "values": st.lists(ACRS, max_size=3)}
                    )
                }
            )
        }
    ).map(json.dumps),
)
VALUES = {
    "acr_values": st.lists(ACRS, max_size=3).map(" ".join) | st.text(max_size=30),
    "claims": CLAIMS,
    "prompt": st.lists(st.sampled_from([*PROMPTS, "x"]), max_size=3).map(" ".join),
    "max_age": st.text(max_size=14) | st.integers(-5, 10**14).map(str),
    "login_hint": st.text(max_size=70),
}
PARAMS = st.fixed_dictionaries(
    {}, optional={name: VALUES.get(name, st.text(max_size=20)) for name in NAMES}
)


@given(PARAMS)
def test_parsing_gives_an_ask_or_names_the_bad_parameter(params: dict[str, str]) -> None:
    try:
        ask = parse_ask(params, Level.SUBSTANTIAL)
    except BadParameter as exc:
        assert exc.parameter in NAMES  # noqa: PT017 - either answer is right, never another
        return
    assert isinstance(ask, Ask)
    assert ask.level in Level
    assert ask.prompt <= PROMPTS
    assert not ("none" in ask.prompt and len(ask.prompt) > 1)
    assert ask.max_age is None or 0 <= ask.max_age
    assert ask.person_number is None or len(ask.person_number) == 11


@given(st.lists(ACRS, min_size=1, max_size=4))
def test_the_level_asked_is_the_lowest_known_acr_value(values: list[str]) -> None:
    ask = parse_ask({"acr_values": " ".join(values)}, Level.SUBSTANTIAL)
    known = [level for level, uri in ACR.items() if uri in values]
    assert ask.level == (min(known) if known else Level.SUBSTANTIAL)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(PARAMS, st.booleans())
def test_authorize_answers_any_query_without_a_fault(
    op: Op, extra: dict[str, str], with_pkce: bool
) -> None:
    params = authorize_params(RP, pkce()[1] if with_pkce else None, **extra)
    answer = op.browser.get("/authorize", params=params, follow_redirects=False)
    assert answer.status_code in (302, 303, 400), answer.text
    if answer.status_code == 302:
        assert answer.headers["location"].startswith(CALLBACK + "?")
    elif answer.status_code == 303:
        assert answer.headers["location"].startswith("/login/")
