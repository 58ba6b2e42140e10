"""The lines of a legacy export file, read from a byte offset and parsed into checked rows,
here or by worker processes while this one writes."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, BinaryIO

from server.services.migration.import_rows import (
    CodeTokenRow,
    KeyCardRow,
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
# A parsed line: (number, offset just after it, the row or why it is refused).
Parsed = tuple[int, int, LegacyRow | str]


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


def parse_chunk(fmt: str, columns: tuple[str, ...], chunk: list[Line]) -> list[Parsed]:
    """Parse a chunk of lines (in this process or a worker): each becomes a row or a reason."""
    parsed: list[Parsed] = []
    for line, end, raw, reason in chunk:
        if raw is None:
            parsed.append((line, end, reason or "unreadable"))
            continue
        try:
            parsed.append((line, end, _parse_line(raw, fmt, columns, first=line == 1)))
        except RowRejected as exc:
            parsed.append((line, end, exc.reason[:MAX_REASON]))
    return parsed


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
    fmt: str, columns: tuple[str, ...], chunk: list[Line]
) -> list[tuple[int, int, tuple[object, ...] | str]]:
    """``parse_chunk`` in a worker, its rows packed for the way back."""
    return [
        (line, end, _pack(result) if isinstance(result, LegacyRow) else result)
        for line, end, result in parse_chunk(fmt, columns, chunk)
    ]


def parse_in_pool(
    lines: Iterator[Line], fmt: str, columns: tuple[str, ...], workers: int
) -> Iterator[list[Parsed]]:
    """Chunks parsed by ``workers`` processes while this one writes, in file order, with at
    most two chunks per worker in flight (memory stays bounded). Parsing is most of the CPU
    an import takes; the database writes stay in this process, which alone decides what is
    committed, so resuming works as without the pool."""
    with worker_pool(workers) as pool:
        pending: deque[Future[list[tuple[int, int, tuple[object, ...] | str]]]] = deque()
        for chunk in chunked(lines):
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
