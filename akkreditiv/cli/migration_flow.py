"""``akkreditiv migration flow``: the guided migration flows from the operators' side; ``sweep``
marks the flows left idle as abandoned (dropped, for the weekly report), once each."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import typer

from akkreditiv.cli.common import DatabaseUrl, cli_actor, database_session

flow_app = typer.Typer(
    help="The guided migration flows: mark the ones left idle as abandoned.",
    no_args_is_help=True,
)


@flow_app.command("sweep")
def sweep(
    days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Idle for this many days (default: AKKREDITIV_MIGRATION_ABANDON_DAYS, 14).",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Mark every flow untouched for the abandonment period as abandoned, with one 'dropped'
    event at the step it stopped at. Run it daily; running it again marks nobody twice. An
    abandoned flow resumes where it stopped when the person starts again."""
    from server.services.audit import AuditLog
    from server.services.migration.flow_sweep import sweep_abandoned
    from server.settings import Settings

    settings = Settings() if database_url is None else Settings(database_url=database_url)
    idle = dt.timedelta(days=days or settings.migration_abandon_days)
    actor = cli_actor()
    with database_session(settings, "database error") as session, session.begin():
        log = AuditLog(session)

        def audit(event: str, details: dict[str, Any]) -> None:
            log.append(event, actor=actor, subject="-", details=details)

        now = dt.datetime.now(dt.UTC)
        dropped = sweep_abandoned(session, idle=idle, now=now, audit=audit)
    if as_json:
        typer.echo(json.dumps({"dropped": dropped, "idle_days": idle.days, "at": now.isoformat()}))
    else:
        typer.echo(f"{dropped} flow(s) idle for {idle.days} days or more marked abandoned")
