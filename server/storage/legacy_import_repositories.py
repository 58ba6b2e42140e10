"""The legacy importer's SQL for one batch of rows, over a connection whose transaction the
caller owns: look up what is stored, insert new rows in bulk, update changed ones.

New rows go in bulk: on PostgreSQL by ``COPY`` into temporary staging tables and ``INSERT ...
SELECT ... ON CONFLICT DO NOTHING``, on SQLite by ``executemany`` of ``INSERT ... ON CONFLICT
DO NOTHING``. A row that another writer inserted since the look-up makes the counts disagree:
``StoreConflict``. Changed rows are updated one by one, each guarded by the digest or version
it was read with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.sql.schema import Column

from server.storage.errors import StorageError
from server.storage.migration_tables import LEGACY_CODE_TOKENS as TOKENS
from server.storage.migration_tables import LEGACY_KEY_CARDS as CARDS
from server.storage.migration_tables import LEGACY_USERS as USERS
from server.storage.migration_tables import (
    KeyCardStatus,
    LegacyUserStatus,
)

# Below SQLite's limit of bound parameters per statement (32766), with room to spare.
LOOKUP_CHUNK = 5000
# SQLite's page cache for the import's connection (KiB; the default is 2 MiB). Every row adds
# keys in random order to six indexes; once they outgrow the cache, each insert reads pages
# back. Bounded, so memory still does not grow with the input beyond it.
SQLITE_CACHE_KIB = 64 * 1024

_USER_COLUMNS = (
    "user_id",
    "person_number",
    "name",
    "birth_year",
    "bank",
    "password_hash",
    "status",
    "failures",
    "row_digest",
    "imported_at",
    "version",
)
_CARD_COLUMNS: tuple[str, ...] = ("serial", "user_id", "sealed_secret", "used", "remaining")
_CARD_COLUMNS += ("status", "issued_at", "version")
_TOKEN_COLUMNS: tuple[str, ...] = ("serial", "user_id", "sealed_secret", "algorithm", "digits")
_TOKEN_COLUMNS += ("counter", "failures", "version")

T = TypeVar("T")


class StoreConflict(StorageError):
    """Another writer changed a row between this batch's look-up and its write."""


class UserValues(NamedTuple):
    user_id: str
    person_number: str
    name: str
    birth_year: int
    bank: str | None
    password_hash: str
    row_digest: str


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


def _chunks(items: Sequence[T], size: int = LOOKUP_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _card_status(remaining: int) -> KeyCardStatus:
    return KeyCardStatus.ACTIVE if remaining else KeyCardStatus.EXHAUSTED


class LegacyImportRepository:
    """One batch's statements through one connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._postgres = connection.dialect.name == "postgresql"
        if not self._postgres:
            connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        # The timestamp as the ORM would bind it (SQLite: naive UTC text in SQLAlchemy's format).
        dialect = connection.dialect
        bind = USERS.c.imported_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._bind_time: Callable[[dt.datetime], Any] = bind or (lambda value: value)

    # --- look-ups ------------------------------------------------------------------------------

    def _lookup(
        self, columns: tuple[Column[Any], Column[Any]], key: Column[Any], values: Iterable[str]
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}
        wanted = sorted(set(values))
        for chunk in _chunks(wanted):
            statement = select(*columns).where(key.in_(chunk))
            for first, second in self._connection.execute(statement):
                found[first] = second
        return found

    def users(self, ids: Sequence[str]) -> dict[str, tuple[str, LegacyUserStatus]]:
        """user id -> (row digest, status) of those of ``ids`` that are stored."""
        found: dict[str, tuple[str, LegacyUserStatus]] = {}
        for chunk in _chunks(sorted(set(ids))):
            statement = select(USERS.c.user_id, USERS.c.row_digest, USERS.c.status).where(
                USERS.c.user_id.in_(chunk)
            )
            for user_id, digest, status in self._connection.execute(statement):
                found[user_id] = (digest, status)
        return found

    def person_number_owners(self, numbers: Iterable[str]) -> dict[str, str]:
        """person number -> the user id it is stored for."""
        return self._lookup(
            (USERS.c.person_number, USERS.c.user_id), USERS.c.person_number, numbers
        )

    def card_owners(self, serials: Iterable[str]) -> dict[str, str]:
        return self._lookup((CARDS.c.serial, CARDS.c.user_id), CARDS.c.serial, serials)

    def token_owners(self, serials: Iterable[str]) -> dict[str, str]:
        return self._lookup((TOKENS.c.serial, TOKENS.c.user_id), TOKENS.c.serial, serials)

    # --- new rows, in bulk ---------------------------------------------------------------------

    def insert_new(
        self,
        users: Sequence[UserValues],
        cards: Sequence[CardValues],
        tokens: Sequence[TokenValues],
        now: dt.datetime,
    ) -> None:
        """Insert new users (active), their cards and tokens; ``StoreConflict`` if any of them
        was stored already."""
        at = self._bind_time(now)
        active = LegacyUserStatus.ACTIVE.value
        user_rows = [(*user[:6], active, 0, user.row_digest, at, 1) for user in users]
        card_rows = [(*card, _card_status(card.remaining).value, at, 1) for card in cards]
        token_rows = [(*token, 0, 0, 1) for token in tokens]
        for table, columns, values in (
            ("legacy_users", _USER_COLUMNS, user_rows),
            ("legacy_key_cards", _CARD_COLUMNS, card_rows),
            ("legacy_code_tokens", _TOKEN_COLUMNS, token_rows),
        ):
            if not values:
                continue
            written = (
                self._copy_insert(table, columns, values)
                if self._postgres
                else self._executemany_insert(table, columns, values)
            )
            if written != len(values):
                raise StoreConflict(f"{len(values) - written} rows of {table} already existed")

    def _executemany_insert(
        self, table: str, columns: Sequence[str], values: list[tuple[Any, ...]]
    ) -> int:
        marks = ", ".join("?" for _ in columns)
        result = self._connection.exec_driver_sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - constants
            " ON CONFLICT DO NOTHING",
            values,
        )
        return result.rowcount

    def _copy_insert(
        self, table: str, columns: Sequence[str], values: list[tuple[Any, ...]]
    ) -> int:
        stage = f"{table}_import_stage"
        names = ", ".join(columns)
        # A temporary table per session, emptied at every commit; LIKE copies the column types.
        self._connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage}"
            f" (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        driver = self._connection.connection.driver_connection
        if driver is None:  # pragma: no cover - a live connection always has one
            raise RuntimeError("no database connection")
        with driver.cursor() as cursor, cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        result = self._connection.exec_driver_sql(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage}"  # noqa: S608 - constants
            " ON CONFLICT DO NOTHING"
        )
        return result.rowcount

    # --- changed rows, one by one ----------------------------------------------------------------

    def update_user(self, user: UserValues, old_digest: str, now: dt.datetime) -> None:
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
                status=_card_status(card.remaining),
                version=version + 1,
            )
        )
        if result.rowcount != 1:
            raise StoreConflict("a legacy key card changed while the import read it")

    def insert_card(self, card: CardValues, now: dt.datetime) -> None:
        self._connection.execute(
            insert(CARDS).values(
                **card._asdict(), status=_card_status(card.remaining), issued_at=now, version=1
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
