"""One row of the legacy export, parsed and checked: from a JSON line or a CSV line to a
``LegacyRow``, or a ``RowRejected`` that says what is wrong without repeating the value.

A row's ``digest`` is SHA-256 over its canonical form (normalised fields, secrets in lowercase
hex, the used positions as a bitmap), so the same person reads alike from either format and a
re-import can tell an unchanged row from a changed one.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import pydantic_core

from server.services.migration.formats import (
    BITMAP_BYTES,
    CARD_SIZE,
    SECRET_BYTES,
    LegacyFormatError,
    LegacyPasswordHash,
)
from server.services.person_number import century

# Lengths the tables hold (legacy_users, legacy_key_cards, legacy_code_tokens).
MAX_NAME = 200
MAX_BANK = 64
MAX_PASSWORD_HASH = 255
TOKEN_SEED_BYTES = (16, 64)
TOKEN_ALGORITHMS = ("totp", "hotp")
TOKEN_DIGITS = (6, 8)

CSV_COLUMNS = (
    "user_id",
    "person_number",
    "name",
    "bank",
    "password_hash",
    "card_serial",
    "card_secret",
    "card_used",
    "token_serial",
    "token_seed",
    "token_algorithm",
    "token_digits",
)
_JSON_FIELDS = frozenset(("user_id", "person_number", "name", "bank", "password_hash"))
_JSON_OPTIONAL = frozenset(("bank", "key_card", "code_token"))
_CARD_FIELDS = frozenset(("serial", "secret", "used"))
_TOKEN_FIELDS = frozenset(("serial", "seed", "algorithm", "digits"))

_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_CARD_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")
_TOKEN_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_PASSWORD_HASH = re.compile(r"[a-z0-9_]+\$[0-9]{1,9}\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+")
_INT = frozenset((int,))
_POSITIONS = re.compile(r"[0-9]{1,3}(?: [0-9]{1,3})*")


class RowRejected(ValueError):
    """A row that cannot be imported; ``reason`` names the field and the problem, never the
    value (values may be secrets or personal data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HeaderRejected(ValueError):
    """A CSV file whose first line is not the export's header: nothing of it is imported."""


# Named tuples, not dataclasses: millions are made, and a frozen dataclass takes several times
# as long to build.
class KeyCardRow(NamedTuple):
    serial: str
    secret: bytes
    used: bytes  # bitmap of used positions, ``formats`` layout
    remaining: int


class CodeTokenRow(NamedTuple):
    serial: str
    seed: bytes
    algorithm: str
    digits: int


class LegacyRow(NamedTuple):
    user_id: str
    person_number: str  # ddmmyy-ssss
    name: str
    birth_year: int
    bank: str | None
    password_hash: str
    key_card: KeyCardRow | None
    code_token: CodeTokenRow | None
    digest: str


# --- fields ------------------------------------------------------------------------------------


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise RowRejected(f"{field}: expected text")
    return value


def _user_id(value: object) -> str:
    text = _text(value, "user_id")
    if not _USER_ID.fullmatch(text):
        raise RowRejected("user_id: expected 1-64 letters, digits or . _ @ - (ASCII)")
    return text


_PERSON_NUMBER = re.compile(r"([0-9]{6})-?([0-9])([0-9]{3})")


def _birth_year(date_digits: str, century_digit: str) -> int | str:
    """The birth year of ``ddmmyy`` with that 7th digit, or why there is none: the rules of
    ``PersonNumber`` (the century from the 7th digit, a date that exists), without building
    one per row."""
    day, month, yy = int(date_digits[:2]), int(date_digits[2:4]), int(date_digits[4:])
    year = century(int(century_digit), yy) + yy
    if not 1 <= month <= 12:
        return "the month of the person number does not exist"
    try:
        dt.date(year, month, day)
    except ValueError:
        return "the day of the person number does not exist in that month"
    return year


def _person_number(value: object) -> tuple[str, int]:
    """The number as ``ddmmyy-ssss`` and its birth year (``PersonNumber``'s rules)."""
    match = _PERSON_NUMBER.fullmatch(_text(value, "person_number").strip())
    if match is None:
        raise RowRejected("person_number: a person number is written ddmmyy-ssss")
    year = _birth_year(match[1], match[2])
    if isinstance(year, str):
        raise RowRejected(f"person_number: {year}")
    return f"{match[1]}-{match[2]}{match[3]}", year


def _printable(value: object, field: str, limit: int) -> str:
    text = unicodedata.normalize("NFC", _text(value, field)).strip()
    if not text:
        raise RowRejected(f"{field}: empty")
    if len(text) > limit:
        raise RowRejected(f"{field}: longer than {limit} characters")
    # Control, format, surrogate and private-use characters; PostgreSQL refuses NUL outright.
    if not text.isprintable():
        raise RowRejected(f"{field}: contains control or unassigned characters")
    return text


def _name(value: object) -> str:
    text = _printable(value, "name", MAX_NAME)
    if not any(map(str.isalpha, text)):
        raise RowRejected("name: contains no letters")
    return text


def _bank(value: object) -> str | None:
    if value is None or value == "":
        return None
    return _printable(value, "bank", MAX_BANK)


def _password_hash(value: object) -> str:
    text = _text(value, "password_hash")
    # The format's own parser accepts what int() and b64decode accept (other scripts' digits,
    # underscores); the stored text must be plain ASCII in the legacy scheme's exact shape.
    if len(text) > MAX_PASSWORD_HASH or not _PASSWORD_HASH.fullmatch(text):
        raise RowRejected("password_hash: expected pbkdf2_sha256$iterations$salt$hash")
    try:
        LegacyPasswordHash.parse(text)
    except LegacyFormatError as exc:
        raise RowRejected(str(exc)) from None
    return text


def _secret(value: object, field: str, sizes: tuple[int, int]) -> bytes:
    text = _text(value, field)
    low, high = sizes
    if not _HEX.fullmatch(text) or not low <= len(text) // 2 <= high:
        size = f"{low} bytes" if low == high else f"{low} to {high} bytes"
        raise RowRejected(f"{field}: expected {size} in hex")
    return bytes.fromhex(text)


_FLAG_DIGITS = bytes.maketrans(b"\x00\x01", b"01")


def _used_bitmap(positions: Sequence[int]) -> tuple[bytes, int]:
    """The ``formats`` bitmap (bit ``p % 8`` of byte ``p // 8``) of the used positions.

    Up to 148 positions on each of millions of rows: one flag byte per position, turned into
    the bitmap by C-level translate and int(), measured three times faster than shifting. A
    repeat shows as fewer flags than positions (no set is built for the common case).
    """
    if positions and (min(positions) < 0 or max(positions) >= CARD_SIZE):
        if len(set(positions)) != len(positions):
            raise RowRejected("key_card.used: a position given twice")
        raise RowRejected(f"key_card.used: a position outside 0-{CARD_SIZE - 1}")
    flags = bytearray(CARD_SIZE)
    for position in positions:
        flags[position] = 1
    used = flags.count(1)
    if used != len(positions):
        raise RowRejected("key_card.used: a position given twice")
    bits = int(flags.translate(_FLAG_DIGITS)[::-1], 2)
    return bits.to_bytes(BITMAP_BYTES, "little"), CARD_SIZE - used


def _key_card(serial: object, secret: object, positions: Sequence[int]) -> KeyCardRow:
    serial_text = _text(serial, "key_card.serial")
    if not _CARD_SERIAL.fullmatch(serial_text):
        raise RowRejected("key_card.serial: expected 1-32 letters, digits or - (ASCII)")
    card_secret = _secret(secret, "key_card.secret", (SECRET_BYTES, SECRET_BYTES))
    used, remaining = _used_bitmap(positions)
    return KeyCardRow(serial_text, card_secret, used, remaining)


def _code_token(serial: object, seed: object, algorithm: object, digits: object) -> CodeTokenRow:
    serial_text = _text(serial, "code_token.serial")
    if not _TOKEN_SERIAL.fullmatch(serial_text):
        raise RowRejected("code_token.serial: expected 1-64 letters, digits or - (ASCII)")
    token_seed = _secret(seed, "code_token.seed", TOKEN_SEED_BYTES)
    if algorithm not in TOKEN_ALGORITHMS:
        raise RowRejected("code_token.algorithm: expected totp or hotp")
    if type(digits) is not int or digits not in TOKEN_DIGITS:
        raise RowRejected("code_token.digits: expected 6 or 8")
    return CodeTokenRow(serial_text, token_seed, str(algorithm), digits)


def build_row(
    fields: Mapping[str, object], key_card: KeyCardRow | None, code_token: CodeTokenRow | None
) -> LegacyRow:
    """The checked row from its user fields and parsed authenticators."""
    user_id = _user_id(fields.get("user_id"))
    person_number, birth_year = _person_number(fields.get("person_number"))
    name = _name(fields.get("name"))
    bank = _bank(fields.get("bank"))
    password_hash = _password_hash(fields.get("password_hash"))
    if key_card is None and code_token is None:
        raise RowRejected("key_card: a user needs a key card or a code token")
    # No field can hold a control character, so the separator keeps the fields apart.
    canonical = (
        f"legacy-row/1\x1f{user_id}\x1f{person_number}\x1f{name}\x1f{bank or ''}\x1f{password_hash}"
    )
    if key_card is not None:
        canonical += f"\x1f{key_card.serial}\x1f{key_card.secret.hex()}\x1f{key_card.used.hex()}"
    else:
        canonical += "\x1f\x1f\x1f"
    if code_token is not None:
        canonical += (
            f"\x1f{code_token.serial}\x1f{code_token.seed.hex()}\x1f{code_token.algorithm}"
            f"\x1f{code_token.digits}"
        )
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return LegacyRow(
        user_id=user_id,
        person_number=person_number,
        name=name,
        birth_year=birth_year,
        bank=bank,
        password_hash=password_hash,
        key_card=key_card,
        code_token=code_token,
        digest=digest,
    )


# --- JSON lines --------------------------------------------------------------------------------


def _object(value: object, field: str, known: frozenset[str]) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise RowRejected(f"{field}: expected an object")
    unknown = value.keys() - known
    if unknown:
        shown = ", ".join(repr(key[:40]) for key in sorted(unknown)[:3])
        raise RowRejected(f"{field}: unknown field {shown}")
    return value


def _json_loads(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowRejected(f"not a JSON object: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError):  # a number too long to convert, nesting too deep
        raise RowRejected("not a JSON object: a number or nesting beyond the limits") from None


def parse_json_line(text: str) -> LegacyRow:
    """A row from one JSON object: ``user_id``, ``person_number``, ``name``, ``bank`` (may be
    null), ``password_hash``, ``key_card`` {``serial``, ``secret`` (hex), ``used`` (positions)}
    and ``code_token`` (null or {``serial``, ``seed`` (hex), ``algorithm``, ``digits``})."""
    try:
        # pydantic-core's parser reads a row in half the time; whatever it refuses (also what
        # json accepts, such as lone surrogates) is read again by json, whose verdict and
        # message stand.
        value = pydantic_core.from_json(text, cache_strings=False)
    except ValueError:
        value = _json_loads(text)
    row = _object(value, "row", _JSON_FIELDS | _JSON_OPTIONAL)
    missing = sorted((_JSON_FIELDS - _JSON_OPTIONAL) - row.keys())
    if missing:
        raise RowRejected(f"{missing[0]}: missing")
    card: KeyCardRow | None = None
    if row.get("key_card") is not None:
        fields = _object(row["key_card"], "key_card", _CARD_FIELDS)
        used = fields.get("used", [])
        # type() rather than isinstance(): JSON true and false are bools, which are ints.
        if not isinstance(used, list) or not set(map(type, used)) <= _INT:
            raise RowRejected("key_card.used: expected a list of positions")
        card = _key_card(fields.get("serial"), fields.get("secret"), used)
    token: CodeTokenRow | None = None
    if row.get("code_token") is not None:
        fields = _object(row["code_token"], "code_token", _TOKEN_FIELDS)
        token = _code_token(
            fields.get("serial"),
            fields.get("seed"),
            fields.get("algorithm", "totp"),
            fields.get("digits", 6),
        )
    return build_row(row, card, token)


# --- CSV ---------------------------------------------------------------------------------------


def csv_columns(header: str) -> tuple[str, ...]:
    """The column order of a CSV export from its header line (the columns of ``CSV_COLUMNS``
    in any order)."""
    try:
        names = next(csv.reader([header], strict=True))
    except (csv.Error, StopIteration):
        raise HeaderRejected("the CSV header is not one line of column names") from None
    names = [name.strip() for name in names]
    if sorted(names) != sorted(CSV_COLUMNS):
        missing = sorted(set(CSV_COLUMNS) - set(names))
        detail = f"missing {', '.join(missing)}" if missing else "unknown or repeated columns"
        raise HeaderRejected(f"the CSV header does not name the export's columns: {detail}")
    return tuple(names)


def parse_csv_line(text: str, columns: Sequence[str] = CSV_COLUMNS) -> LegacyRow:
    """A row from one CSV line; empty ``bank`` means none, empty ``token_serial`` no code token,
    ``card_used`` holds the used positions separated by spaces."""
    try:
        values = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration):
        raise RowRejected("not a CSV line (unbalanced quotes?)") from None
    if len(values) != len(columns):
        raise RowRejected(f"expected {len(columns)} columns, found {len(values)}")
    row = dict(zip(columns, values, strict=True))
    card: KeyCardRow | None = None
    if row["card_serial"] or row["card_secret"] or row["card_used"]:
        used_text = row["card_used"].strip()
        if used_text and not _POSITIONS.fullmatch(used_text):
            raise RowRejected("card_used: expected positions separated by spaces")
        positions = [int(p) for p in used_text.split()]
        card = _key_card(row["card_serial"], row["card_secret"], positions)
    token: CodeTokenRow | None = None
    if row["token_serial"] or row["token_seed"]:
        digits_text = row["token_digits"] or "6"
        token = _code_token(
            row["token_serial"],
            row["token_seed"],
            row["token_algorithm"] or "totp",
            int(digits_text) if digits_text.isascii() and digits_text.isdigit() else None,
        )
    return build_row(row, card, token)
