"""Writing one batch of checked legacy rows, inside the caller's transaction: look up what the
database already holds, sort each row into new, changed, unchanged or refused, seal the
secrets, and write (``storage.legacy_import_repositories``). A row that another writer inserted
since the look-up: ``StoreConflict``, and the caller runs the batch again (its look-up then
sees that row).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection

from server.services.migration.formats import CARD_SIZE
from server.services.migration.import_rows import LegacyRow
from server.services.secretbox import SecretBox
from server.storage.legacy_import_repositories import (
    CardValues,
    LegacyImportRepository,
    TokenValues,
    UserValues,
)
from server.storage.migration_tables import LegacyUserStatus


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


def _used_count(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "little").bit_count()


def _user_values(row: LegacyRow) -> UserValues:
    return UserValues(
        row.user_id,
        row.person_number,
        row.name,
        row.birth_year,
        row.bank,
        row.password_hash,
        row.digest,
    )


class ImportBatchWriter:
    """Writes batches of import rows through one connection whose transaction the caller
    owns."""

    def __init__(self, connection: Connection, box: SecretBox) -> None:
        self._rows = LegacyImportRepository(connection)
        self._box = box

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
        users = self._rows.users([row.user_id for _, row in rows])
        pending = [
            row
            for _, row in rows
            if row.user_id not in users or users[row.user_id][0] != row.digest
        ]
        owners: dict[str, str] = {}
        card_owners: dict[str, str] = {}
        token_owners: dict[str, str] = {}
        if careful or any(row.user_id in users for row in pending):
            owners = self._rows.person_number_owners(row.person_number for row in pending)
            card_owners = self._rows.card_owners(
                row.key_card.serial for row in pending if row.key_card is not None
            )
            token_owners = self._rows.token_owners(
                row.code_token.serial for row in pending if row.code_token is not None
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

    # --- writing ---------------------------------------------------------------------------------

    def _insert_new(
        self,
        rows: Sequence[LegacyRow],
        sealed: Sequence[tuple[bytes | None, bytes | None]],
        now: dt.datetime,
    ) -> None:
        cards = [
            CardValues(card.serial, row.user_id, blob, card.used, card.remaining)
            for row, (blob, _) in zip(rows, sealed, strict=True)
            if (card := row.key_card) is not None and blob is not None
        ]
        tokens = [
            TokenValues(token.serial, row.user_id, blob, token.algorithm, token.digits)
            for row, (_, blob) in zip(rows, sealed, strict=True)
            if (token := row.code_token) is not None and blob is not None
        ]
        self._rows.insert_new([_user_values(row) for row in rows], cards, tokens, now)

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
        self._rows.update_user(_user_values(row), old_digest, now)
        self._update_card(row, card_blob, now)
        self._update_token(row, token_blob)

    def _update_card(self, row: LegacyRow, blob: bytes | None, now: dt.datetime) -> None:
        cards = self._rows.cards_of(row.user_id)
        card = row.key_card
        if card is not None and blob is not None:
            if card.serial in cards:
                old_used, version = cards[card.serial]
                used = (
                    int.from_bytes(old_used, "little") | int.from_bytes(card.used, "little")
                ).to_bytes(len(card.used), "little")
                remaining = CARD_SIZE - _used_count(used)
                self._rows.update_card(
                    CardValues(card.serial, row.user_id, blob, used, remaining), version
                )
            else:
                self._rows.insert_card(
                    CardValues(card.serial, row.user_id, blob, card.used, card.remaining), now
                )
        others = [serial for serial in cards if card is None or serial != card.serial]
        if others:
            # A card the export no longer lists was replaced by the legacy system.
            self._rows.retire_cards(others)

    def _update_token(self, row: LegacyRow, blob: bytes | None) -> None:
        token = row.code_token
        self._rows.delete_tokens(row.user_id, keep=token.serial if token is not None else None)
        if token is None or blob is None:
            return
        self._rows.put_token(
            TokenValues(token.serial, row.user_id, blob, token.algorithm, token.digits)
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
