"""The lines of a legacy export file, read from a byte offset and parsed into checked, sealed
rows ready to write, here or by worker processes while this one writes."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import BinaryIO

from server.services.migration.import_prepare import PreparedRow, RowPreparer
from server.services.migration.import_rows import (
    LegacyRow,
    RowRejected,
    parse_csv_line,
    parse_json_line,
)
from server.services.migration.worker_pool import worker_pool

MAX_LINE_BYTES = 64 * 1024
PARSE_CHUNK = 1000  # lines handed to a parsing worker at a time
MAX_REASON = 500
BOM = b"\xef\xbb\xbf"

# A line: (number, offset just after it, the bytes to parse or None, why it is refused).
Line = tuple[int, int, bytes | None, str | None]
# A prepared line: (number, offset just after it, the row or why it is refused).
Prepared = tuple[int, int, PreparedRow | str]


def read_lines(handle: BinaryIO, offset: int, line: int) -> Iterator[Line]:
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


def chunked(lines: Iterator[Line]) -> Iterator[list[Line]]:
    chunk: list[Line] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) == PARSE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _parse_line(raw: bytes, fmt: str, columns: tuple[str, ...], *, first: bool) -> LegacyRow:
    if first:
        raw = raw.removeprefix(BOM)
    try:
        text = raw.rstrip(b"\r\n").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RowRejected(f"not UTF-8 (byte {exc.start + 1})") from None
    if not text.strip():
        raise RowRejected("empty line")
    return parse_csv_line(text, columns) if fmt == "csv" else parse_json_line(text)


def prepare_chunk(
    preparer: RowPreparer, fmt: str, columns: tuple[str, ...], chunk: list[Line]
) -> list[Prepared]:
    """Parse a chunk of lines (in this process or a worker): each becomes a prepared row (checked,
    sealed, encoded) or the reason it is refused."""
    prepared: list[Prepared] = []
    for line, end, raw, reason in chunk:
        if raw is None:
            prepared.append((line, end, reason or "unreadable"))
            continue
        try:
            row = _parse_line(raw, fmt, columns, first=line == 1)
        except RowRejected as exc:
            prepared.append((line, end, exc.reason[:MAX_REASON]))
        else:
            prepared.append((line, end, preparer.prepare(row)))
    return prepared


# The preparer of a worker process, set as it starts (it holds the key: forked, not pickled).
_worker_preparer: list[RowPreparer] = []


def _set_worker_preparer(preparer: RowPreparer) -> None:
    _worker_preparer[:] = [preparer]


def _prepare_in_worker(fmt: str, columns: tuple[str, ...], chunk: list[Line]) -> list[Prepared]:
    return prepare_chunk(_worker_preparer[0], fmt, columns, chunk)


def prepare_in_pool(
    lines: Iterator[Line],
    fmt: str,
    columns: tuple[str, ...],
    preparer: RowPreparer,
    *,
    workers: int,
    ahead: int,
) -> Iterator[list[Prepared]]:
    """Chunks prepared by ``workers`` processes while this one writes, in file order, with at
    most ``ahead`` chunks in flight (memory stays bounded; enough for a batch, so the workers
    go on while this process waits for the database). Parsing, checking and sealing are most
    of the CPU an import takes; the database writes stay in this process, which alone decides
    what is committed, so resuming works as without the pool."""
    with worker_pool(workers, _set_worker_preparer, (preparer,)) as pool:
        pending: deque[Future[list[Prepared]]] = deque()
        for chunk in chunked(lines):
            pending.append(pool.submit(_prepare_in_worker, fmt, columns, chunk))
            while len(pending) >= max(ahead, 1) or (pending and pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _skip_rest_of_line(handle: BinaryIO) -> int:
    """Read past the end of an overlong line, a bounded piece at a time; the bytes skipped."""
    skipped = 0
    while True:
        piece = handle.readline(MAX_LINE_BYTES)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped
