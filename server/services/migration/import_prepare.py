"""A checked row made ready to write, in the process that parsed it (a worker, or the importer
itself when it parses): its secrets sealed under the key-encryption key, the keys a batch tells
repeats by, its values and, where the database takes rows that way, its COPY text. The process
that writes then only judges rows against the database and sends what is new."""

from __future__ import annotations

from server.services.migration.import_rows import LegacyRow
from server.services.secretbox import SecretBox
from server.storage.legacy_import_rows import NewLegacyRow, copy_lines

# A prepared row: the keys of the row's user id, person number and serials, each in a
# namespace of its own (``u``, ``p``, ``c``, ``t``), to find a repeat inside a batch; its values.
PreparedRow = tuple[tuple[str, ...], NewLegacyRow]
_NONE = (None, None, None, None)  # the values of a card or token the user does not have


def card_context(serial: str) -> str:
    return f"legacy-card:{serial}"


def token_context(serial: str) -> str:
    return f"legacy-token:{serial}"


class RowPreparer:
    """Seals and encodes checked rows; ``copy``: make the COPY text (PostgreSQL) too."""

    def __init__(self, box: SecretBox, *, copy: bool) -> None:
        self._box = box
        self._copy = copy

    def prepare(self, row: LegacyRow) -> PreparedRow:
        keys = ["u" + row.user_id, "p" + row.person_number]
        values: list[object] = [row.user_id, row.person_number, row.name, row.birth_year]
        values += (row.bank, row.password_hash, row.digest)
        # A card (serial, secret, used, remaining) and a token (serial, seed, algorithm,
        # digits) alike: the serial a key, the secret sealed for it, the rest as it is.
        for namespace, context, item in (
            ("c", card_context, row.key_card),
            ("t", token_context, row.code_token),
        ):
            if item is None:
                values += _NONE
                continue
            serial, secret, *rest = item
            keys.append(namespace + serial)
            values += (serial, self._box.seal(secret, context=context(serial)), *rest)
        values.append(None)  # the COPY text
        new = NewLegacyRow._make(values)
        if self._copy:
            new = new._replace(copy=copy_lines(new))
        return tuple(keys), new
