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

import ctypes
import datetime as dt
import hashlib
import multiprocessing
import os
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import Connection, Engine, Table, insert, select, update

from server.services.errors import DomainError
from server.services.migration.import_rows import (
    CodeTokenRow,
    HeaderRejected,
    KeyCardRow,
    LegacyRow,
    RowRejected,
    csv_columns,
    parse_csv_line,
    parse_json_line,
)
from server.services.migration.import_store import LegacyStore, StoreConflict
from server.services.secretbox import SecretBox
from server.storage.migration_tables import ImportReject, ImportRun, ImportStatus
from server.storage.tables import utcnow

RUNS = cast(Table, ImportRun.__table__)
REJECTS = cast(Table, ImportReject.__table__)
FORMATS = ("jsonl", "csv")
DEFAULT_BATCH = 5000
MAX_LINE_BYTES = 64 * 1024
PARSE_CHUNK = 1000  # lines handed to a parsing worker at a time
# Below this much left to read, worker processes cost more to start than they save.
POOL_MIN_BYTES = 8 * 1024 * 1024
FINGERPRINT_SPAN = 1024 * 1024
MAX_REASON = 500
FIRST_REJECTS = 10
_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_BOM = b"\xef\xbb\xbf"


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
    # Where the time went: reading and checking rows, sealing secrets, database work.
    timings: dict[str, float] = field(
        default_factory=lambda: {"parse": 0.0, "seal": 0.0, "database": 0.0}
    )
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
    rows: list[tuple[int, LegacyRow]] = field(default_factory=list)
    rejects: list[tuple[int, str]] = field(default_factory=list)
    keys: set[tuple[str, str]] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.rows) + len(self.rejects)

    @staticmethod
    def row_keys(row: LegacyRow) -> list[tuple[str, str]]:
        keys = [("user", row.user_id), ("person", row.person_number)]
        if row.key_card is not None:
            keys.append(("card", row.key_card.serial))
        if row.code_token is not None:
            keys.append(("token", row.code_token.serial))
        return keys


def default_workers() -> int:
    """Parsing processes beside the writing one: one per further CPU, at most three (the
    writer is the bound beyond that)."""
    return max(0, min((os.cpu_count() or 1) - 1, 3))


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
            found = connection.execute(
                select(RUNS.c.id, RUNS.c.format, RUNS.c.byte_offset, RUNS.c.line_number)
                .where(
                    RUNS.c.fingerprint == file_print,
                    RUNS.c.status.in_([ImportStatus.RUNNING, ImportStatus.FAILED]),
                )
                .order_by(RUNS.c.started_at.desc())
                .limit(1)
            ).first()
            if found is not None:
                run_id, run_format, offset, line = found
                if run_format != fmt:
                    raise ImportFailed(
                        f"an unfinished import of this file reads it as {run_format}, not {fmt}"
                    )
                connection.execute(
                    update(RUNS)
                    .where(RUNS.c.id == run_id)
                    .values(status=ImportStatus.RUNNING, updated_at=now)
                )
                resumed = True
            else:
                run_id, offset, line, resumed = uuid.uuid4(), 0, 0, False
                connection.execute(
                    insert(RUNS).values(
                        id=run_id,
                        source=str(path.resolve())[-500:],
                        fingerprint=file_print,
                        format=fmt,
                        byte_offset=0,
                        line_number=0,
                        rows_imported=0,
                        rows_unchanged=0,
                        rows_rejected=0,
                        status=ImportStatus.RUNNING,
                        started_at=now,
                        updated_at=now,
                    )
                )
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
                connection.execute(
                    update(RUNS)
                    .where(RUNS.c.id == run_id, RUNS.c.status == ImportStatus.RUNNING)
                    .values(status=ImportStatus.FAILED, updated_at=self._clock())
                )
        except Exception:  # noqa: S110 - the original error is the one to report
            pass

    def _totals(self, summary: ImportSummary) -> None:
        with self._engine.connect() as connection:
            totals = connection.execute(
                select(RUNS.c.rows_imported, RUNS.c.rows_unchanged, RUNS.c.rows_rejected).where(
                    RUNS.c.id == summary.run_id
                )
            ).one()
            summary.run_imported, summary.run_unchanged, summary.run_rejected = totals
            summary.first_rejects = [
                (int(line), str(reason))
                for line, reason in connection.execute(
                    select(REJECTS.c.line_number, REJECTS.c.reason)
                    .where(REJECTS.c.run_id == summary.run_id)
                    .order_by(REJECTS.c.line_number)
                    .limit(FIRST_REJECTS)
                )
            ]

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
                    text = header.removeprefix(_BOM).rstrip(b"\r\n").decode("utf-8")
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
            lines = _lines(handle, offset, line)
            workers = self._workers if size - offset >= self._pool_min_bytes else 0
            parsed = (
                _parse_in_pool(lines, fmt, columns, workers)
                if workers
                else (_parse_chunk(fmt, columns, chunk) for chunk in _chunked(lines))
            )
            batch = _Batch(committed, offset, line)
            started = time.perf_counter()
            for chunk in parsed:
                summary.timings["parse"] += time.perf_counter() - started
                for number, end, result in chunk:
                    if isinstance(result, LegacyRow):
                        keys = _Batch.row_keys(result)
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
        conflict, again, with every owner looked up (see ``LegacyStore.write``)."""
        started = time.perf_counter()
        for attempt in range(_ATTEMPTS):
            now = self._clock()
            try:
                with self._engine.begin() as connection:
                    self._claim(connection, summary.run_id, batch.start_offset, now)
                    store = LegacyStore(connection, self._box)
                    outcome = store.write(batch.rows, now, careful=attempt > 0)
                    rejects = sorted(batch.rejects + outcome.rejects)
                    if rejects:
                        connection.execute(
                            insert(REJECTS),
                            [
                                {"run_id": summary.run_id, "line_number": n, "reason": r}
                                for n, r in rejects
                            ],
                        )
                    connection.execute(
                        update(RUNS)
                        .where(RUNS.c.id == summary.run_id)
                        .values(
                            byte_offset=batch.end_offset,
                            line_number=batch.end_line,
                            rows_imported=RUNS.c.rows_imported + outcome.inserted + outcome.updated,
                            rows_unchanged=RUNS.c.rows_unchanged + outcome.unchanged,
                            rows_rejected=RUNS.c.rows_rejected + len(rejects),
                            updated_at=now,
                        )
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
        summary.timings["seal"] += outcome.seal_seconds
        summary.timings["database"] += time.perf_counter() - started - outcome.seal_seconds
        if on_progress is not None:
            on_progress(ImportProgress(summary.run_id, batch.end_offset, size, batch.end_line))

    @staticmethod
    def _claim(connection: Connection, run_id: uuid.UUID, offset: int, now: dt.datetime) -> None:
        """Write the run's row first: on SQLite that takes the write lock before any read, so
        the look-ups and the writes see one state; on PostgreSQL it locks the row, so two
        importers of one file queue. Either way, a run moved on by another importer since
        ``offset`` stops this one."""
        result = connection.execute(
            update(RUNS)
            .where(
                RUNS.c.id == run_id,
                RUNS.c.byte_offset == offset,
                RUNS.c.status == ImportStatus.RUNNING,
            )
            .values(updated_at=now)
        )
        if result.rowcount != 1:
            raise ImportFailed("another importer is working on this file at the same time")

    def _complete(self, summary: ImportSummary, batch: _Batch) -> None:
        """Mark the run completed at the end of the file (after a CSV header alone, too)."""
        now = self._clock()
        with self._engine.begin() as connection:
            self._claim(connection, summary.run_id, batch.start_offset, now)
            connection.execute(
                update(RUNS)
                .where(RUNS.c.id == summary.run_id)
                .values(
                    byte_offset=batch.end_offset,
                    line_number=batch.end_line,
                    status=ImportStatus.COMPLETED,
                    finished_at=now,
                )
            )


# A line: (number, offset just after it, the bytes to parse or None, why it is refused).
_Line = tuple[int, int, bytes | None, str | None]
# A parsed line: (number, offset just after it, the row or why it is refused).
_Parsed = tuple[int, int, LegacyRow | str]


def _lines(handle: BinaryIO, offset: int, line: int) -> Iterator[_Line]:
    """The file's lines from ``offset`` (line ``line + 1`` on), an overlong one refused here so
    that no more than ``MAX_LINE_BYTES`` of a line is ever held."""
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line += 1
        offset += len(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            offset += _skip_rest_of_line(handle)
            yield line, offset, None, f"line longer than {MAX_LINE_BYTES // 1024} KiB"
        else:
            yield line, offset, raw, None


def _chunked(lines: Iterator[_Line]) -> Iterator[list[_Line]]:
    chunk: list[_Line] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) == PARSE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _parse_line(raw: bytes, fmt: str, columns: tuple[str, ...], *, first: bool) -> LegacyRow:
    if first:
        raw = raw.removeprefix(_BOM)
    try:
        text = raw.rstrip(b"\r\n").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RowRejected(f"not UTF-8 (byte {exc.start + 1})") from None
    if not text.strip():
        raise RowRejected("empty line")
    return parse_csv_line(text, columns) if fmt == "csv" else parse_json_line(text)


def _parse_chunk(fmt: str, columns: tuple[str, ...], chunk: list[_Line]) -> list[_Parsed]:
    """Parse a chunk of lines (in this process or a worker): each becomes a row or a reason."""
    parsed: list[_Parsed] = []
    for line, end, raw, reason in chunk:
        if raw is None:
            parsed.append((line, end, reason or "unreadable"))
            continue
        try:
            parsed.append((line, end, _parse_line(raw, fmt, columns, first=line == 1)))
        except RowRejected as exc:
            parsed.append((line, end, exc.reason[:MAX_REASON]))
    return parsed


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for CPU-bound work beside this process (the importer's parsing, the
    generator's rows).

    Forked: "spawn" and "forkserver" run the main module again in each worker, and
    ``python -m akkreditiv`` as a main module runs the command. The workers compute only;
    they touch no connection, lock or thread of the parent. Each dies with the parent: a
    forked worker holds both ends of its task pipe, so it would otherwise wait for work
    forever after a kill of the parent, holding the parent's output pipes open.
    """
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:  # pragma: no cover - Linux only
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _pack(row: LegacyRow) -> tuple[object, ...]:
    """A row as plain values: pickled ten times faster than the dataclasses."""
    card, token = row.key_card, row.code_token
    return (
        row.user_id,
        row.person_number,
        row.name,
        row.birth_year,
        row.bank,
        row.password_hash,
        None if card is None else (card.serial, card.secret, card.used, card.remaining),
        None if token is None else (token.serial, token.seed, token.algorithm, token.digits),
        row.digest,
    )


def _unpack(values: tuple[Any, ...]) -> LegacyRow:
    user_id, number, name, year, bank, password_hash, card, token, digest = values
    return LegacyRow(
        user_id=user_id,
        person_number=number,
        name=name,
        birth_year=year,
        bank=bank,
        password_hash=password_hash,
        key_card=None if card is None else KeyCardRow(*card),
        code_token=None if token is None else CodeTokenRow(*token),
        digest=digest,
    )


def _parse_packed(
    fmt: str, columns: tuple[str, ...], chunk: list[_Line]
) -> list[tuple[int, int, tuple[object, ...] | str]]:
    """``_parse_chunk`` in a worker, its rows packed for the way back."""
    return [
        (line, end, _pack(result) if isinstance(result, LegacyRow) else result)
        for line, end, result in _parse_chunk(fmt, columns, chunk)
    ]


def _parse_in_pool(
    lines: Iterator[_Line], fmt: str, columns: tuple[str, ...], workers: int
) -> Iterator[list[_Parsed]]:
    """Chunks parsed by ``workers`` processes while this one writes, in file order, with at
    most two chunks per worker in flight (memory stays bounded). Parsing is most of the CPU
    an import takes; the database writes stay in this process, which alone decides what is
    committed, so resuming works as without the pool."""
    with worker_pool(workers) as pool:
        pending: deque[Future[list[tuple[int, int, tuple[object, ...] | str]]]] = deque()
        for chunk in _chunked(lines):
            pending.append(pool.submit(_parse_packed, fmt, columns, chunk))
            while len(pending) >= 2 * workers or (pending and pending[0].done()):
                yield [
                    (line, end, result if isinstance(result, str) else _unpack(result))
                    for line, end, result in pending.popleft().result()
                ]
        while pending:
            yield [
                (line, end, result if isinstance(result, str) else _unpack(result))
                for line, end, result in pending.popleft().result()
            ]


def _skip_rest_of_line(handle: BinaryIO) -> int:
    """Read past the end of an overlong line, a bounded piece at a time; the bytes skipped."""
    skipped = 0
    while True:
        piece = handle.readline(MAX_LINE_BYTES)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped
