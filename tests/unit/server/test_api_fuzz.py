"""Every route of the app, fed malformed input: the answer is never a 5xx, and every 4xx is a
problem+json (an error page, for the web pages' routes). Routes are enumerated from the app
itself, so routers added later are covered without touching this file.

First a fixed sweep sends each kind of bad input to every route (so none is left out by
chance), then hypothesis mixes them: wrong JSON types, extra fields, huge strings, NUL bytes,
non-JSON bodies, bad or unknown ids in the path, wrong content types. Ids in paths are
sometimes real (an identity, a credential, a login), so the bodies reach the services too.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from tests.unit.server.conftest import TEST_PROVIDER

PROBLEM = "application/problem+json"
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

HUGE = "x" * 100_000  # in bodies
LONG = "k" * 8_000  # in URLs (clients refuse URLs past 64 KiB)
WEIRD_STRINGS = [
    "",
    "\x00",
    "a\x00b",
    HUGE,
    "\U0001f600" * 1000,
    "-1",
    "NaN",
    "0" * 64,
    "'; DROP TABLE identities; --",
    "../../etc/passwd",
    "\u202e\u0000\ufeff",
]
BAD_IDS = ["not-a-uuid", "0", "\x00", "x" * 5000, "%", "00000000-0000-0000-0000-00000000000g"]
RAW_BODIES = [b"", b"{", b"\xff\xfe\x00", b"<KeyContainer/>", b"null", b"[]", b'{"a": NaN}']
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/json; charset=latin-1",
    "",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(WEIRD_STRINGS),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    params: tuple[str, ...]
    fields: tuple[str, ...]  # the JSON body's top-level properties, from the OpenAPI schema
    page: bool = False  # a web page's route (not in the OpenAPI document): errors are pages


def _body_fields(document: Mapping[str, Any], operation: Mapping[str, Any]) -> tuple[str, ...]:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    ref = schema.get("$ref")
    if ref:
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return tuple(schema.get("properties", {}))


# The OpenID Provider's protocol endpoints, whose errors are OAuth's, not problem documents.
OAUTH_ENDPOINTS = frozenset({"/token", "/userinfo"})


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every method of every route the app serves (its own and every included router's)."""
    document = app.openapi()
    found = []
    for route in iter_route_contexts(app.routes):
        path, methods = route.path, route.methods
        if not path or not methods:
            continue
        operations = document["paths"].get(path, {})
        for method in sorted(methods):
            operation = operations.get(method.lower(), {})
            found.append(
                Endpoint(
                    method,
                    path,
                    tuple(_PARAM.findall(path)),
                    _body_fields(document, operation),
                    page=path not in document["paths"],
                )
            )
    # Everything the OpenAPI document promises is among them.
    promised = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert promised <= {(e.method, e.path) for e in found}
    return found


def fill(endpoint: Endpoint, values: Mapping[str, str]) -> str:
    """The endpoint's path with each parameter replaced (percent-encoded)."""
    return _PARAM.sub(lambda match: quote(values[match.group(1)], safe=""), endpoint.path)


def check(answer: Any, what: object, *, page: bool = False) -> None:
    """The test client's answer (an httpx-style response) is no 5xx, and a 4xx is a problem
    (for a page's route, an error page)."""
    assert answer.status_code < 500, (what, answer.status_code, answer.text[:300])
    kind = answer.headers.get("content-type", "")
    # A page's path with an empty parameter routes nowhere: that 404 is the API's problem.
    if answer.status_code < 400 or answer.request.method == "HEAD":
        return
    if answer.request.url.path in OAUTH_ENDPOINTS:
        # The OpenID Provider's token and userinfo endpoints answer as OAuth says (RFC 6749
        # 5.2, RFC 6750 3.1): a JSON error member, or a WWW-Authenticate header.
        if kind.startswith("application/json"):
            assert isinstance(answer.json().get("error"), str), (what, answer.text[:200])
        else:
            assert "www-authenticate" in answer.headers, (what, answer.status_code, kind)
        assert HUGE not in answer.text
        return
    if page and not kind.startswith(PROBLEM):
        assert kind.startswith("text/html"), (what, answer.status_code, kind)
        assert '<html lang="' in answer.text
        assert HUGE not in answer.text
        return
    assert kind.startswith(PROBLEM), (what, answer.status_code, kind)
    assert answer.json()["status"] == answer.status_code
    # Nothing sent comes back: a malformed body may hold a code or a password.
    assert HUGE not in answer.text


def real_ids(client: TestClient) -> dict[str, str]:
    """An identity with an assigned code display and a login begun for it, so fuzzed bodies
    reach the services behind the path checks too."""
    enrolled = client.post(
        "/identities",
        json={
            "person_number": "030385-4321",
            "name": "Fuzz Target",
            "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
        },
    )
    assert enrolled.status_code == 201, enrolled.text
    identity = enrolled.json()["id"]
    token = otp_token.new_state(otp_token.Model.DISPLAY)
    imported = client.post(
        "/token-batches",
        content=pskc.write_pskc([token.pskc_key()]),
        headers={"content-type": "application/xml"},
    )
    assert imported.status_code == 201, imported.text
    assigned = client.post(f"/identities/{identity}/tokens", json={"serial": token.serial})
    assert assigned.status_code == 200, assigned.text
    begun = client.post("/authentications", json={"provider": TEST_PROVIDER})
    assert begun.status_code == 201, begun.text
    return {
        "identity": identity,
        "credential": assigned.json()["id"],
        "transaction": begun.json()["id"],
    }


def id_for(name: str, ids: Mapping[str, str]) -> str:
    """A real id of the kind the parameter's name suggests, or a random one."""
    for kind, value in ids.items():
        if kind in name:
            return value
    return str(uuid.uuid4())


# --- the fixed sweep -------------------------------------------------------------------------


def test_every_route_answers_each_kind_of_malformed_input_with_a_4xx(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    routes = endpoints(app)
    assert len(routes) >= 20  # identities, credentials, logins, FIDO2 at least
    ids = real_ids(client)
    sent = 0
    for endpoint in routes:
        path = fill(endpoint, {name: id_for(name, ids) for name in endpoint.params})
        fields = endpoint.fields or ("x",)
        bodies: list[dict[str, Any]] = [
            {"json": {"unexpected": True}},
            {"json": dict.fromkeys(fields, None)},
            {"json": dict.fromkeys(fields, HUGE)},
            {"json": dict.fromkeys(fields, "\x00")},
            {"json": [{key: {"nested": [1, 2]} for key in fields}]},
            *(
                {"content": raw, "headers": {"content-type": "application/json"}}
                for raw in RAW_BODIES[:4]  # the rest come up in the hypothesis test
            ),
            {"content": b'{"a": 1}', "headers": {"content-type": "text/plain"}},
        ]
        for body in bodies if endpoint.method not in ("GET", "HEAD") else [{}]:
            answer = client.request(endpoint.method, path, **body)
            check(answer, (endpoint, str(body)[:80]), page=endpoint.page)
            sent += 1
        # Bad ids fail before any body is looked at: one body each is enough.
        for bad in BAD_IDS if endpoint.params else []:
            wrong = fill(endpoint, dict.fromkeys(endpoint.params, bad))
            body = {} if endpoint.method in ("GET", "HEAD") else {"json": {}}
            answer = client.request(endpoint.method, wrong, **body)
            check(answer, (endpoint, bad[:20]), page=endpoint.page)
            sent += 1
        query = {"provider": "\x00", "kind": LONG}
        answer = client.request(endpoint.method, path, params=query)
        check(answer, (endpoint, "query"), page=endpoint.page)
        sent += 1
    assert sent > 5 * len(routes)


# --- hypothesis ------------------------------------------------------------------------------


@st.composite
def requests(draw: st.DrawFn, routes: list[Endpoint], ids: Mapping[str, str]) -> tuple[Any, ...]:
    endpoint = draw(st.sampled_from(routes))
    values = {
        name: draw(
            st.sampled_from([id_for(name, ids), str(uuid.uuid4()), *BAD_IDS]) | st.text(max_size=30)
        )
        for name in endpoint.params
    }
    path = fill(endpoint, values)
    fields = st.sampled_from(endpoint.fields) if endpoint.fields else st.text(max_size=12)
    shaped = st.dictionaries(fields | st.text(max_size=12), json_values, max_size=5)
    kind = draw(st.sampled_from(["json", "shaped", "raw"]))
    headers = {}
    if kind == "raw":
        content = draw(st.sampled_from(RAW_BODIES) | st.binary(max_size=200))
    else:
        content = json.dumps(draw(json_values if kind == "json" else shaped)).encode()
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["content-type"] = content_type
    query = draw(
        st.dictionaries(
            st.sampled_from(["provider", "kind", "x"]), st.text(max_size=20), max_size=2
        )
    )
    return endpoint, path, content, headers, query


def test_every_route_survives_hypothesis_generated_requests(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    routes = endpoints(app)
    ids = real_ids(client)

    @settings(
        max_examples=100,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests(routes, ids))
    def survives(request: tuple[Any, ...]) -> None:
        endpoint, path, content, headers, query = request
        method = endpoint.method
        body = {} if method in ("GET", "HEAD") else {"content": content, "headers": headers}
        answer = client.request(method, path, params=query, **body)
        check(answer, (method, path[:80], content[:80], headers), page=endpoint.page)

    survives()
