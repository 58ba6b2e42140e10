"""A synthetic legacy population: the legacy export's rows (JSON lines or CSV) for any number of
people, streamed to a file, the same bytes for the same seed, for tests and benchmarks.

Everything a test needs to act as one of these people can be derived: the password from the
seed and the user id (``synthetic_password``), the key card's codes from its secret in the row
(``formats.code_for``). Ages follow a population pyramid of adults (18 to 100 in
``REFERENCE_YEAR``), person numbers are valid by the century rules and unique, a bank is drawn
from the banks below (some people have none), and a card may be nearly used up.

Memory does not grow with the count: a row's person number is a function of its position
(``_BirthSlots``), unique by construction, never checked against the numbers made before.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import hashlib
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from server.services.migration.formats import CARD_SIZE, SECRET_BYTES, hash_legacy_password
from server.services.migration.import_rows import CSV_COLUMNS
from server.services.migration.worker_pool import worker_pool
from server.services.person_number import century

# Ages are counted from this year, not today, so a seed makes the same file in any year.
REFERENCE_YEAR = 2026
MIN_AGE = 18
MAX_AGE = 100
# PBKDF2 cost of the synthetic hashes. Real exports carry their own (100,000 and more); here the
# cost would dominate generating millions of rows, and the importer keeps whatever a row has.
DEFAULT_ITERATIONS = 1
TOKEN_SHARE = 0.10
# Far below the ~150 million valid person numbers of the birth years covered.
MAX_COUNT = 50_000_000
TOKEN_SEED_BYTES = 20
# Rows per random stream (and per write): fixed, since it decides which stream a row draws from.
CHUNK_ROWS = 5000

# Share of customers (per cent) by bank; the rest have no bank agreement.
BANKS: tuple[tuple[str, int], ...] = (
    ("Danske Bank", 24),
    ("Nordea", 15),
    ("Jyske Bank", 12),
    ("Nykredit Bank", 7),
    ("Sydbank", 7),
    ("Spar Nord", 6),
    ("Arbejdernes Landsbank", 5),
    ("Ringkjøbing Landbobank", 3),
    ("Lån & Spar Bank", 3),
    ("Sparekassen Kronjylland", 3),
)
NO_BANK_SHARE = 15

_FEMALE = (
    "Anne", "Kirsten", "Mette", "Hanne", "Anna", "Helle", "Susanne", "Lene", "Maria", "Marianne",
    "Lone", "Camilla", "Pia", "Louise", "Inge", "Charlotte", "Bente", "Tina", "Gitte", "Ida",
    "Emma", "Sofie", "Karen", "Birgit", "Signe", "Julie", "Freja", "Astrid", "Ellen", "Grethe",
)  # fmt: skip
_MALE = (
    "Peter", "Jens", "Lars", "Michael", "Henrik", "Søren", "Thomas", "Jan", "Niels", "Christian",
    "Martin", "Jørgen", "Hans", "Anders", "Morten", "Jesper", "Ole", "Per", "Erik", "Rasmus",
    "Mads", "Frederik", "Kasper", "Mikkel", "Poul", "Bent", "Kim", "Torben", "Jakob", "Bjørn",
)  # fmt: skip
# Middle names: family names anyone may carry, and given names women often have as one.
_MIDDLE_NEUTRAL = (
    "Juul", "Kjær", "Holm", "Lund", "Bach", "Dahl", "Skov", "Vestergaard", "Østergaard",
    "Brøndum", "Aagaard", "Lykke", "Krogh",
)  # fmt: skip
_MIDDLE = (*_MIDDLE_NEUTRAL, "Marie", "Louise", "Elisabeth", "Kristine", "Sofie")
# The commonest Danish surnames, weighted roughly by how many carry them.
_SURNAMES: tuple[tuple[str, int], ...] = (
    ("Nielsen", 240), ("Jensen", 240), ("Hansen", 200), ("Andersen", 170), ("Pedersen", 160),
    ("Christensen", 110), ("Larsen", 110), ("Sørensen", 100), ("Rasmussen", 85),
    ("Jørgensen", 80), ("Petersen", 70), ("Madsen", 60), ("Kristensen", 60), ("Olsen", 50),
    ("Thomsen", 45), ("Christiansen", 40), ("Poulsen", 35), ("Johansen", 33), ("Møller", 32),
    ("Mortensen", 32), ("Knudsen", 25), ("Jakobsen", 25), ("Mikkelsen", 22), ("Olesen", 21),
    ("Frederiksen", 21), ("Laursen", 20), ("Henriksen", 19), ("Lund", 19), ("Schmidt", 17),
    ("Holm", 16), ("Kristiansen", 15), ("Clausen", 15), ("Simonsen", 15), ("Svendsen", 14),
    ("Andreasen", 14), ("Jeppesen", 13), ("Mogensen", 12), ("Vestergaard", 12), ("Nissen", 11),
    ("Lauridsen", 11), ("Kjær", 11), ("Jespersen", 11), ("Bertelsen", 10), ("Ibsen", 4),
    ("Østergaard", 9), ("Dahl", 8), ("Bak", 7), ("Friis", 6), ("Bruun", 5), ("Winther", 5),
)  # fmt: skip


def _cumulative(weights: list[float]) -> list[float]:
    total = 0.0
    out: list[float] = []
    for weight in weights:
        total += weight
        out.append(total)
    return [value / total for value in out]


def _age_weight(age: int) -> float:
    """Relative number of adults of an age: flat to 60, then thinning out towards 100."""
    if age <= 60:
        return 1.0
    if age <= 75:
        return 1.0 - (age - 60) * 0.025  # 0.625 at 75
    if age <= 90:
        return 0.625 - (age - 75) * 0.038  # 0.055 at 90
    return max(0.055 - (age - 90) * 0.005, 0.003)


_AGES = list(range(MIN_AGE, MAX_AGE + 1))
_AGE_CUMULATIVE = _cumulative([_age_weight(age) for age in _AGES])
_SURNAME_CUMULATIVE = _cumulative([float(weight) for _, weight in _SURNAMES])
_BANK_CHOICES: tuple[str | None, ...] = (*(name for name, _ in BANKS), None)
_BANK_CUMULATIVE = _cumulative([*(float(weight) for _, weight in BANKS), float(NO_BANK_SHARE)])
# How far a card is used, as (weight, ANDed random words, ORed random words): ANDing k words
# leaves 1/2**k of the positions used, ORing k words all but 1/2**k. The last three leave about
# 18, 9 and 5 of 148 codes: a replacement card is due (at 20).
_CARD_USAGE: tuple[tuple[int, int, int], ...] = (
    (14, 0, 0),  # a new card
    (24, 3, 0),
    (20, 2, 0),
    (15, 1, 0),
    (11, 0, 2),
    (8, 0, 3),
    (5, 0, 4),
    (3, 0, 5),
)
_USAGE_CUMULATIVE = _cumulative([float(weight) for weight, _, _ in _CARD_USAGE])
_BITMAP_BYTES = (CARD_SIZE + 7) // 8
# The used positions of each byte of a card's bitmap, as text, for every byte value.
_POSITIONS_TEXT = [
    [" ".join(str(8 * at + bit) for bit in range(8) if value >> bit & 1) for value in range(256)]
    for at in range(_BITMAP_BYTES)
]


class BadRow(StrEnum):
    """The kinds of broken rows ``bad_every`` puts in, in turn."""

    DATE = "date"  # a person number whose day does not exist
    DUPLICATE = "duplicate"  # the person number of the row before, under a new user id
    HASH = "hash"  # a password hash in another scheme
    CARD = "card"  # a card secret one byte short
    COLUMNS = "columns"  # CSV: a column missing; JSON lines: a cut-off object
    UTF8 = "utf8"  # bytes that are not UTF-8 in the name
    EMPTY = "empty"  # an empty line
    TOKEN = "token"  # noqa: S105 - a code token seed that is not hex (a kind, not a secret)


@dataclass(frozen=True)
class GeneratedFile:
    path: Path
    rows: int  # lines of people, good and bad (not the CSV header)
    bad_rows: int
    size: int
    seconds: float


def synthetic_password(seed: int, user_id: str) -> str:
    """The password of the synthetic person ``user_id`` in the population made with ``seed``."""
    key = b"akkreditiv synthetic legacy password " + str(seed).encode("ascii")
    digest = hashlib.blake2b(user_id.encode("utf-8"), key=key[:64], digest_size=9).hexdigest()
    return "Pw-" + digest


def _permuted(index: int, multiplier: int, offset: int) -> int:
    """A 10-digit number unique per index (the multiplier is coprime to 10**10)."""
    return (index * multiplier + offset) % 10**10


@functools.cache
def _slot_table(scale: int) -> tuple[list[int], list[tuple[str, tuple[int, ...], int]], int]:
    """Per day of the covered years: the cumulative slot count at its end and (ddmmyy, valid
    7th digits, ordinal); and the permutation's multiplier. The same for every seed."""
    ends: list[int] = []
    days: list[tuple[str, tuple[int, ...], int]] = []
    total = 0
    for year in range(REFERENCE_YEAR - MAX_AGE, REFERENCE_YEAR - MIN_AGE + 1):
        weight = max(1, round(scale * _age_weight(REFERENCE_YEAR - year)))
        yy = year % 100
        digits = tuple(d for d in range(10) if century(d, yy) + yy == year)
        day = dt.date(year, 1, 1)
        while day.year == year:
            total += weight
            ends.append(total)
            days.append((f"{day:%d%m}{yy:02d}", digits, day.toordinal()))
            day += dt.timedelta(days=1)
    multiplier = round(total * 0.6180339887)  # golden ratio: well spread consecutive rows
    while math.gcd(multiplier, total) != 1:
        multiplier += 1
    return ends, days, multiplier


class _BirthSlots:
    """Birth date and person number of row ``i`` as a function of the seed and ``i`` alone.

    Every day of the covered years gets a number of slots proportional to how many people of
    that age live (``_age_weight``); the slots, ``L`` in all, are visited in the order of an
    affine permutation of ``range(L)``, so consecutive rows spread over all ages. Row ``i``
    takes slot ``perm(i mod L)`` in round ``i // L``; slot ``o`` of ``w`` on its day in round
    ``r`` is that day's serial number ``r * w + o``, which no other row gets. Serial numbers
    map to the 7th digits valid for the birth year (the century rules) through a permutation.
    """

    WEIGHT_SCALE = 100

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._ends, self._days, self._multiplier = _slot_table(self.WEIGHT_SCALE)
        self.slots = self._ends[-1]
        self._offset = (seed * 2_654_435_761) % self.slots
        if (MAX_COUNT // self.slots + 1) * self.WEIGHT_SCALE >= 4000:  # pragma: no cover
            raise RuntimeError("MAX_COUNT is too large: a day would run out of person numbers")

    def person_number(self, index: int) -> str:
        round_, position = divmod(index, self.slots)
        slot = (position * self._multiplier + self._offset) % self.slots
        day = bisect.bisect_right(self._ends, slot)
        start = self._ends[day - 1] if day else 0
        weight = self._ends[day] - start
        ddmmyy, digits, ordinal = self._days[day]
        capacity = len(digits) * 1000
        # 7919 is prime and divides neither 4000 nor 6000: a permutation of the day's serials.
        serial = ((round_ * weight + slot - start) * 7919 + ordinal + self._seed) % capacity
        return f"{ddmmyy}-{digits[serial // 1000]}{serial % 1000:03d}"


class _Population:
    """The people of one seed. Row ``i`` draws from the random stream of its chunk of
    ``CHUNK_ROWS`` rows, so chunks can be made in any order (or in parallel), alike."""

    def __init__(self, seed: int, iterations: int) -> None:
        self.seed = seed
        self.iterations = iterations
        self.births = _BirthSlots(seed)

    def chunk_random(self, chunk: int) -> random.Random:
        # Reproducible on purpose: the synthetic secrets protect nothing.
        return random.Random(f"akkreditiv synthetic population {self.seed} {chunk}")  # noqa: S311

    def person(self, index: int, rng: random.Random) -> dict[str, str | None]:
        """One person as the export's text fields (``card_used``: positions as text)."""
        random_ = rng.random
        female = random_() < 0.5
        first = (_FEMALE if female else _MALE)[int(random_() * 30)]
        middles = _MIDDLE if female else _MIDDLE_NEUTRAL
        middle = middles[int(random_() * len(middles))] + " " if random_() < 0.3 else ""
        surname = _SURNAMES[bisect.bisect_left(_SURNAME_CUMULATIVE, random_())][0]
        bank = _BANK_CHOICES[bisect.bisect_left(_BANK_CUMULATIVE, random_())]
        user_id = f"{_permuted(index, 7_654_321_987, self.seed * 1_000_003):010d}"
        password_hash = hash_legacy_password(
            synthetic_password(self.seed, user_id),
            iterations=self.iterations,
            salt=rng.randbytes(16),
        )
        _, ands, ors = _CARD_USAGE[bisect.bisect_left(_USAGE_CUMULATIVE, random_())]
        bits = 0
        if ands:
            bits = (1 << CARD_SIZE) - 1
            for _ in range(ands):
                bits &= rng.getrandbits(CARD_SIZE)
        for _ in range(ors):
            bits |= rng.getrandbits(CARD_SIZE)
        used = " ".join(
            filter(
                None,
                map(list.__getitem__, _POSITIONS_TEXT, bits.to_bytes(_BITMAP_BYTES, "little")),
            )
        )
        token = random_() < TOKEN_SHARE
        return {
            "user_id": user_id,
            "person_number": self.births.person_number(index),
            "name": f"{first} {middle}{surname}",
            "bank": bank,
            "password_hash": password_hash,
            "card_serial": f"KC{_permuted(index, 3_141_592_653, self.seed * 7):010d}",
            "card_secret": rng.randbytes(SECRET_BYTES).hex(),
            "card_used": used,
            "token_serial": (
                f"TK{_permuted(index, 2_718_281_829, self.seed * 11):010d}" if token else None
            ),
            "token_seed": rng.randbytes(TOKEN_SEED_BYTES).hex() if token else None,
            "token_algorithm": "totp" if token else None,
            "token_digits": "6" if token else None,
        }


def _jsonl(person: dict[str, str | None]) -> str:
    # Written by hand rather than with json.dumps: twice as fast, and every value here is
    # digits, hex, base64 or a name from the lists above, none of which needs escaping.
    bank = f'"{person["bank"]}"' if person["bank"] else "null"
    used = str(person["card_used"]).replace(" ", ",")
    token = (
        f'{{"serial":"{person["token_serial"]}","seed":"{person["token_seed"]}",'
        f'"algorithm":"{person["token_algorithm"]}","digits":{person["token_digits"]}}}'
        if person["token_serial"]
        else "null"
    )
    return (
        f'{{"user_id":"{person["user_id"]}","person_number":"{person["person_number"]}",'
        f'"name":"{person["name"]}","bank":{bank},'
        f'"password_hash":"{person["password_hash"]}",'
        f'"key_card":{{"serial":"{person["card_serial"]}","secret":"{person["card_secret"]}",'
        f'"used":[{used}]}},"code_token":{token}}}\n'
    )


def _csv_field(value: str | None) -> str:
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv(person: dict[str, str | None]) -> str:
    return ",".join(_csv_field(person[column]) for column in CSV_COLUMNS) + "\n"


def _bad_line(kind: BadRow, person: dict[str, str | None], fmt: str, previous: str | None) -> bytes:
    """``person`` broken in the way ``kind`` says, as one line of the file."""
    broken = dict(person)
    if kind is BadRow.EMPTY:
        return b"\n"
    if kind is BadRow.DATE or (kind is BadRow.DUPLICATE and previous is None):
        number = str(person["person_number"])
        broken["person_number"] = "32" + number[2:]
    elif kind is BadRow.DUPLICATE:
        broken["person_number"] = previous
    elif kind is BadRow.HASH:
        broken["password_hash"] = "md5$" + hashlib.md5(b"x", usedforsecurity=False).hexdigest()
    elif kind is BadRow.CARD:
        broken["card_secret"] = str(person["card_secret"])[:-2]
    elif kind is BadRow.TOKEN:
        broken.update(
            {
                "token_serial": f"TK{person['card_serial']}"[:12],
                "token_seed": "zz" * TOKEN_SEED_BYTES,
                "token_algorithm": "totp",
                "token_digits": "6",
            }
        )
    elif kind is BadRow.COLUMNS:
        if fmt == "csv":
            return (",".join(_csv_field(broken[c]) for c in CSV_COLUMNS[:-1]) + "\n").encode()
        return _jsonl(broken)[: len(_jsonl(broken)) // 2].encode() + b"\n"
    elif kind is BadRow.UTF8:
        marker = "\x00NAME\x00"
        broken["name"] = marker
        text = (_csv(broken) if fmt == "csv" else _jsonl(broken)).encode()
        return text.replace(marker.encode(), b"Bj\xf8rn \xff\xfe")  # Latin-1, then no encoding
    return (_csv(broken) if fmt == "csv" else _jsonl(broken)).encode()


def _chunk_lines(
    population: _Population, chunk: int, count: int, fmt: str, bad_every: int | None
) -> list[bytes]:
    """The lines of rows ``chunk * CHUNK_ROWS`` up to ``count`` (exclusive)."""
    rng = population.chunk_random(chunk)
    line = _csv if fmt == "csv" else _jsonl
    kinds = list(BadRow)
    lines: list[bytes] = []
    for index in range(chunk * CHUNK_ROWS, min(count, (chunk + 1) * CHUNK_ROWS)):
        person = population.person(index, rng)
        number = index + 1
        if bad_every is not None and number % bad_every == 0:
            kind = kinds[(number // bad_every - 1) % len(kinds)]
            # The row before a bad row is good unless every row is bad: it owns the number.
            previous = population.births.person_number(index - 1) if bad_every > 1 else None
            lines.append(_bad_line(kind, person, fmt, previous if index else None))
        else:
            lines.append(line(person).encode())
    return lines


def iter_lines(
    count: int,
    *,
    fmt: str = "jsonl",
    seed: int = 0,
    iterations: int = DEFAULT_ITERATIONS,
    bad_every: int | None = None,
) -> Iterator[bytes]:
    """The file's lines, header first for CSV; row ``i`` (from 1) is bad when ``bad_every``
    divides it, taking the kinds of ``BadRow`` in turn. Arguments are checked at the call."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError("format must be jsonl or csv")
    if not 0 <= count <= MAX_COUNT or (bad_every is not None and bad_every < 1) or iterations < 1:
        raise ValueError(f"count must be 0 to {MAX_COUNT:,}; bad_every and iterations 1 or more")
    return _lines(_Population(seed, iterations), count, fmt, bad_every)


def _lines(population: _Population, count: int, fmt: str, bad_every: int | None) -> Iterator[bytes]:
    if fmt == "csv":
        yield (",".join(CSV_COLUMNS) + "\n").encode()
    for chunk in range(-(-count // CHUNK_ROWS)):
        yield from _chunk_lines(population, chunk, count, fmt, bad_every)


_WORKER_POPULATION: dict[tuple[int, int], _Population] = {}


def _chunk_bytes(
    seed: int, iterations: int, chunk: int, count: int, fmt: str, bad_every: int | None
) -> bytes:
    """One chunk's lines, made in a worker process (which keeps its population's tables)."""
    population = _WORKER_POPULATION.get((seed, iterations))
    if population is None:
        _WORKER_POPULATION.clear()
        population = _WORKER_POPULATION[seed, iterations] = _Population(seed, iterations)
    return b"".join(_chunk_lines(population, chunk, count, fmt, bad_every))


def _chunks_in_parallel(
    workers: int, seed: int, iterations: int, count: int, fmt: str, bad_every: int | None
) -> Iterator[bytes]:
    """The chunks in order, made by ``workers`` processes with at most two chunks each in
    flight, so finished chunks never pile up in memory."""
    chunks = range(-(-count // CHUNK_ROWS))
    with worker_pool(workers) as pool:
        pending: deque[Future[bytes]] = deque()
        for chunk in chunks:
            pending.append(
                pool.submit(_chunk_bytes, seed, iterations, chunk, count, fmt, bad_every)
            )
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def generate(
    out: Path,
    *,
    count: int,
    fmt: str = "jsonl",
    seed: int = 0,
    iterations: int = DEFAULT_ITERATIONS,
    bad_every: int | None = None,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> GeneratedFile:
    """Write a population of ``count`` people to ``out``, streamed; the file appears under its
    name only when complete, so an interrupted run never leaves a short file to import.

    Large populations are made by ``workers`` processes (default: one per CPU); the bytes are
    the same as from one process. ``on_progress`` gets the number of rows written so far.
    """
    # Checks the arguments before any file or process is made.
    lines = iter_lines(count, fmt=fmt, seed=seed, iterations=iterations, bad_every=bad_every)
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    temporary = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with temporary.open("wb") as handle:
            if fmt == "csv":
                handle.write(next(lines))
            if workers > 1 and count > CHUNK_ROWS:
                chunks = _chunks_in_parallel(workers, seed, iterations, count, fmt, bad_every)
            else:
                chunks = (b"".join(lines) for lines in batched(lines, CHUNK_ROWS))
            written = 0
            for chunk in chunks:
                handle.write(chunk)
                written = min(written + CHUNK_ROWS, count)
                if on_progress is not None:
                    on_progress(written)
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)
    return GeneratedFile(
        path=out,
        rows=count,
        bad_rows=0 if bad_every is None else count // bad_every,
        size=out.stat().st_size,
        seconds=time.perf_counter() - start,
    )


def batched(items: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
