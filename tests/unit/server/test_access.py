"""Access control: API keys (stored hashed, compared in constant time, re-read when the file
changes), every non-public route refusing a request without a valid key, and what each role may do,
on SQLite (and PostgreSQL where it behaves differently)."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.app import create_app
from server.services.access import PERMISSIONS, ApiKeys, Permission, Role
from server.services.errors import KeyMaterialRejected
from server.settings import Settings
from server.storage.tables import AuditEntry
from tests.unit.server.conftest import BOTH_DATABASES, SQLITE_ONLY, TEST_PROVIDER, make_key

pytestmark = SQLITE_ONLY  # and BOTH_DATABASES where marked (see the conftest)

# Reached without a key: discovery documents, and the steps a person's browser takes inside a
# login it was handed (the transaction id, 122 random bits, is the capability).
PUBLIC_PATHS = {
    "/health",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/.well-known/jwks.json",
    "/piv/crl",
    "/piv/ca.pem",
}


def is_public(path: str) -> bool:
    if path in PUBLIC_PATHS:
        return True
    if path.startswith("/legacy/authentications/{transaction_id}/"):
        return True  # the legacy login's browser steps (password, key-card code)
    if path == "/migrations" or path.startswith("/migrations/{flow_id}"):
        return True  # a person's own migration steps (assisted channels are checked inside)
    if path == "/piv/enrolments/{state_id}/complete":
        return True  # an operator's key, or the enrolment code a citizen's account page shows

    prefix = "/authentications/{transaction_id}/"
    return path.startswith(prefix) and not path.endswith("/complete")


def enrolment(number: str, channel: str = "bank", operators: list[str] | None = None) -> Any:
    return {
        "person_number": number,
        "name": "Ada Jensen",
        "proofing": {
            "channel": channel,
            "document_kind": "passport",
            "operator_ids": operators if operators is not None else ["bank-op"],
        },
    }


# --- the key file ----------------------------------------------------------------------------


def test_a_key_authenticates_as_its_entry_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    keys = ApiKeys(tmp_path / "keys.json")
    entry, key = keys.add("bank-op", [Role.OPERATOR_BANK])
    caller = keys.authenticate(key)
    assert caller is not None
    assert (caller.name, caller.roles) == ("bank-op", frozenset({Role.OPERATOR_BANK}))
    assert caller.actor == "operator_bank:bank-op"
    text = (tmp_path / "keys.json").read_text()
    assert key not in text
    assert key.split("_", 2)[2] not in text
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    assert entry.key_id in text


@pytest.mark.parametrize("name", ["akkreditiv-desk:test-bank", "akkreditiv-self-service"])
def test_a_provider_key_cannot_take_the_name_of_the_services_own_logins(
    tmp_path: Path, name: str
) -> None:
    """Else its logins would be named on the login pages as a bank's desk or self-service."""
    keys = ApiKeys(tmp_path / "keys.json")
    with pytest.raises(ValueError, match="are the service's"):
        keys.add(name, [Role.PROVIDER])
    keys.add("akkreditiv-desk-op", [Role.OPERATOR_BANK], "bank")  # an operator's name is free


@pytest.mark.parametrize(
    "mutate",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # wrong secret
        lambda key: "akk_00000000_" + key.split("_", 2)[2],  # unknown id
        lambda key: key + "x",  # too long
        lambda key: "",
        lambda key: "Bearer " + key,
    ],
)
def test_a_changed_key_is_refused(tmp_path: Path, mutate: Any) -> None:
    keys = ApiKeys(tmp_path / "keys.json")
    _, key = keys.add("sup", [Role.SUPERVISOR])
    assert keys.authenticate(mutate(key)) is None


def test_removing_a_key_takes_effect_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    server_side = ApiKeys(path)
    entry, key = ApiKeys(path).add("sup", [Role.SUPERVISOR])
    assert server_side.authenticate(key) is not None
    assert ApiKeys(path).remove(entry.key_id)
    assert server_side.authenticate(key) is None
    assert not ApiKeys(path).remove(entry.key_id)


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        json.dumps({"keys": "nope"}),
        json.dumps({"keys": [{"id": "zz", "name": "a", "roles": ["supervisor"], "sha256": "0"}]}),
        json.dumps(
            {"keys": [{"id": "0badc0de", "name": "a", "roles": ["king"], "sha256": "0" * 64}]}
        ),
    ],
)
def test_a_corrupt_key_file_is_a_configuration_error(tmp_path: Path, document: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(document)
    with pytest.raises(KeyMaterialRejected):
        ApiKeys(path).authenticate("akk_0badc0de_" + "A" * 43)


def test_every_role_has_permissions_and_only_supervisors_close_or_import() -> None:
    assert all(PERMISSIONS[role] for role in Role)
    closers = {role for role in Role if Permission.CLOSE in PERMISSIONS[role]}
    importers = {role for role in Role if Permission.IMPORT_TOKENS in PERMISSIONS[role]}
    assert closers == importers == {Role.SUPERVISOR}
    assert PERMISSIONS[Role.PROVIDER] == {Permission.LOGIN}


# --- routes ----------------------------------------------------------------------------------


def _filled(path: str) -> str:
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + str(uuid.uuid4()) + path[end + 1 :]
    return path


def test_every_route_but_the_public_ones_needs_a_key(settings: Settings) -> None:
    app = create_app(settings)
    checked = 0
    with TestClient(app, raise_server_exceptions=False) as anonymous:
        # The OpenAPI document lists every route, including routers added later.
        for path, operations in app.openapi()["paths"].items():
            if is_public(path):
                continue
            for method in operations:
                answer = anonymous.request(method.upper(), _filled(path), json={})
                assert answer.status_code == 401, (method, path, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert answer.json()["type"].endswith(":unauthenticated")
                checked += 1
    assert checked >= 15  # the identity, credential and login routes at least


def test_a_wrong_key_is_refused_like_a_missing_one(client: TestClient) -> None:
    answer = client.post(
        "/identities",
        json=enrolment("0101901234"),
        headers={"Authorization": "Bearer akk_0badc0de_" + "A" * 43},
    )
    assert answer.status_code == 401
    assert answer.json()["detail"] == "this API key is not valid"


def test_a_provider_cannot_enrol_or_read_identities(client: TestClient, settings: Settings) -> None:
    provider = make_key(settings, "https://shop.example", Role.PROVIDER)
    assert (
        client.post("/identities", json=enrolment("0101901234"), headers=provider).status_code
        == 403
    )
    enrolled = client.post(
        "/identities", json=enrolment("0101901234", operators=["bank-op", "sup"])
    )
    assert enrolled.status_code == 201, enrolled.text
    got = client.get(f"/identities/{enrolled.json()['id']}", headers=provider)
    assert got.status_code == 403
    assert got.json()["type"].endswith(":forbidden")


def test_an_operator_records_proofing_only_on_the_own_channel_and_as_a_named_operator(
    client: TestClient, settings: Settings
) -> None:
    bank = make_key(settings, "bank-op", Role.OPERATOR_BANK)
    centre_proofing = enrolment("0101901234", channel="service_centre", operators=["bank-op"])
    assert client.post("/identities", json=centre_proofing, headers=bank).status_code == 403
    someone_else = enrolment("0101901234", operators=["other-op"])
    refused = client.post("/identities", json=someone_else, headers=bank)
    assert refused.status_code == 403
    assert "operator_ids" in refused.json()["detail"]
    accepted = client.post("/identities", json=enrolment("0101901234"), headers=bank)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["proofing"][0]["operator_ids"] == ["bank-op"]


def test_operators_suspend_but_only_supervisors_close(
    client: TestClient, settings: Settings
) -> None:
    bank = make_key(settings, "bank-op", Role.OPERATOR_BANK)
    identity = client.post("/identities", json=enrolment("0101901234"), headers=bank).json()["id"]
    assert client.post(f"/identities/{identity}/suspend", headers=bank).status_code == 200
    assert client.post(f"/identities/{identity}/close", headers=bank).status_code == 403
    assert client.post(f"/identities/{identity}/close").status_code == 200  # supervisor


@BOTH_DATABASES
def test_actions_and_views_are_audited_with_the_caller(
    client: TestClient, settings: Settings
) -> None:
    bank = make_key(settings, "bank-op", Role.OPERATOR_BANK)
    identity = client.post("/identities", json=enrolment("0101901234"), headers=bank).json()["id"]
    assert client.get(f"/identities/{identity}", headers=bank).status_code == 200
    with client.app.state.sessions() as session:  # type: ignore[attr-defined]
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    by_event = {entry.event: entry for entry in entries}
    assert by_event["identity.viewed"].actor == "operator_bank:bank-op"
    assert by_event["identity.viewed"].subject == identity
    assert any(e.actor == "operator_bank:bank-op" and e.event != "identity.viewed" for e in entries)


def test_a_provider_begins_and_completes_only_its_own_logins(
    client: TestClient, settings: Settings
) -> None:
    shop = make_key(settings, "https://shop.example", Role.PROVIDER)
    mismatch = client.post("/authentications", json={"provider": TEST_PROVIDER}, headers=shop)
    assert mismatch.status_code == 403
    begun = client.post("/authentications", json={"min_level": "low"}, headers=shop)
    assert begun.status_code == 201, begun.text
    transaction = begun.json()["id"]
    # Another provider (the default client) cannot complete, or even see, the shop's login.
    other = client.post(f"/authentications/{transaction}/complete")
    assert other.status_code == 404
    own = client.post(f"/authentications/{transaction}/complete", headers=shop)
    assert own.status_code == 403  # the shop's own login: not yet identified -> step up
    assert own.json()["type"].endswith(":step-up-required")
