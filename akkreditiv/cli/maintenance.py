"""``akkreditiv maintenance``: keeping the database to what is needed; ``sweep`` removes what
expired (the service also sweeps on its own, every ``AKKREDITIV_SWEEP_EVERY_S``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from akkreditiv.cli.common import DatabaseUrl, cli_actor, database_session

maintenance_app = typer.Typer(
    help="Keeping the database to what is needed: sweep what expired.",
    no_args_is_help=True,
)


@maintenance_app.command("sweep")
def sweep(
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Remove what expired: logins and ceremonies (security key registrations, smartcard
    enrolments) AKKREDITIV_SWEEP_GRACE_S (a day) after their time ran out, browser sessions
    that ended, throttles that drained and console sign-in limits whose window passed. The
    audit log, identities, credentials and migration flows are never touched. Running it
    again removes nothing more."""
    from sqlalchemy.orm import sessionmaker

    from server.settings import Settings
    from server.wiring import sweep_for

    settings = Settings() if database_url is None else Settings(database_url=database_url)
    with database_session(settings, "database error") as session:
        # A batch per transaction: the sweep opens its own on the same engine.
        sessions = sessionmaker(bind=session.get_bind(), expire_on_commit=False)
        swept = sweep_for(settings, sessions, cli_actor()).run()
    if as_json:
        typer.echo(json.dumps(swept.as_dict()))
        return
    for what, count in swept.as_dict().items():
        typer.echo(f"{what.replace('_', ' ')}: {count}")
