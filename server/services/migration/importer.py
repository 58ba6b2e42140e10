"""The importer of the legacy export (JSON lines or CSV): streams the file, checks every row,
writes in batches, and can be killed at any moment and run again.

- Streaming: the file is read line by line from a byte offset; memory holds one batch and
  a few chunks of parsed lines, whatever the file's size. Worker processes may parse while
  this process writes; only this one writes and commits.
- Resumable: ``import_runs`` keeps, per file, the byte offset and line count up to which rows
  are committed (``line_number`` is the number of the last committed line, so the next line
  to read is ``line_number + 1``), updated in the same transaction as the batch. Running the
  importer again on the same file (same fingerprint: size, first and last MiB) continues there.
- Idempotent: a row whose digest equals the stored one is counted as unchanged and not
  written; a changed row is applied only while the user has not migrated.
- Bad rows become ``import_rejects`` (line number and what is wrong, never a value) and the
  import goes on. A batch ends early when a row repeats a user id, person number or serial of
  a row already in it, so a repeat is judged against the committed first occurrence, the same
  however the file is cut into batches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine

from server.domain.errors import DomainError
from server.services.migration.import_batch import ImportBatchWriter
from server.services.migration.import_lines import (
    BOM,
    MAX_LINE_BYTES,
    PARSE_CHUNK,
    chunked,
    prepare_chunk,
    prepare_in_pool,
    read_lines,
)
from server.services.migration.import_prepare import PreparedRow, RowPreparer
from server.services.migration.import_rows import HeaderRejected, csv_columns
from server.services.secretbox import SecretBox
from server.storage.import_run_repositories import ImportRunRepository
from server.storage.legacy_import_repositories import StoreConflict
from server.storage.tables import utcnow

FORMATS = ("jsonl", "csv")
DEFAULT_BATCH = 20_000
# Below this much left to read, worker processes cost more to start than they save.
POOL_MIN_BYTES = 8 * 1024 * 1024
FINGERPRINT_SPAN = 1024 * 1024
FIRST_REJECTS = 10
_ATTEMPTS = 5


class ImportFailed(DomainError):
    """The import cannot start or go on (the file, its header, or another importer on the same
    run); what was committed stays, and a later run resumes from there."""

    code = "legacy-import-failed"
    default_detail = "the legacy import could not go on"


@dataclass(frozen=True)
class ImportProgress:
    run_id: uuid.UUID
    byte_offset: int
    size: int
    line_number: int


@dataclass
class ImportSummary:
    run_id: uuid.UUID
    source: str
    format: str
    resumed: bool
    first_line: int  # the first line this invocation read
    lines: int = 0  # lines read by this invocation
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    batches: int = 0
    seconds: float = 0.0
    # Where the time went: reading, checking and sealing rows (or, with parsing workers,
    # waiting for them), and the database's work.
    timings: dict[str, float] = field(default_factory=lambda: {"parse": 0.0, "database": 0.0})
    # The whole run's totals (over every invocation that worked on it) and its first rejects.
    run_imported: int = 0
    run_unchanged: int = 0
    run_rejected: int = 0
    first_rejects: list[tuple[int, str]] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Batch:
    """Lines read since the last commit: ``start_offset`` is the run's committed offset,
    ``end_offset``/``end_line`` are just after the last line read."""

    start_offset: int
    end_offset: int
    end_line: int
    rows: list[tuple[int, PreparedRow]] = field(default_factory=list)
    rejects: list[tuple[int, str]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.rows) + len(self.rejects)


def default_workers() -> int:
    """Parsing processes beside the writing one: one per CPU, at most three (the writer is the
    bound beyond that), none on one CPU. The writer mostly waits for the database (SQLite's
    B-trees, PostgreSQL's COPY in its own process), so on 2 CPUs two workers beat one: 1
    million rows in 1 min 46 s instead of 1 min 59 s on SQLite, 1 min 34 s instead of 2 min
    14 s on PostgreSQL (benchmarks/bench_legacy_import.py, README "Benchmarks")."""
    cpus = os.cpu_count() or 1
    return min(cpus, 3) if cpus > 1 else 0


def format_for(path: Path, fmt: str | None) -> str:
    """The format asked for, or the one the file name says (``.csv``; anything else is JSON
    lines)."""
    if fmt is None:
        return "csv" if path.suffix.lower() == ".csv" else "jsonl"
    if fmt not in FORMATS:
        raise ImportFailed(f"unknown format {fmt!r}", detail="the format is jsonl or csv")
    return fmt


def fingerprint(path: Path) -> str:
    """SHA-256 over the size and the first and last MiB: cheap for gigabytes, and a file that
    was replaced, cut or appended to under the same name does not match."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(size.to_bytes(8, "big"))
        digest.update(handle.read(FINGERPRINT_SPAN))
        if size > FINGERPRINT_SPAN:
            handle.seek(max(FINGERPRINT_SPAN, size - FINGERPRINT_SPAN))
            digest.update(handle.read(FINGERPRINT_SPAN))
    return digest.hexdigest()


class LegacyImporter:
    """Imports export files into the legacy tables of one database."""

    def __init__(
        self,
        engine: Engine,
        box: SecretBox,
        *,
        batch_size: int = DEFAULT_BATCH,
        workers: int = 0,
        pool_min_bytes: int = POOL_MIN_BYTES,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        """``workers``: processes that parse and check rows while this one writes (0: parse
        here), used when at least ``pool_min_bytes`` are left to read."""
        if batch_size < 1 or workers < 0:
            raise ValueError("batch_size must be 1 or more, workers 0 or more")
        self._engine = engine
        self._box = box
        self._batch_size = batch_size
        self._workers = workers
        self._pool_min_bytes = pool_min_bytes
        self._clock = clock

    def run(
        self,
        path: Path,
        fmt: str | None = None,
        *,
        on_progress: Callable[[ImportProgress], None] | None = None,
    ) -> ImportSummary:
        """Import ``path``, resuming an unfinished run of the same file; ``on_progress`` is
        called after every committed batch."""
        started = time.perf_counter()
        fmt = format_for(path, fmt)
        try:
            file_print = fingerprint(path)
            size = path.stat().st_size
        except OSError as exc:
            raise ImportFailed(f"cannot read {path}: {exc.strerror}") from None
        summary, offset, line = self._open_run(path, fmt, file_print)
        try:
            self._read(path, fmt, size, summary, offset, line, on_progress)
        except BaseException:
            self._mark_failed(summary.run_id)
            raise
        summary.seconds = time.perf_counter() - started
        self._totals(summary)
        return summary

    # --- the run record ------------------------------------------------------------------------

    def _open_run(self, path: Path, fmt: str, file_print: str) -> tuple[ImportSummary, int, int]:
        """The unfinished run of this file (made running again), or a new one."""
        now = self._clock()
        with self._engine.begin() as connection:
            runs = ImportRunRepository(connection)
            found = runs.unfinished(file_print)
            if found is not None:
                run_id, run_format, offset, line = found
                if run_format != fmt:
                    raise ImportFailed(
                        f"an unfinished import of this file reads it as {run_format}, not {fmt}"
                    )
                runs.reopen(run_id, now)
                resumed = True
            else:
                run_id, offset, line, resumed = uuid.uuid4(), 0, 0, False
                runs.create(run_id, str(path.resolve())[-500:], file_print, fmt, now)
        summary = ImportSummary(
            run_id=run_id,
            source=str(path),
            format=fmt,
            resumed=resumed,
            first_line=line + 1,
        )
        return summary, offset, line

    def _mark_failed(self, run_id: uuid.UUID) -> None:
        """Best effort: a run that stopped on an error says so (a kill leaves it running; both
        resume alike)."""
        try:
            with self._engine.begin() as connection:
                ImportRunRepository(connection).mark_failed(run_id, self._clock())
        except Exception:  # noqa: S110 - the original error is the one to report
            pass

    def _totals(self, summary: ImportSummary) -> None:
        with self._engine.connect() as connection:
            runs = ImportRunRepository(connection)
            totals = runs.totals(summary.run_id)
            summary.run_imported, summary.run_unchanged, summary.run_rejected = totals
            summary.first_rejects = runs.first_rejects(summary.run_id, FIRST_REJECTS)

    # --- reading -------------------------------------------------------------------------------

    def _read(
        self,
        path: Path,
        fmt: str,
        size: int,
        summary: ImportSummary,
        offset: int,
        line: int,
        on_progress: Callable[[ImportProgress], None] | None,
    ) -> None:
        committed = offset
        with path.open("rb") as handle:
            columns: tuple[str, ...] = ()
            if fmt == "csv":
                header = handle.readline(MAX_LINE_BYTES + 1)
                try:
                    text = header.removeprefix(BOM).rstrip(b"\r\n").decode("utf-8")
                    columns = csv_columns(text)
                except UnicodeDecodeError:
                    raise ImportFailed(f"{path}: the CSV header is not UTF-8") from None
                except HeaderRejected as exc:
                    raise ImportFailed(f"{path}: {exc}") from None
                if offset == 0:
                    offset, line = len(header), 1
            if offset > size:
                raise ImportFailed(f"{path} is shorter than where its import stopped")
            if offset > 0:
                handle.seek(offset - 1)
                if handle.read(1) != b"\n":
                    raise ImportFailed(f"{path} changed since its import stopped: start again")
            handle.seek(offset)
            lines = read_lines(handle, offset, line)
            workers = self._workers if size - offset >= self._pool_min_bytes else 0
            preparer = RowPreparer(self._box, copy=self._engine.dialect.name == "postgresql")
            parsed = (
                prepare_in_pool(
                    lines,
                    fmt,
                    columns,
                    preparer,
                    workers=workers,
                    # A batch's worth and two chunks a worker: they go on while this waits.
                    ahead=-(-self._batch_size // PARSE_CHUNK) + 2 * workers,
                )
                if workers
                else (prepare_chunk(preparer, fmt, columns, chunk) for chunk in chunked(lines))
            )
            batch = _Batch(committed, offset, line)
            started = time.perf_counter()
            for chunk in parsed:
                summary.timings["parse"] += time.perf_counter() - started
                for number, end, result in chunk:
                    if not isinstance(result, str):
                        keys = result[0]
                        if not batch.keys.isdisjoint(keys):
                            self._commit(batch, summary, size, on_progress)
                            batch = _Batch(batch.end_offset, batch.end_offset, batch.end_line)
                        batch.keys.update(keys)
                        batch.rows.append((number, result))
                    else:
                        batch.rejects.append((number, result))
                    batch.end_offset, batch.end_line = end, number
                    if len(batch) >= self._batch_size:
                        self._commit(batch, summary, size, on_progress)
                        batch = _Batch(end, end, number)
                del chunk  # before the next is made: one chunk in memory, not two
                started = time.perf_counter()
            if len(batch):
                self._commit(batch, summary, size, on_progress)
                batch = _Batch(batch.end_offset, batch.end_offset, batch.end_line)
        self._complete(summary, batch)

    # --- writing -------------------------------------------------------------------------------

    def _commit(
        self,
        batch: _Batch,
        summary: ImportSummary,
        size: int,
        on_progress: Callable[[ImportProgress], None] | None,
    ) -> None:
        """Write the batch and move the run's offset past it, in one transaction; after a
        conflict, again, with every owner looked up (see ``ImportBatchWriter.write``)."""
        started = time.perf_counter()
        for attempt in range(_ATTEMPTS):
            now = self._clock()
            try:
                with self._engine.begin() as connection:
                    self._claim(connection, summary.run_id, batch.start_offset, now)
                    writer = ImportBatchWriter(connection)
                    outcome = writer.write(batch.rows, now, careful=attempt > 0)
                    rejects = sorted(batch.rejects + outcome.rejects)
                    runs = ImportRunRepository(connection)
                    if rejects:
                        runs.add_rejects(summary.run_id, rejects)
                    runs.advance(
                        summary.run_id,
                        batch.end_offset,
                        batch.end_line,
                        imported=outcome.inserted + outcome.updated,
                        unchanged=outcome.unchanged,
                        rejected=len(rejects),
                        now=now,
                    )
                break
            except StoreConflict:
                continue
        else:
            raise ImportFailed("rows kept changing under the import (another writer?)")
        summary.lines += len(batch)
        summary.inserted += outcome.inserted
        summary.updated += outcome.updated
        summary.unchanged += outcome.unchanged
        summary.rejected += len(rejects)
        summary.batches += 1
        summary.timings["database"] += time.perf_counter() - started
        if on_progress is not None:
            on_progress(ImportProgress(summary.run_id, batch.end_offset, size, batch.end_line))

    @staticmethod
    def _claim(connection: Connection, run_id: uuid.UUID, offset: int, now: dt.datetime) -> None:
        """Write the run's row first: on SQLite that takes the write lock before any read, so
        the look-ups and the writes see one state; on PostgreSQL it locks the row, so two
        importers of one file queue. Either way, a run moved on by another importer since
        ``offset`` stops this one."""
        if not ImportRunRepository(connection).claim(run_id, offset, now):
            raise ImportFailed("another importer is working on this file at the same time")

    def _complete(self, summary: ImportSummary, batch: _Batch) -> None:
        """Mark the run completed at the end of the file (after a CSV header alone, too)."""
        now = self._clock()
        with self._engine.begin() as connection:
            self._claim(connection, summary.run_id, batch.start_offset, now)
            ImportRunRepository(connection).complete(
                summary.run_id, batch.end_offset, batch.end_line, now
            )
