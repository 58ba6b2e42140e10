"""``akkreditiv providers``: service providers registered as OpenID Connect relying parties,
one agreement each (``server/services/oidc/registry.py``); every change is audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from akkreditiv.cli.common import DatabaseUrl, cli_actor, database_session, fail

if TYPE_CHECKING:
    from server.settings import Settings
    from server.storage.oidc_tables import OidcClient

providers_app = typer.Typer(
    help="Service providers as OpenID Connect relying parties: register, list, remove.",
    no_args_is_help=True,
)


def _settings(database_url: str | None) -> Settings:
    from server.settings import Settings

    return Settings() if database_url is None else Settings(database_url=database_url)


def _read_jwks(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read the JWK set {path}: {exc}") from None


@providers_app.command("add")
def add(
    client_id: Annotated[
        str, typer.Option(help="The provider id: its API keys' name, its tokens' audience.")
    ],
    name: Annotated[str, typer.Option(help='The name people are shown, e.g. "Borger.dk".')],
    redirect_uri: Annotated[
        list[str], typer.Option(help="Where codes are sent (repeat for several).")
    ],
    jwks: Annotated[
        Path | None, typer.Option(help="A file with the provider's public JWK set.")
    ] = None,
    jwks_uri: Annotated[
        str | None, typer.Option(help="Where the provider publishes its public JWK set.")
    ] = None,
    dev_secret: Annotated[
        bool,
        typer.Option(
            "--dev-secret",
            help="Development only: client_secret_basic with a secret printed once.",
        ),
    ] = False,
    post_logout_redirect_uri: Annotated[
        list[str] | None, typer.Option(help="Where the browser may go after a logout.")
    ] = None,
    backchannel_logout_uri: Annotated[
        str | None, typer.Option(help="Where logout tokens are sent.")
    ] = None,
    entitled: Annotated[
        str, typer.Option(help="What it may receive beyond the pseudonym: cpr, name.")
    ] = "",
    sso_group: Annotated[
        str | None, typer.Option(help="Its single sign-on group (none: no SSO).")
    ] = None,
    id_token_alg: Annotated[
        str, typer.Option(help="How its ID tokens are signed: ES256 or RS256.")
    ] = "ES256",  # noqa: S107 - an algorithm's name
    database_url: DatabaseUrl = None,
) -> None:
    """Register a service provider. It authenticates at the token endpoint with a key of
    its JWK set (``private_key_jwt``), or for development with a secret."""
    from server.services.oidc.registry import Registration
    from server.storage.engine import migrate

    registration = Registration(
        client_id=client_id,
        name=name,
        redirect_uris=redirect_uri,
        jwks=None if jwks is None else _read_jwks(jwks),
        jwks_uri=jwks_uri,
        dev_secret=dev_secret,
        post_logout_redirect_uris=post_logout_redirect_uri or [],
        backchannel_logout_uri=backchannel_logout_uri,
        entitled=[part.strip() for part in entitled.split(",") if part.strip()],
        sso_group=sso_group,
        id_token_alg=id_token_alg,
    )
    settings = _settings(database_url)
    with database_session(settings, "database error") as session:
        migrate(session.get_bind())  # type: ignore[arg-type]
        registry = _registry(session)
        client, secret = _checked(lambda: registry.add(registration))
        session.commit()
    typer.echo(f"provider {client.client_id} registered ({client.name})")
    typer.echo(f"discovery: {settings.issuer.rstrip('/')}/.well-known/openid-configuration")
    if secret is not None:
        typer.echo(f"client secret (shown once): {secret}")


@providers_app.command("list")
def list_providers(
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """The registered providers, with the API keys of the same provider id."""
    from server.services.access import ApiKeys, Role

    settings = _settings(database_url)
    keys = ApiKeys(settings.api_keys_file).entries()
    with database_session(settings, "database error") as session:
        rows = [
            {
                **_view(client),
                "api_keys": [
                    key.key_id
                    for key in keys
                    if key.name == client.client_id and Role.PROVIDER in key.roles
                ],
            }
            for client in _registry(session).all()
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(
            f"{row['client_id']}  {row['name']}  {row['authentication']}  "
            f"{' '.join(row['redirect_uris'])}  entitled={','.join(row['entitled']) or '-'}  "
            f"sso={row['sso_group'] or '-'}  api_keys={','.join(row['api_keys']) or '-'}"
        )


@providers_app.command("remove")
def remove(
    client_id: Annotated[str, typer.Argument(help="The provider's client id.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Withdraw a registration: the provider's logins by OpenID Connect stop at once."""
    settings = _settings(database_url)
    with database_session(settings, "database error") as session:
        registry = _registry(session)
        _checked(lambda: registry.remove(client_id))
        session.commit()
    typer.echo(f"provider {client_id} removed")


def _registry(session: Any) -> Any:
    from server.services.audit import AuditLog
    from server.services.oidc.registry import ProviderRegistry

    log, actor = AuditLog(session), cli_actor()

    def record(event: str, details: dict[str, Any]) -> None:
        log.append(event, actor=actor, subject=str(details.get("provider", "-")), details=details)

    return ProviderRegistry(session, record)


def _checked(work: Any) -> Any:
    from server.domain.errors import DomainError

    try:
        return work()
    except DomainError as exc:
        raise fail(exc.detail) from None


def _view(client: OidcClient) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "authentication": (
            "client_secret_basic" if client.secret_digest is not None else "private_key_jwt"
        ),
        "redirect_uris": list(client.redirect_uris),
        "jwks_uri": client.jwks_uri,
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "entitled": list(client.entitled),
        "sso_group": client.sso_group,
        "id_token_alg": client.id_token_alg,
    }
