"""The legacy import's rows as the storage writes them: one flat row per user (its values, its
key card's and code token's, secrets sealed) and, for PostgreSQL, the user's rows as ``COPY``
text. Both are made where the row is parsed (a worker process), so that the process that
writes only judges rows, joins bytes and sends them.

A ``COPY`` line of a user or a card ends just before its timestamp (``imported_at``,
``issued_at``: the last column), which is the batch's commit time and known only when the
batch is written: the writer puts ``<timestamp>\\n`` after each. A code token has no timestamp:
its line is whole.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from server.storage.migration_tables import KeyCardStatus, LegacyUserStatus

# The columns of new rows: the values' order, then the constants, the timestamp last.
USER_COLUMNS = (
    "user_id",
    "person_number",
    "name",
    "birth_year",
    "bank",
    "password_hash",
    "row_digest",
    "status",
    "failures",
    "version",
    "imported_at",
)
CARD_COLUMNS: tuple[str, ...] = ("serial", "user_id", "sealed_secret", "used", "remaining")
CARD_COLUMNS += ("status", "version", "issued_at")
TOKEN_COLUMNS: tuple[str, ...] = ("serial", "user_id", "sealed_secret", "algorithm", "digits")
TOKEN_COLUMNS += ("counter", "failures", "version")

_ACTIVE = LegacyUserStatus.ACTIVE.value
# The characters COPY's text format escapes: the escape itself and those that end a field or
# a line (the fields checked on import cannot hold the last three, and rarely a backslash).
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class CardValues(NamedTuple):
    serial: str
    user_id: str
    sealed_secret: bytes
    used: bytes
    remaining: int


class TokenValues(NamedTuple):
    serial: str
    user_id: str
    sealed_secret: bytes
    algorithm: str
    digits: int


# A new user's COPY text: the user's and the card's lines without their timestamps, the token's
# whole (None: no card, no token).
CopyLines = tuple[bytes, bytes | None, bytes | None]


class NewLegacyRow(NamedTuple):
    """One user of the export as the import writes it: the user's values, the key card's and the
    code token's (None where the user has none), secrets sealed, and the COPY text where the
    database takes it (``copy_lines``). Flat, and pickled as a plain tuple is: a worker sends
    millions of them to the writing process, which unpickles them one by one."""

    user_id: str
    person_number: str
    name: str
    birth_year: int
    bank: str | None
    password_hash: str
    row_digest: str
    card_serial: str | None
    card_secret: bytes | None
    card_used: bytes | None
    card_remaining: int | None
    token_serial: str | None
    token_secret: bytes | None
    token_algorithm: str | None
    token_digits: int | None
    copy: CopyLines | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt by tuple.__new__ in C: the default calls the class's Python __new__.
        return (tuple.__new__, (type(self), tuple(self)))

    @property
    def card(self) -> CardValues | None:
        if self.card_serial is None or self.card_secret is None:
            return None
        used, remaining = self.card_used or b"", self.card_remaining or 0
        return CardValues(self.card_serial, self.user_id, self.card_secret, used, remaining)

    @property
    def token(self) -> TokenValues | None:
        if self.token_serial is None or self.token_secret is None:
            return None
        algorithm, digits = self.token_algorithm or "", self.token_digits or 0
        return TokenValues(self.token_serial, self.user_id, self.token_secret, algorithm, digits)


def card_status(remaining: int) -> KeyCardStatus:
    """A card's status from its positions left."""
    return KeyCardStatus.ACTIVE if remaining else KeyCardStatus.EXHAUSTED


def _escaped(*values: str | None) -> list[str]:
    """The values as COPY text fields (None: NULL), escaped where they need it (one look over
    them all: the fields checked on import rarely do)."""
    texts = [value or "" for value in values]
    joined = "".join(texts)
    if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
        texts = [text.translate(_ESCAPES) for text in texts]
    return [text if value is not None else "\\N" for text, value in zip(texts, values, strict=True)]


def copy_lines(row: NewLegacyRow) -> CopyLines:
    """The COPY text of a new, active user (no failures, version 1), its card and token; bytea
    in hex form (``\\\\x...``: its backslash escaped)."""
    user_id, number, name, bank, password_hash, digest, serial, token, algorithm = _escaped(
        row.user_id,
        row.person_number,
        row.name,
        row.bank,
        row.password_hash,
        row.row_digest,
        row.card_serial,
        row.token_serial,
        row.token_algorithm,
    )
    user_line = (
        f"{user_id}\t{number}\t{name}\t{row.birth_year:d}\t{bank}\t{password_hash}\t{digest}\t"
        f"{_ACTIVE}\t0\t1\t"
    )
    card_line = token_line = None
    if row.card_serial is not None and row.card_secret is not None:
        remaining = row.card_remaining or 0
        card_line = (
            f"{serial}\t{user_id}\t\\\\x{row.card_secret.hex()}\t"
            f"\\\\x{(row.card_used or b'').hex()}\t{remaining:d}\t"
            f"{card_status(remaining).value}\t1\t"
        ).encode()
    if row.token_serial is not None and row.token_secret is not None:
        token_line = (
            f"{token}\t{user_id}\t\\\\x{row.token_secret.hex()}\t"
            f"{algorithm}\t{row.token_digits or 0:d}\t0\t0\t1\n"
        ).encode()
    return user_line.encode(), card_line, token_line
