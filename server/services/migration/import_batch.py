"""Writing one batch of prepared legacy rows (checked and sealed where they were parsed), inside
the caller's transaction: look up what the database already holds, sort each row into new,
changed, unchanged or refused, and write (``storage.legacy_import_repositories``). A row that
another writer inserted since the look-up, or a key another user holds: ``StoreConflict``, and
the caller runs the batch again, carefully (its look-ups then see that row).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection

from server.services.migration.formats import CARD_SIZE
from server.services.migration.import_prepare import PreparedRow
from server.storage.legacy_import_repositories import (
    LegacyImportRepository,
    NewLegacyRow,
)
from server.storage.migration_tables import LegacyUserStatus


@dataclass
class BatchOutcome:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejects: list[tuple[int, str]] = field(default_factory=list)


def _used_count(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "little").bit_count()


class ImportBatchWriter:
    """Writes batches of import rows through one connection whose transaction the caller
    owns."""

    def __init__(self, connection: Connection) -> None:
        self._rows = LegacyImportRepository(connection)

    # --- the batch -----------------------------------------------------------------------------

    def write(
        self, rows: Sequence[tuple[int, PreparedRow]], now: dt.datetime, *, careful: bool = False
    ) -> BatchOutcome:
        """Write ``rows`` (line number, row); none of them share a user id, person number or
        serial (the caller ends a batch before a repeat).

        Only the user ids are looked up first (one statement: the stored digests and statuses),
        unless ``careful`` or a row changes a stored user: a new row whose person number or
        serial is taken then fails the bulk insert (``StoreConflict``), and the caller runs the
        batch again carefully, with every owner looked up and the row refused. Taken numbers
        are rare in an export; three look-ups a batch are not free.
        """
        outcome = BatchOutcome()
        if not rows:
            return outcome
        users = self._rows.users(row.user_id for _, (_, row) in rows)
        pending = [
            row
            for _, (_, row) in rows
            if (stored := users.get(row.user_id)) is None or stored[0] != row.row_digest
        ]
        owners: dict[str, str] = {}
        card_owners: dict[str, str] = {}
        token_owners: dict[str, str] = {}
        if careful or any(row.user_id in users for row in pending):
            owners = self._rows.person_number_owners(row.person_number for row in pending)
            card_owners = self._rows.card_owners(
                row.card_serial for row in pending if row.card_serial is not None
            )
            token_owners = self._rows.token_owners(
                row.token_serial for row in pending if row.token_serial is not None
            )
        new: list[NewLegacyRow] = []
        changed: list[tuple[NewLegacyRow, str]] = []
        for line, (_, row) in rows:
            existing = users.get(row.user_id)
            if existing is not None and existing[0] == row.row_digest:
                outcome.unchanged += 1
                continue
            reason = _refusal(row, existing, owners, card_owners, token_owners)
            if reason is not None:
                outcome.rejects.append((line, reason))
            elif existing is None:
                new.append(row)
            else:
                changed.append((row, existing[0]))
        if new:
            self._rows.insert_new(new, now)
            outcome.inserted = len(new)
        for row, old_digest in changed:
            self._update(row, old_digest, now)
            outcome.updated += 1
        return outcome

    # --- changed rows --------------------------------------------------------------------------

    def _update(self, row: NewLegacyRow, old_digest: str, now: dt.datetime) -> None:
        """Apply a changed row to a user who has not migrated. Card positions used here stay
        used (the export may predate logins made since), and a token keeps its counters."""
        self._rows.update_user(row, old_digest, now)
        self._update_card(row, now)
        self._update_token(row)

    def _update_card(self, row: NewLegacyRow, now: dt.datetime) -> None:
        cards = self._rows.cards_of(row.user_id)
        card = row.card
        if card is not None:
            if card.serial in cards:
                old_used, version = cards[card.serial]
                used = (
                    int.from_bytes(old_used, "little") | int.from_bytes(card.used, "little")
                ).to_bytes(len(card.used), "little")
                remaining = CARD_SIZE - _used_count(used)
                self._rows.update_card(card._replace(used=used, remaining=remaining), version)
            else:
                self._rows.insert_card(card, now)
        others = [serial for serial in cards if card is None or serial != card.serial]
        if others:
            # A card the export no longer lists was replaced by the legacy system.
            self._rows.retire_cards(others)

    def _update_token(self, row: NewLegacyRow) -> None:
        token = row.token
        self._rows.delete_tokens(row.user_id, keep=token.serial if token is not None else None)
        if token is not None:
            self._rows.put_token(token)


def _refusal(
    row: NewLegacyRow,
    existing: tuple[str, LegacyUserStatus] | None,
    owners: dict[str, str],
    card_owners: dict[str, str],
    token_owners: dict[str, str],
) -> str | None:
    """Why ``row`` (new or changed) cannot be written, or None."""
    user_id = row.user_id
    owner = owners.get(row.person_number)
    if owner is not None and owner != user_id:
        return "person_number: already imported for another user id"
    card = row.card_serial
    if card is not None and card_owners.get(card, user_id) != user_id:
        return "key_card.serial: already belongs to another user"
    token = row.token_serial
    if token is not None and token_owners.get(token, user_id) != user_id:
        return "code_token.serial: already belongs to another user"
    if existing is not None and existing[1] is not LegacyUserStatus.ACTIVE:
        return f"changed, but the user is {existing[1].value}: the stored row is kept"
    return None
