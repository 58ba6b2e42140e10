"""Provider onboarding: ``akkreditiv providers add/list/remove`` record one agreement per
service provider, refuse what cannot be used safely, and audit every change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from akkreditiv.cli import app
from server.services.access import ApiKeys, Role
from server.services.audit import AuditLog
from server.services.oidc.registry import (
    ProviderExists,
    ProviderRegistry,
    ProviderRejected,
    Registration,
    secret_matches,
)
from server.storage.engine import create_engine_for, migrate
from tests.unit.server.oidc.keys import ec_key

pytestmark = pytest.mark.databases("sqlite", "postgresql")

SP = "https://sp.example"


def registration(**changes: object) -> Registration:
    values: dict[str, object] = {
        "client_id": SP,
        "name": "Borger.dk",
        "redirect_uris": ["https://sp.example/cb"],
        "jwks": {"keys": [ec_key().as_dict(private=False)]},
    }
    values.update(changes)
    return Registration(**values)  # type: ignore[arg-type]


def test_a_provider_is_registered_and_audited(session: Session) -> None:
    events: list[tuple[str, dict[str, object]]] = []
    registry = ProviderRegistry(session, lambda event, details: events.append((event, details)))
    client, secret = registry.add(registration(entitled=["name", "cpr"], sso_group="health"))
    assert secret is None
    assert registry.find(SP) is client
    assert client.entitled == ["cpr", "name"]
    assert events[0][0] == "provider.registered"
    assert events[0][1]["authentication"] == "private_key_jwt"
    registry.remove(SP)
    assert registry.find(SP) is None
    assert events[-1] == ("provider.removed", {"provider": SP})


def test_a_development_client_gets_a_secret_kept_only_as_a_digest(session: Session) -> None:
    client, secret = ProviderRegistry(session).add(registration(jwks=None, dev_secret=True))
    assert secret is not None
    assert client.secret_digest is not None
    assert secret not in client.secret_digest
    assert secret_matches(client, secret)
    assert not secret_matches(client, secret + "x")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"redirect_uris": ["http://sp.example/cb"]}, "https"),
        ({"redirect_uris": ["https://sp.example/cb#frag"]}, "absolute"),
        ({"redirect_uris": []}, "redirect"),
        ({"jwks": {"keys": [ec_key().as_dict(private=True)]}}, "private"),
        ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "EC and RSA"),
        ({"jwks": None}, "exactly one"),
        ({"jwks_uri": "https://sp.example/jwks"}, "exactly one"),
        ({"entitled": ["cpr", "passport"]}, "entitlements"),
        ({"client_id": "akkreditiv-self-service"}, "client id"),
        ({"sso_group": "Health Domain"}, "SSO group"),
        ({"id_token_alg": "HS256"}, "ES256 or RS256"),
    ],
)
def test_unsafe_registrations_are_refused(
    session: Session, changes: dict[str, object], reason: str
) -> None:
    with pytest.raises(ProviderRejected) as refused:
        ProviderRegistry(session).add(registration(**changes))
    assert reason in refused.value.detail


def test_a_provider_is_registered_once(session: Session) -> None:
    registry = ProviderRegistry(session)
    registry.add(registration())
    with pytest.raises(ProviderExists):
        registry.add(registration())


@pytest.mark.databases("sqlite")
def test_the_commands_register_list_and_remove(database_url: str, tmp_path: Path) -> None:
    migrate(create_engine_for(database_url))
    keys_file = tmp_path / "keys.json"
    entry, _ = ApiKeys(keys_file).add(SP, [Role.PROVIDER])
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [ec_key().as_dict(private=False)]}))
    env = {"AKKREDITIV_DATABASE_URL": database_url, "AKKREDITIV_API_KEYS_FILE": str(keys_file)}
    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            "providers",
            "add",
            "--client-id",
            SP,
            "--name",
            "Borger.dk",
            "--redirect-uri",
            "https://sp.example/cb",
            "--jwks",
            str(jwks),
            "--entitled",
            "cpr,name",
        ],
        env=env,
    )
    assert added.exit_code == 0, added.output
    assert "/.well-known/openid-configuration" in added.output
    listed = runner.invoke(app, ["providers", "list", "--json"], env=env)
    rows = json.loads(listed.output)
    assert [(row["client_id"], row["api_keys"], row["entitled"]) for row in rows] == [
        (SP, [entry.key_id], ["cpr", "name"])
    ]
    refused = runner.invoke(
        app,
        [
            "providers",
            "add",
            "--client-id",
            "other",
            "--name",
            "O",
            "--redirect-uri",
            "http://evil.example/cb",
            "--dev-secret",
        ],
        env=env,
    )
    assert refused.exit_code == 1
    removed = runner.invoke(app, ["providers", "remove", SP], env=env)
    assert removed.exit_code == 0, removed.output
    assert json.loads(runner.invoke(app, ["providers", "list", "--json"], env=env).output) == []
    again = runner.invoke(app, ["providers", "remove", SP], env=env)
    assert again.exit_code == 1
    engine = create_engine_for(database_url)
    with Session(engine) as session:
        events = [entry.event for entry in AuditLog(session).tail(10)]
    assert events == ["provider.registered", "provider.removed"]
