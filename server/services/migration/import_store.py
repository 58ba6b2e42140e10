"""Writing one batch of checked legacy rows, inside the caller's transaction: look up what the
database already holds, sort each row into new, changed, unchanged or refused, seal the
secrets, and write.

New rows go in bulk: on PostgreSQL by ``COPY`` into temporary staging tables and ``INSERT ...
SELECT ... ON CONFLICT DO NOTHING``, on SQLite by ``executemany`` of ``INSERT ... ON CONFLICT
DO NOTHING``. A row that another writer inserted since the look-up makes the counts disagree:
``StoreConflict``, and the caller runs the batch again (its look-up then sees that row).
Changed rows, rare, are updated one by one, each guarded by the digest and version it was
read with.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Table, delete, insert, select, update
from sqlalchemy.sql.schema import Column

from server.services.migration.formats import CARD_SIZE
from server.services.migration.import_rows import LegacyRow
from server.services.secretbox import SecretBox
from server.storage.migration_tables import (
    KeyCardStatus,
    LegacyCodeToken,
    LegacyKeyCard,
    LegacyUser,
    LegacyUserStatus,
)

USERS = cast(Table, LegacyUser.__table__)
CARDS = cast(Table, LegacyKeyCard.__table__)
TOKENS = cast(Table, LegacyCodeToken.__table__)
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


class StoreConflict(Exception):
    """Another writer changed a row between this batch's look-up and its write."""


def card_context(serial: str) -> str:
    return f"legacy-card:{serial}"


def token_context(serial: str) -> str:
    return f"legacy-token:{serial}"


@dataclass
class BatchOutcome:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejects: list[tuple[int, str]] = field(default_factory=list)
    seal_seconds: float = 0.0


def _chunks(items: Sequence[T], size: int = LOOKUP_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _used_count(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "little").bit_count()


class LegacyStore:
    """Writes batches through one connection whose transaction the caller owns."""

    def __init__(self, connection: Connection, box: SecretBox) -> None:
        self._connection = connection
        self._box = box
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

    def _existing_users(self, ids: Sequence[str]) -> dict[str, tuple[str, LegacyUserStatus]]:
        found: dict[str, tuple[str, LegacyUserStatus]] = {}
        for chunk in _chunks(sorted(set(ids))):
            statement = select(USERS.c.user_id, USERS.c.row_digest, USERS.c.status).where(
                USERS.c.user_id.in_(chunk)
            )
            for user_id, digest, status in self._connection.execute(statement):
                found[user_id] = (digest, status)
        return found

    # --- the batch -----------------------------------------------------------------------------

    def write(
        self, rows: Sequence[tuple[int, LegacyRow]], now: dt.datetime, *, careful: bool = False
    ) -> BatchOutcome:
        """Write ``rows`` (line number, row); none of them share a user id, person number or
        serial (the caller ends a batch before a repeat).

        Only the user ids are looked up first, unless ``careful`` or a row changes a stored
        user: a new row whose person number or serial is taken then fails its ``ON CONFLICT
        DO NOTHING`` insert, the counts disagree (``StoreConflict``), and the caller runs the
        batch again carefully, with every owner looked up and the row refused. Taken numbers
        are rare in an export; three look-ups a row are not.
        """
        outcome = BatchOutcome()
        if not rows:
            return outcome
        users = self._existing_users([row.user_id for _, row in rows])
        pending = [
            row
            for _, row in rows
            if row.user_id not in users or users[row.user_id][0] != row.digest
        ]
        owners: dict[str, Any] = {}
        card_owners: dict[str, Any] = {}
        token_owners: dict[str, Any] = {}
        if careful or any(row.user_id in users for row in pending):
            owners = self._lookup(
                (USERS.c.person_number, USERS.c.user_id),
                USERS.c.person_number,
                (row.person_number for row in pending),
            )
            card_owners = self._lookup(
                (CARDS.c.serial, CARDS.c.user_id),
                CARDS.c.serial,
                (row.key_card.serial for row in pending if row.key_card is not None),
            )
            token_owners = self._lookup(
                (TOKENS.c.serial, TOKENS.c.user_id),
                TOKENS.c.serial,
                (row.code_token.serial for row in pending if row.code_token is not None),
            )
        new: list[LegacyRow] = []
        changed: list[tuple[LegacyRow, str]] = []
        for line, row in rows:
            existing = users.get(row.user_id)
            if existing is not None and existing[0] == row.digest:
                outcome.unchanged += 1
                continue
            reason = _refusal(row, existing, owners, card_owners, token_owners)
            if reason is not None:
                outcome.rejects.append((line, reason))
            elif existing is None:
                new.append(row)
            else:
                changed.append((row, existing[0]))
        started = time.perf_counter()
        sealed = [self._seal(row) for row in new]
        outcome.seal_seconds += time.perf_counter() - started
        if new:
            self._insert_new(new, sealed, now)
            outcome.inserted = len(new)
        for row, old_digest in changed:
            started = time.perf_counter()
            card_blob, token_blob = self._seal(row)
            outcome.seal_seconds += time.perf_counter() - started
            self._update(row, old_digest, card_blob, token_blob, now)
            outcome.updated += 1
        return outcome

    def _seal(self, row: LegacyRow) -> tuple[bytes | None, bytes | None]:
        card = row.key_card
        token = row.code_token
        return (
            None
            if card is None
            else self._box.seal(card.secret, context=card_context(card.serial)),
            None
            if token is None
            else self._box.seal(token.seed, context=token_context(token.serial)),
        )

    # --- new rows, in bulk ---------------------------------------------------------------------

    def _insert_new(
        self,
        rows: Sequence[LegacyRow],
        sealed: Sequence[tuple[bytes | None, bytes | None]],
        now: dt.datetime,
    ) -> None:
        at = self._bind_time(now)
        active = LegacyUserStatus.ACTIVE.value
        users = [
            (
                row.user_id,
                row.person_number,
                row.name,
                row.birth_year,
                row.bank,
                row.password_hash,
                active,
                0,
                row.digest,
                at,
                1,
            )
            for row in rows
        ]
        cards = [
            (
                card.serial,
                row.user_id,
                blob,
                card.used,
                card.remaining,
                (KeyCardStatus.ACTIVE if card.remaining else KeyCardStatus.EXHAUSTED).value,
                at,
                1,
            )
            for row, (blob, _) in zip(rows, sealed, strict=True)
            if (card := row.key_card) is not None and blob is not None
        ]
        tokens = [
            (token.serial, row.user_id, blob, token.algorithm, token.digits, 0, 0, 1)
            for row, (_, blob) in zip(rows, sealed, strict=True)
            if (token := row.code_token) is not None and blob is not None
        ]
        for table, columns, values in (
            ("legacy_users", _USER_COLUMNS, users),
            ("legacy_key_cards", _CARD_COLUMNS, cards),
            ("legacy_code_tokens", _TOKEN_COLUMNS, tokens),
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

    def _update(
        self,
        row: LegacyRow,
        old_digest: str,
        card_blob: bytes | None,
        token_blob: bytes | None,
        now: dt.datetime,
    ) -> None:
        """Apply a changed row to a user who has not migrated. Card positions used here stay
        used (the export may predate logins made since), and a token keeps its counters."""
        connection = self._connection
        result = connection.execute(
            update(USERS)
            .where(
                USERS.c.user_id == row.user_id,
                USERS.c.row_digest == old_digest,
                USERS.c.status == LegacyUserStatus.ACTIVE,
            )
            .values(
                person_number=row.person_number,
                name=row.name,
                birth_year=row.birth_year,
                bank=row.bank,
                password_hash=row.password_hash,
                row_digest=row.digest,
                imported_at=now,
                version=USERS.c.version + 1,
            )
        )
        if result.rowcount != 1:
            raise StoreConflict("a legacy user changed while the import read it")
        self._update_card(row, card_blob, now)
        self._update_token(row, token_blob)

    def _update_card(self, row: LegacyRow, blob: bytes | None, now: dt.datetime) -> None:
        connection = self._connection
        cards = {
            serial: (used, version)
            for serial, used, version in connection.execute(
                select(CARDS.c.serial, CARDS.c.used, CARDS.c.version).where(
                    CARDS.c.user_id == row.user_id
                )
            )
        }
        card = row.key_card
        if card is not None and blob is not None:
            if card.serial in cards:
                old_used, version = cards[card.serial]
                used = (
                    int.from_bytes(old_used, "little") | int.from_bytes(card.used, "little")
                ).to_bytes(len(card.used), "little")
                remaining = CARD_SIZE - _used_count(used)
                result = connection.execute(
                    update(CARDS)
                    .where(CARDS.c.serial == card.serial, CARDS.c.version == version)
                    .values(
                        sealed_secret=blob,
                        used=used,
                        remaining=remaining,
                        status=KeyCardStatus.ACTIVE if remaining else KeyCardStatus.EXHAUSTED,
                        version=version + 1,
                    )
                )
                if result.rowcount != 1:
                    raise StoreConflict("a legacy key card changed while the import read it")
            else:
                connection.execute(
                    insert(CARDS).values(
                        serial=card.serial,
                        user_id=row.user_id,
                        sealed_secret=blob,
                        used=card.used,
                        remaining=card.remaining,
                        status=KeyCardStatus.ACTIVE if card.remaining else KeyCardStatus.EXHAUSTED,
                        issued_at=now,
                        version=1,
                    )
                )
        others = [serial for serial in cards if card is None or serial != card.serial]
        if others:
            # A card the export no longer lists was replaced by the legacy system.
            connection.execute(
                update(CARDS)
                .where(CARDS.c.serial.in_(others), CARDS.c.status != KeyCardStatus.REPLACED)
                .values(status=KeyCardStatus.REPLACED, version=CARDS.c.version + 1)
            )

    def _update_token(self, row: LegacyRow, blob: bytes | None) -> None:
        connection = self._connection
        token = row.code_token
        kept = token.serial if token is not None else None
        connection.execute(
            delete(TOKENS).where(TOKENS.c.user_id == row.user_id, TOKENS.c.serial != kept)
            if kept is not None
            else delete(TOKENS).where(TOKENS.c.user_id == row.user_id)
        )
        if token is None or blob is None:
            return
        result = connection.execute(
            update(TOKENS)
            .where(TOKENS.c.serial == token.serial, TOKENS.c.user_id == row.user_id)
            .values(
                sealed_secret=blob,
                algorithm=token.algorithm,
                digits=token.digits,
                version=TOKENS.c.version + 1,
            )
        )
        if result.rowcount == 0:
            connection.execute(
                insert(TOKENS).values(
                    serial=token.serial,
                    user_id=row.user_id,
                    sealed_secret=blob,
                    algorithm=token.algorithm,
                    digits=token.digits,
                    counter=0,
                    failures=0,
                    version=1,
                )
            )


def _refusal(
    row: LegacyRow,
    existing: tuple[str, LegacyUserStatus] | None,
    owners: dict[str, str],
    card_owners: dict[str, str],
    token_owners: dict[str, str],
) -> str | None:
    """Why ``row`` (new or changed) cannot be written, or None."""
    owner = owners.get(row.person_number)
    if owner is not None and owner != row.user_id:
        return "person_number: already imported for another user id"
    card = row.key_card
    if card is not None and card_owners.get(card.serial, row.user_id) != row.user_id:
        return "key_card.serial: already belongs to another user"
    token = row.code_token
    if token is not None and token_owners.get(token.serial, row.user_id) != row.user_id:
        return "code_token.serial: already belongs to another user"
    if existing is not None and existing[1] is not LegacyUserStatus.ACTIVE:
        return f"changed, but the user is {existing[1].value}: the stored row is kept"
    return None
