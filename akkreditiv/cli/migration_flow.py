"""``akkreditiv migration flow``: the guided migration flows from the operators' side; ``sweep``
marks the flows left idle as abandoned (dropped, for the weekly report), once each."""

from __future__ import annotations

import datetime as dt
import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from akkreditiv.cli.common import fail

flow_app = typer.Typer(
    help="The guided migration flows: mark the ones left idle as abandoned.",
    no_args_is_help=True,
)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


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
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="The database (default: AKKREDITIV_DATABASE_URL or the embedded SQLite file).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Mark every flow untouched for the abandonment period as abandoned, with one 'dropped'
    event at the step it stopped at. Run it daily; running it again marks nobody twice. An
    abandoned flow resumes where it stopped when the person starts again."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from server.services.audit import AuditLog
    from server.services.migration.flow_sweep import sweep_abandoned
    from server.settings import Settings
    from server.storage.engine import create_engine_from_settings, session_factory
    from server.storage.errors import StorageError, UnsupportedDatabase

    settings = Settings() if database_url is None else Settings(database_url=database_url)
    idle = dt.timedelta(days=days or settings.migration_abandon_days)
    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        raise fail("the database URL is not a database URL") from exc
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise fail(f"no database at {url.database}")
    try:
        engine = create_engine_from_settings(settings)
    except UnsupportedDatabase as exc:
        raise fail(f"unsupported database URL: {exc.reason}") from exc
    actor = _actor()
    try:
        with session_factory(engine)() as session, session.begin():
            log = AuditLog(session)

            def audit(event: str, details: dict[str, Any]) -> None:
                log.append(event, actor=actor, subject="-", details=details)

            now = dt.datetime.now(dt.UTC)
            dropped = sweep_abandoned(session, idle=idle, now=now, audit=audit)
    except (SQLAlchemyError, StorageError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise fail(f"database error: {reason}") from exc
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"dropped": dropped, "idle_days": idle.days, "at": now.isoformat()}))
    else:
        typer.echo(f"{dropped} flow(s) idle for {idle.days} days or more marked abandoned")
