"""``akkreditiv legacy``: the legacy eID's data: a synthetic population for tests and
benchmarks, and the importer of the legacy export."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from akkreditiv.cli.common import DatabaseUrl, fail

if TYPE_CHECKING:
    from server.services.migration.importer import ImportProgress, ImportSummary

legacy_app = typer.Typer(
    help="The legacy eID: make a synthetic population, import the legacy export.",
    no_args_is_help=True,
)


class FileFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


FormatOption = Annotated[
    FileFormat | None,
    typer.Option(
        "--format", help="jsonl or csv (default: from the file name).", show_default=False
    ),
]


@contextmanager
def _bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[int, str], None]]:
    """A progress bar on standard error (a terminal only); yields a function taking the
    amount done so far and a few words on it."""
    if not enabled or not sys.stderr.isatty():
        yield lambda _done, _detail: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total, detail="")
        yield lambda done, detail: progress.update(task, completed=done, detail=detail)


@legacy_app.command("generate")
def generate(
    count: Annotated[int, typer.Option(min=0, help="How many people.")],
    out: Annotated[Path, typer.Option(help="The file to write (replaced when complete).")],
    file_format: FormatOption = None,
    seed: Annotated[int, typer.Option(help="The same seed makes the same file.")] = 0,
    iterations: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="PBKDF2 iterations of the password hashes (default: 1, so millions of rows "
            "take seconds; real exports carry 100,000 and more).",
            show_default=False,
        ),
    ] = None,
    bad_every: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Make every K-th row bad (a wrong date, a duplicate person number, a bad "
            "hash, card or token, a missing column, bytes that are not UTF-8, an empty line).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Processes (default: one per CPU).", show_default=False),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write a synthetic legacy population for tests and benchmarks.

    Valid unique person numbers, Danish names, ages 18-100, banks, key cards (some nearly used
    up), code tokens for about one in ten. Each person's password follows from the seed and
    the user id (server.services.migration.generator.synthetic_password).
    """
    from server.services.migration.generator import DEFAULT_ITERATIONS
    from server.services.migration.generator import generate as make_population

    fmt = (file_format or _format_of(out)).value
    with _bar(not quiet, count, "generating") as advance:
        try:
            made = make_population(
                out,
                count=count,
                fmt=fmt,
                seed=seed,
                iterations=iterations or DEFAULT_ITERATIONS,
                bad_every=bad_every,
                workers=workers,
                on_progress=lambda rows: advance(rows, f"{rows:,} rows"),
            )
        except OSError as exc:
            raise fail(f"cannot write {out}: {exc.strerror}") from exc
        except ValueError as exc:
            raise fail(str(exc)) from exc
    rate = made.rows / made.seconds if made.seconds > 0 else 0.0
    typer.echo(
        f"wrote {made.rows:,} rows ({made.bad_rows:,} bad) to {out}: "
        f"{made.size / 1e6:,.1f} MB in {made.seconds:.1f} s ({rate:,.0f} rows/s)"
    )


@legacy_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="The export: JSON lines or CSV.")],
    file_format: FormatOption = None,
    database_url: DatabaseUrl = None,
    batch: Annotated[int, typer.Option(min=1, help="Rows per transaction.")] = 20_000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Processes that parse rows while this one writes (default: one per further "
            "CPU, at most 3; 0 parses here). Used for files of 8 MB and more.",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import the legacy export (JSON lines or CSV), resumably.

    Rows are checked, secrets sealed under the key-encryption key, bad rows recorded with
    their line numbers. Run it again after a stop or a kill and it goes on where it stopped;
    run it on an imported file and nothing changes. Exit 0 once the whole file is read.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from server.domain.errors import DomainError
    from server.services.migration.importer import LegacyImporter, default_workers
    from server.services.secretbox import SecretBox
    from server.settings import Settings
    from server.storage.engine import migrate
    from server.storage.errors import StorageError, UnsupportedDatabase
    from server.wiring import engine_for

    if not file.is_file():
        raise fail(f"no file at {file}")
    settings = Settings() if database_url is None else Settings(database_url=database_url)
    try:
        engine = engine_for(settings)
    except UnsupportedDatabase as exc:
        raise fail(f"unsupported database URL: {exc.reason}") from exc  # never the URL itself
    try:
        box = SecretBox.from_file(settings.kek_file, create=settings.create_keys)
        migrate(engine)
        importer = LegacyImporter(
            engine, box, batch_size=batch, workers=default_workers() if workers is None else workers
        )
        size = file.stat().st_size
        with _bar(not quiet, size, "importing") as advance:

            def progress(done: ImportProgress) -> None:
                advance(done.byte_offset, f"line {done.line_number:,}")

            summary = importer.run(
                file, None if file_format is None else file_format.value, on_progress=progress
            )
    except DomainError as exc:
        raise fail(str(exc)) from exc
    except (SQLAlchemyError, StorageError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise fail(f"database error: {reason}; run the import again to resume") from exc
    except KeyboardInterrupt:
        raise fail("interrupted: run the same import again to resume", 130) from None
    finally:
        engine.dispose()
    typer.echo(json.dumps(_summary_json(summary)) if as_json else _summary_text(summary))


def _format_of(path: Path) -> FileFormat:
    return FileFormat.CSV if path.suffix.lower() == ".csv" else FileFormat.JSONL


def _summary_json(summary: ImportSummary) -> dict[str, object]:
    return {
        "run_id": str(summary.run_id),
        "format": summary.format,
        "resumed": summary.resumed,
        "first_line": summary.first_line,
        "lines": summary.lines,
        "inserted": summary.inserted,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "rejected": summary.rejected,
        "seconds": round(summary.seconds, 3),
        "rows_per_second": round(summary.rows_per_second, 1),
        "timings": {name: round(value, 3) for name, value in summary.timings.items()},
        "run": {
            "imported": summary.run_imported,
            "unchanged": summary.run_unchanged,
            "rejected": summary.run_rejected,
        },
        "first_rejects": [
            {"line": line, "reason": reason} for line, reason in summary.first_rejects
        ],
    }


def _summary_text(summary: ImportSummary) -> str:
    lines = [
        f"{'resumed' if summary.resumed else 'imported'} {summary.source} from line "
        f"{summary.first_line:,}: {summary.lines:,} lines in {summary.seconds:.1f} s "
        f"({summary.rows_per_second:,.0f} rows/s)",
        f"  new {summary.inserted:,}, updated {summary.updated:,}, "
        f"unchanged {summary.unchanged:,}, rejected {summary.rejected:,}",
    ]
    if summary.resumed:
        lines.append(
            f"  whole run: imported {summary.run_imported:,}, unchanged "
            f"{summary.run_unchanged:,}, rejected {summary.run_rejected:,}"
        )
    if summary.first_rejects:
        lines.append(f"first rejected lines (all {summary.run_rejected:,} are in import_rejects):")
        lines += [f"  line {line}: {reason}" for line, reason in summary.first_rejects]
    return "\n".join(lines)
