"""The synthetic legacy population: deterministic, valid, unique, realistic enough to test and
benchmark the importer and the migration with."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import pytest

from server.services.migration.formats import REPLACEMENT_AT, LegacyPasswordHash, code_for
from server.services.migration.generator import (
    BANKS,
    CHUNK_ROWS,
    MAX_AGE,
    MIN_AGE,
    REFERENCE_YEAR,
    BadRow,
    _BirthSlots,
    generate,
    iter_lines,
    synthetic_password,
)
from server.services.migration.import_rows import (
    LegacyRow,
    RowRejected,
    csv_columns,
    parse_csv_line,
    parse_json_line,
)
from server.services.person_number import PersonNumber


def _rows(count: int, *, seed: int = 1, fmt: str = "jsonl", iterations: int = 1) -> list[LegacyRow]:
    lines = [
        line.decode("utf-8").rstrip("\n")
        for line in iter_lines(count, fmt=fmt, seed=seed, iterations=iterations)
    ]
    if fmt == "csv":
        columns = csv_columns(lines[0])
        return [parse_csv_line(line, columns) for line in lines[1:]]
    return [parse_json_line(line) for line in lines]


def test_same_seed_makes_the_same_bytes_and_another_seed_others() -> None:
    first = b"".join(iter_lines(300, seed=7))
    assert first == b"".join(iter_lines(300, seed=7))
    other = b"".join(iter_lines(300, seed=8))
    assert other != first
    assert {row.user_id for row in _rows(300, seed=7)}.isdisjoint(
        row.user_id for row in _rows(300, seed=8)
    )


def test_processes_write_the_bytes_one_process_writes(tmp_path: Path) -> None:
    count = CHUNK_ROWS + 17  # two chunks, the second short
    one_file, two_file = tmp_path / "one.csv", tmp_path / "two.csv"
    alone = generate(one_file, count=count, fmt="csv", seed=3, bad_every=97, workers=1)
    pooled = generate(two_file, count=count, fmt="csv", seed=3, bad_every=97, workers=2)
    assert alone.rows == pooled.rows == count
    assert alone.bad_rows == count // 97
    one, two = one_file.read_bytes(), two_file.read_bytes()
    assert hashlib.sha256(one).digest() == hashlib.sha256(two).digest()
    assert one.count(b"\n") == count + 1  # the header and one line per row


def test_every_row_is_valid_and_identifiers_are_unique() -> None:
    rows = _rows(4000, seed=11)
    for field in ("user_id", "person_number"):
        assert len({getattr(row, field) for row in rows}) == len(rows)
    cards = [row.key_card.serial for row in rows if row.key_card is not None]
    assert len(cards) == len(rows) == len(set(cards))
    tokens = [row.code_token.serial for row in rows if row.code_token is not None]
    assert len(tokens) == len(set(tokens))
    for row in rows:
        born = PersonNumber.parse(row.person_number).birth_date
        assert born.year == row.birth_year
        assert MIN_AGE <= REFERENCE_YEAR - born.year <= MAX_AGE


def test_population_looks_like_a_population() -> None:
    rows = _rows(6000, seed=5)
    ages = collections.Counter(REFERENCE_YEAR - row.birth_year for row in rows)
    working_age = sum(n for age, n in ages.items() if age <= 60)
    assert working_age > 0.6 * len(rows)
    assert sum(n for age, n in ages.items() if age > 90) < 0.02 * len(rows)
    assert sum(n for age, n in ages.items() if age >= 80) > 0.02 * len(rows)
    banks = collections.Counter(row.bank for row in rows)
    assert set(banks) <= {name for name, _ in BANKS} | {None}
    assert len(banks) == len(BANKS) + 1
    assert 0.08 < banks[None] / len(rows) < 0.25
    tokens = sum(row.code_token is not None for row in rows)
    assert 0.07 < tokens / len(rows) < 0.13
    remaining = [row.key_card.remaining for row in rows if row.key_card is not None]
    assert sum(r == 148 for r in remaining) > 0.05 * len(rows)  # new cards
    assert sum(r <= REPLACEMENT_AT for r in remaining) > 0.05 * len(rows)  # nearly used up
    assert any(set("æøåÆØÅ") & set(row.name) for row in rows)
    assert len({row.name for row in rows}) > 1000


def test_password_and_card_codes_follow_from_the_row() -> None:
    rows = _rows(20, seed=9, iterations=3)
    for row in rows:
        parsed = LegacyPasswordHash.parse(row.password_hash)
        assert parsed.iterations == 3
        assert parsed.matches(synthetic_password(9, row.user_id))
        assert not parsed.matches(synthetic_password(10, row.user_id))
    card = rows[0].key_card
    assert card is not None
    assert len(code_for(card.secret, "0042")) == 6


def test_json_lines_and_csv_hold_the_same_people() -> None:
    assert [row.digest for row in _rows(500, fmt="csv")] == [row.digest for row in _rows(500)]


def _read(raw: bytes, fmt: str, columns: tuple[str, ...]) -> LegacyRow | str:
    """The row of a line, or why it is refused."""
    try:
        text = raw.decode("utf-8").rstrip("\n")
        if not text:
            return "empty line"
        return parse_csv_line(text, columns) if fmt == "csv" else parse_json_line(text)
    except UnicodeDecodeError:
        return "not UTF-8"
    except RowRejected as exc:
        return exc.reason


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_bad_every_breaks_exactly_those_rows_in_every_way(fmt: str) -> None:
    every = 3
    lines = list(iter_lines(every * 2 * len(BadRow), fmt=fmt, seed=2, bad_every=every))
    columns = csv_columns(lines.pop(0).decode()) if fmt == "csv" else ()
    previous: LegacyRow | None = None
    broken: list[str] = []
    for number, raw in enumerate(lines, start=1):
        row = _read(raw, fmt, columns)
        if isinstance(row, str):
            assert number % every == 0, f"row {number}: {row}"
            broken.append(row)
            continue
        if number % every == 0:
            # The one kind that reads as a valid row alone: the number of the row before.
            assert previous is not None
            assert row.person_number == previous.person_number
            assert row.user_id != previous.user_id
            broken.append("duplicate")
        previous = row
    assert len(broken) == 2 * len(BadRow)
    assert len({reason.split(":")[0] for reason in broken}) == len(BadRow)  # each kind


def test_person_numbers_stay_unique_across_rounds_of_slots() -> None:
    births = _BirthSlots(seed=4)
    indexes = range(births.slots - 30_000, births.slots + 30_000)  # the end of round 0 and 1
    numbers = [births.person_number(index) for index in indexes]
    assert len(set(numbers)) == len(numbers)
    assert all(PersonNumber.parse(number) for number in numbers[::97])


def test_arguments_are_checked_before_a_file_is_made(tmp_path: Path) -> None:
    out = tmp_path / "pop.jsonl"
    with pytest.raises(ValueError, match="bad_every"):
        generate(out, count=10, bad_every=0)
    with pytest.raises(ValueError, match="format"):
        generate(out, count=10, fmt="xml")
    assert not list(tmp_path.iterdir())
    seen: list[int] = []
    made = generate(out, count=12, on_progress=seen.append)
    assert seen[-1] == 12
    assert made.size == out.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["pop.jsonl"]
