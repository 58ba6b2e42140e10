"""``akkreditiv audit``: verify the hash chain of the audit log and show its latest entries."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated

import typer

from akkreditiv.cli.common import database_session

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# Exit codes: 0 intact, 1 the log could not be read, 2 bad usage (typer), 3 the chain is broken.
EXIT_BROKEN = 3

audit_app = typer.Typer(
    help="Check the hash-chained audit log and show its latest entries.", no_args_is_help=True
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="The database to read (default: AKKREDITIV_DATABASE_URL or the embedded SQLite file).",
        show_default=False,
    ),
]


@audit_app.command("verify")
def verify(
    database_url: DatabaseUrl = None,
    anchor: Annotated[
        str | None,
        typer.Option(
            help="A checkpoint SEQ:HASH kept outside the database; catches entries cut off the "
            "end or rewritten after it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Verify every entry of the audit log: exit 0 when intact, 3 when tampered with."""
    from server.services.audit import verify_database
    from server.services.errors import AuditChainBroken

    checkpoint = _parse_anchor(anchor) if anchor is not None else None
    with _session(database_url) as session:
        try:
            count = verify_database(session, anchor=checkpoint)
        except AuditChainBroken as exc:
            typer.echo(f"audit log broken at entry {exc.seq}: {exc.reason}")
            raise typer.Exit(EXIT_BROKEN) from exc
    typer.echo(f"audit log intact: {count} entries")


@audit_app.command("tail")
def tail(
    database_url: DatabaseUrl = None,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=1, help="How many of the latest entries to show.")
    ] = 20,
) -> None:
    """Show the latest entries, oldest first: seq, time, event, actor, subject and details."""
    from server.services.audit import AuditLog, format_at

    with _session(database_url) as session:
        entries = AuditLog(session).tail(lines)
    if not entries:
        typer.echo("the audit log is empty", err=True)
    for entry in entries:
        details = json.dumps(entry.details, sort_keys=True, ensure_ascii=False)
        typer.echo(
            f"{entry.seq}  {format_at(entry.at)}  {entry.event}  actor={entry.actor}"
            f"  subject={entry.subject}  {details}"
        )


def _parse_anchor(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise typer.BadParameter("expected SEQ:HASH (a number and 64 lowercase hex digits)")
    return int(seq), digest


def _session(database_url: str | None) -> AbstractContextManager[Session]:
    """A read-only session on the configured database; errors become one line and exit 1."""
    from server.settings import Settings

    settings = Settings() if database_url is None else Settings(database_url=database_url)
    return database_session(settings, "could not read the audit log")
