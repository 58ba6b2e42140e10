"""``akkreditiv audit``: verify the hash chains of the audit log against the service's signed
checkpoints, and show its latest entries."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from akkreditiv.cli.common import database_session, fail

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from server.services.audit_chain import Anchor, AnchorMismatch
    from server.services.audit_checkpoints import Checkpoint
    from server.settings import Settings

# Exit codes: 0 intact, 1 the log or the checkpoint key could not be read, 2 bad usage (typer),
# 3 the chain is broken or a checkpoint does not verify.
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
            help="A checkpoint CHAIN:SEQ:HASH (SEQ:HASH: of chain 0) kept outside the database; "
            "catches entries cut off that chain's end or rewritten after it.",
            show_default=False,
        ),
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            help="The folder of the service's signed checkpoints, or a copy of its checkpoint "
            "file (default: AKKREDITIV_AUDIT_CHECKPOINT_DIR).",
            show_default=False,
        ),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="The checkpoints' public key, a JWK (as GET /audit/checkpoints answers it) or "
            "PEM file (default: the public half of AKKREDITIV_AUDIT_CHECKPOINT_KEY_FILE).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Verify every entry of every chain of the audit log against the service's signed
    checkpoints: exit 0 when intact, 3 when tampered with (an entry, a checkpoint, or the end of
    a chain cut off)."""
    from server.services.audit import verify_database
    from server.services.audit_chain import AnchorMismatch
    from server.services.errors import AuditChainBroken

    settings = _settings(database_url)
    explicit = [_parse_anchor(anchor)] if anchor is not None else []
    signed = _signed_checkpoints(settings, checkpoints, public_key)
    anchors = [*explicit, *(head for checkpoint in signed for head in checkpoint.heads)]
    with database_session(settings, "could not read the audit log") as session:
        try:
            count = verify_database(session, anchors=anchors)
        except AuditChainBroken as exc:
            typer.echo(f"audit log broken at entry {exc.seq} of chain {exc.chain}: {exc.reason}")
            if isinstance(exc, AnchorMismatch):
                typer.echo(_contradiction(exc, signed))
            raise typer.Exit(EXIT_BROKEN) from exc
    if signed:
        latest = max(signed, key=lambda checkpoint: checkpoint.entries)
        chains = len(latest.heads)
        typer.echo(
            f"audit log intact: {count} entries, matching {len(signed)} signed checkpoints "
            f"(the latest: {latest.entries} entries in {chains} chain{'s' * (chains != 1)} "
            f"at {latest.at})"
        )
    else:
        typer.echo(f"audit log intact: {count} entries")


@audit_app.command("tail")
def tail(
    database_url: DatabaseUrl = None,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=1, help="How many of the latest entries to show.")
    ] = 20,
) -> None:
    """Show the latest entries of all chains, oldest first: chain:seq, time, event, actor,
    subject and details."""
    from server.services.audit import AuditLog, format_at

    with _session(database_url) as session:
        entries = AuditLog(session).tail(lines)
    if not entries:
        typer.echo("the audit log is empty", err=True)
    for entry in entries:
        details = json.dumps(entry.details, sort_keys=True, ensure_ascii=False)
        typer.echo(
            f"{entry.chain}:{entry.seq}  {format_at(entry.at)}  {entry.event}  actor={entry.actor}"
            f"  subject={entry.subject}  {details}"
        )


def _parse_anchor(text: str) -> Anchor:
    from server.domain.model import AUDIT_CHAINS
    from server.services.audit_chain import Anchor

    *numbers, digest = text.split(":")
    if len(numbers) == 1:
        numbers.insert(0, "0")
    if (
        len(numbers) != 2
        or not all(number.isdigit() for number in numbers)
        or int(numbers[0]) >= AUDIT_CHAINS
        or len(digest) != 64
        or digest.strip("0123456789abcdef")
    ):
        raise typer.BadParameter(
            "expected CHAIN:SEQ:HASH or SEQ:HASH (numbers, a chain below "
            f"{AUDIT_CHAINS}, and 64 lowercase hex digits)"
        )
    return Anchor(int(numbers[0]), int(numbers[1]), digest)


def _settings(database_url: str | None) -> Settings:
    from server.settings import Settings

    return Settings() if database_url is None else Settings(database_url=database_url)


def _session(database_url: str | None) -> AbstractContextManager[Session]:
    """A read-only session on the configured database; errors become one line and exit 1."""
    return database_session(_settings(database_url), "could not read the audit log")


def _signed_checkpoints(
    settings: Settings, source: Path | None, public_key: Path | None
) -> list[Checkpoint]:
    """Every checkpoint in the file, each verified with the service's public key. A line that
    does not verify is tampering (exit 3); a key that cannot be read, exit 1. With no file a
    warning says what cannot be detected."""
    from server.services.audit_checkpoints import (
        CHECKPOINT_FILE,
        CheckpointFile,
        CheckpointKey,
        CheckpointRejected,
        public_keys,
        verify_all,
    )
    from server.services.errors import KeyMaterialRejected

    source = settings.audit_checkpoint_dir if source is None else source
    folder = source if source.is_dir() or not source.exists() else None
    file = CheckpointFile(folder) if folder is not None else None
    try:
        tokens = file.tokens() if file is not None else source.read_text("ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"could not read the checkpoints in {source}: {exc}") from exc
    path = file.path if file is not None else source
    if not any(token.strip() for token in tokens):
        typer.echo(
            f"warning: no signed checkpoint in {path}: entries cut off the end, or a history "
            "rewritten with its head moved, cannot be detected",
            err=True,
        )
        return []
    try:
        if public_key is not None:
            keys = public_keys(public_key)
        else:
            own = CheckpointKey.from_file(settings.audit_checkpoint_key_file)
            keys = {own.key_id: own.public_key()}
    except (OSError, KeyMaterialRejected) as exc:
        raise fail(f"could not read the checkpoints' public key: {exc}") from exc
    try:
        return verify_all(tokens, keys)
    except CheckpointRejected as exc:
        name = CHECKPOINT_FILE if file is not None else source.name
        typer.echo(f"audit checkpoints tampered with: {name} line {exc.line}: {exc.reason}")
        raise typer.Exit(EXIT_BROKEN) from exc


def _contradiction(broken: AnchorMismatch, signed: list[Checkpoint]) -> str:
    """Which checkpoint the database contradicts, and what that means."""
    from server.services.audit_chain import Anchor
    from server.services.errors import Breakage

    seq = broken.anchor[0]
    named = Anchor(broken.chain, *broken.anchor)
    when = next((f" of {c.at}" for c in signed if named in c.heads), " given")
    entry = f"entry {seq} of chain {broken.chain}"
    if broken.reason is Breakage.REMOVED:
        return (
            f"the signed checkpoint{when} names {entry}, which the database no longer holds: "
            "the end of that chain was cut off"
        )
    return (
        f"the signed checkpoint{when} of {entry} does not match the database: that chain was "
        "rewritten up to it"
    )
