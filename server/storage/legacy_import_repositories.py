"""The legacy importer's SQL for one batch of rows, over a connection whose transaction the
caller owns: look up what is stored, insert new rows in bulk, update changed ones.

Look-ups send their keys as one parameter (a PostgreSQL array, a JSON array that SQLite reads
with ``json_each``) and get back only the rows that are stored. New rows go in bulk: on
PostgreSQL by ``COPY`` straight into the tables, of the text lines the parsing worker made
(``legacy_import_rows``); on SQLite by one ``executemany`` of ``INSERT ... ON CONFLICT DO
NOTHING`` per table. A row that is stored already (another writer inserted it since the
look-up, or a person number or serial another user has) fails the ``COPY`` with a unique
violation, or makes the SQLite counts disagree: ``StoreConflict``, and the caller rolls the
batch back and runs it again with every owner looked up. Changed rows are updated one by one,
each guarded by the digest or version it was read with.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from psycopg import errors as pg_errors
from sqlalchemy import Connection, delete, insert, select, update

from server.storage.errors import StorageError
from server.storage.legacy_import_rows import (
    CARD_COLUMNS,
    TOKEN_COLUMNS,
    USER_COLUMNS,
    CardValues,
    NewLegacyRow,
    TokenValues,
    card_status,
)
from server.storage.migration_tables import LEGACY_CODE_TOKENS as TOKENS
from server.storage.migration_tables import LEGACY_KEY_CARDS as CARDS
from server.storage.migration_tables import LEGACY_USERS as USERS
from server.storage.migration_tables import (
    KeyCardStatus,
    LegacyUserStatus,
)

__all__ = [
    "CardValues",
    "LegacyImportRepository",
    "NewLegacyRow",
    "StoreConflict",
    "TokenValues",
]

# SQLite's page cache for the import's connection (KiB; the default is 2 MiB). Every row adds
# keys in random order to six indexes; once they outgrow the cache, each insert reads pages
# back. Bounded, so memory still does not grow with the input beyond it.
SQLITE_CACHE_KIB = 64 * 1024
# WAL pages after which the import's commits checkpoint (SQLite's default is 1,000: 4 MiB). An
# index page that several batches change is then copied into the database file once, not once
# a batch: a million rows wrote 5.3 KiB each instead of 7.2. The file stays bounded (64 MiB
# and a batch) and every commit as durable as before.
SQLITE_CHECKPOINT_PAGES = 16 * 1024


class StoreConflict(StorageError):
    """Another writer changed a row between this batch's look-up and its write, or a new row's
    key is stored already."""


class LegacyImportRepository:
    """One batch's statements through one connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._postgres = connection.dialect.name == "postgresql"
        if not self._postgres:
            connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            connection.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {SQLITE_CHECKPOINT_PAGES}")
        # The timestamp as the ORM would bind it (SQLite: naive UTC text in SQLAlchemy's format).
        dialect = connection.dialect
        bind = USERS.c.imported_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._bind_time: Callable[[dt.datetime], Any] = bind or (lambda value: value)

    # --- look-ups ------------------------------------------------------------------------------

    def _lookup(self, table: str, key: str, columns: str, keys: Iterable[str]) -> list[Any]:
        """(key, columns...) of the stored rows among ``keys``, in one statement."""
        wanted = list(set(keys))
        if not wanted:
            return []
        if self._postgres:
            statement = f"SELECT {key}, {columns} FROM {table} WHERE {key} = ANY(%s)"  # noqa: S608 - constants
            parameter: Any = wanted
        else:
            statement = (
                f"SELECT {key}, {columns} FROM {table}"  # noqa: S608 - constants
                f" WHERE {key} IN (SELECT value FROM json_each(?))"
            )
            parameter = json.dumps(wanted)
        return list(self._connection.exec_driver_sql(statement, (parameter,)))

    def users(self, ids: Iterable[str]) -> dict[str, tuple[str, LegacyUserStatus]]:
        """user id -> (row digest, status) of those of ``ids`` that are stored."""
        return {
            user_id: (digest, LegacyUserStatus(status))
            for user_id, digest, status in self._lookup(
                "legacy_users", "user_id", "row_digest, status", ids
            )
        }

    def person_number_owners(self, numbers: Iterable[str]) -> dict[str, str]:
        """person number -> the user id it is stored for."""
        return dict(self._lookup("legacy_users", "person_number", "user_id", numbers))

    def card_owners(self, serials: Iterable[str]) -> dict[str, str]:
        return dict(self._lookup("legacy_key_cards", "serial", "user_id", serials))

    def token_owners(self, serials: Iterable[str]) -> dict[str, str]:
        return dict(self._lookup("legacy_code_tokens", "serial", "user_id", serials))

    # --- new rows, in bulk ---------------------------------------------------------------------

    def insert_new(self, rows: Sequence[NewLegacyRow], now: dt.datetime) -> None:
        """Insert new users (active), their cards and tokens; ``StoreConflict`` if any of them
        was stored already."""
        if self._postgres:
            self._copy_new(rows, now)
        else:
            self._executemany_new(rows, now)

    def _copy_new(self, rows: Sequence[NewLegacyRow], now: dt.datetime) -> None:
        tail = now.astimezone(dt.UTC).isoformat().encode() + b"\n"
        users: list[bytes] = []
        cards: list[bytes] = []
        tokens: list[bytes] = []
        for row in rows:
            if row.copy is None:
                raise ValueError("new rows for PostgreSQL need their COPY text")
            user, card, token = row.copy
            users.append(user)
            if card is not None:
                cards.append(card)
            if token is not None:
                tokens.append(token)
        driver = self._connection.connection.driver_connection
        if driver is None:  # pragma: no cover - a live connection always has one
            raise RuntimeError("no database connection")
        try:
            with driver.cursor() as cursor:
                for table, columns, data in (
                    ("legacy_users", USER_COLUMNS, tail.join(users) + tail if users else b""),
                    ("legacy_key_cards", CARD_COLUMNS, tail.join(cards) + tail if cards else b""),
                    ("legacy_code_tokens", TOKEN_COLUMNS, b"".join(tokens)),
                ):
                    if data:
                        names = ", ".join(columns)
                        statement = f"COPY {table} ({names}) FROM STDIN WITH (ENCODING 'UTF8')"
                        with cursor.copy(statement) as copy:
                            copy.write(data)
        except pg_errors.UniqueViolation as exc:
            raise StoreConflict(f"a new row of {exc.diag.table_name} is stored already") from None

    def _executemany_new(self, rows: Sequence[NewLegacyRow], now: dt.datetime) -> None:
        at = self._bind_time(now)
        user_constants = (LegacyUserStatus.ACTIVE.value, 0, 1, at)
        users = [row[:7] + user_constants for row in rows]
        cards = [
            (
                *(row.card_serial, row.user_id, row.card_secret, row.card_used),
                *(row.card_remaining, card_status(row.card_remaining or 0).value, 1, at),
            )
            for row in rows
            if row.card_serial is not None
        ]
        tokens = [
            (serial, row.user_id, row.token_secret, row.token_algorithm, row.token_digits, 0, 0, 1)
            for row in rows
            if (serial := row.token_serial) is not None
        ]
        for table, columns, values in (
            ("legacy_users", USER_COLUMNS, users),
            ("legacy_key_cards", CARD_COLUMNS, cards),
            ("legacy_code_tokens", TOKEN_COLUMNS, tokens),
        ):
            if not values:
                continue
            marks = ", ".join("?" for _ in columns)
            result = self._connection.exec_driver_sql(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - constants
                " ON CONFLICT DO NOTHING",
                values,
            )
            if result.rowcount != len(values):
                raise StoreConflict(f"{len(values) - result.rowcount} rows of {table} existed")

    # --- changed rows, one by one ----------------------------------------------------------------

    def update_user(self, user: NewLegacyRow, old_digest: str, now: dt.datetime) -> None:
        """Apply changed values to a user still active and stored with ``old_digest``."""
        result = self._connection.execute(
            update(USERS)
            .where(
                USERS.c.user_id == user.user_id,
                USERS.c.row_digest == old_digest,
                USERS.c.status == LegacyUserStatus.ACTIVE,
            )
            .values(
                person_number=user.person_number,
                name=user.name,
                birth_year=user.birth_year,
                bank=user.bank,
                password_hash=user.password_hash,
                row_digest=user.row_digest,
                imported_at=now,
                version=USERS.c.version + 1,
            )
        )
        if result.rowcount != 1:
            raise StoreConflict("a legacy user changed while the import read it")

    def cards_of(self, user_id: str) -> dict[str, tuple[bytes, int]]:
        """serial -> (used-codes bitmap, version) of every key card of the user."""
        return {
            serial: (used, version)
            for serial, used, version in self._connection.execute(
                select(CARDS.c.serial, CARDS.c.used, CARDS.c.version).where(
                    CARDS.c.user_id == user_id
                )
            )
        }

    def update_card(self, card: CardValues, version: int) -> None:
        """Replace a stored card's secret and codes, guarded by the version it was read at."""
        result = self._connection.execute(
            update(CARDS)
            .where(CARDS.c.serial == card.serial, CARDS.c.version == version)
            .values(
                sealed_secret=card.sealed_secret,
                used=card.used,
                remaining=card.remaining,
                status=card_status(card.remaining),
                version=version + 1,
            )
        )
        if result.rowcount != 1:
            raise StoreConflict("a legacy key card changed while the import read it")

    def insert_card(self, card: CardValues, now: dt.datetime) -> None:
        self._connection.execute(
            insert(CARDS).values(
                **card._asdict(), status=card_status(card.remaining), issued_at=now, version=1
            )
        )

    def retire_cards(self, serials: Sequence[str]) -> None:
        """Mark the cards replaced (those the legacy system replaced)."""
        self._connection.execute(
            update(CARDS)
            .where(CARDS.c.serial.in_(serials), CARDS.c.status != KeyCardStatus.REPLACED)
            .values(status=KeyCardStatus.REPLACED, version=CARDS.c.version + 1)
        )

    def delete_tokens(self, user_id: str, *, keep: str | None) -> None:
        """Delete the user's code tokens but the one with serial ``keep``."""
        self._connection.execute(
            delete(TOKENS).where(TOKENS.c.user_id == user_id, TOKENS.c.serial != keep)
            if keep is not None
            else delete(TOKENS).where(TOKENS.c.user_id == user_id)
        )

    def put_token(self, token: TokenValues) -> None:
        """Update the user's token of that serial (keeping its counters), or insert it."""
        result = self._connection.execute(
            update(TOKENS)
            .where(TOKENS.c.serial == token.serial, TOKENS.c.user_id == token.user_id)
            .values(
                sealed_secret=token.sealed_secret,
                algorithm=token.algorithm,
                digits=token.digits,
                version=TOKENS.c.version + 1,
            )
        )
        if result.rowcount == 0:
            self._connection.execute(
                insert(TOKENS).values(**token._asdict(), counter=0, failures=0, version=1)
            )
