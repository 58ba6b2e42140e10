"""The audit log's rows: the entries of its hash chains and each chain's head. Append-only:
there is no update or delete. Hashing is the audit service's job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.storage.conflicts import conflicts_as, violates
from server.storage.errors import StaleWrite, StorageError
from server.storage.tables import AuditEntry, AuditHead

_entries = cast(Table, AuditEntry.__table__)
_heads = cast(Table, AuditHead.__table__)

_HEAD = select(_heads.c.seq, _heads.c.hash).where(_heads.c.chain == bindparam("chain"))
_HEAD_LOCKED = _HEAD.with_for_update()
# Chains 0 to count - 1, in turn from ``start``: start, start + 1, ..., count - 1, 0, ...
_IN_TURN = (
    select(_heads.c.chain, _heads.c.seq, _heads.c.hash)
    .where(_heads.c.chain < bindparam("count"))
    .order_by((_heads.c.chain + bindparam("count") - bindparam("start")) % bindparam("count"))
    .limit(1)
)
_FREE_HEAD_LOCKED = _IN_TURN.with_for_update(skip_locked=True)
_NEXT_HEAD_LOCKED = _IN_TURN.with_for_update()
_HEADS = select(_heads.c.chain, _heads.c.seq, _heads.c.hash).order_by(_heads.c.chain)
_INSERT_ENTRY = insert(_entries)


class ChainHead(NamedTuple):
    """A chain's end: its last entry's ``seq`` and ``hash`` (0 and its genesis hash when
    empty)."""

    chain: int
    seq: int
    hash: str


class AuditRepository:
    """The audit log's statements on one session, inside the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def head(self, chain: int = 0, *, lock: bool) -> tuple[int, str]:
        """Chain ``chain``'s end from its row in ``audit_heads``, which every insert into the
        chain moves. With ``lock`` the row stays locked to the end of the transaction on
        PostgreSQL (a SQLite write transaction holds the whole database already)."""
        row = (
            self._session.connection()
            .execute(_HEAD_LOCKED if lock else _HEAD, {"chain": chain})
            .first()
        )
        if row is None:
            raise StorageError(f"the audit chain {chain} has no head row (is the schema migrated?)")
        return int(row.seq), str(row.hash)

    def take_head(self, count: int, start: int) -> ChainHead:
        """Lock the end of one of the chains 0 to ``count - 1`` to the end of the transaction,
        and return it: the first in turn from ``start`` whose row no other transaction holds
        (PostgreSQL's ``SKIP LOCKED``, so appends running at once take different chains and do
        not wait), or, when every one is held, the first in turn, waited for. On SQLite, where
        the write transaction holds the database and no row is locked, the first in turn."""
        connection = self._session.connection()
        if count == 1:
            return ChainHead(0, *self.head(0, lock=True))
        params = {"count": count, "start": start}
        row = connection.execute(_FREE_HEAD_LOCKED, params).first()
        if row is None:
            row = connection.execute(_NEXT_HEAD_LOCKED, params).first()
        if row is None:
            raise StorageError("the audit chains have no head rows (is the schema migrated?)")
        return ChainHead(int(row.chain), int(row.seq), str(row.hash))

    def heads(self) -> list[ChainHead]:
        """Every chain's end, read in one statement (so together as of one moment)."""
        rows = self._session.connection().execute(_HEADS)
        return [ChainHead(int(row.chain), int(row.seq), str(row.hash)) for row in rows]

    def insert_next(self, values: Mapping[str, Any]) -> None:
        """Insert the entry chained after its chain's ``head()``: one statement, no savepoint,
        no ORM object. StaleWrite if another writer appended first (``seq`` or ``prev_hash``
        taken, or a SQLite snapshot gone stale); the transaction must then be rolled back."""
        try:
            with conflicts_as("audit chain", None):
                self._session.connection().execute(_INSERT_ENTRY, dict(values))
        except IntegrityError as exc:
            if _forks(exc):
                raise StaleWrite("audit chain", str(values.get("prev_hash"))) from exc
            raise

    def append(self, entry: AuditEntry) -> AuditEntry:
        """Insert ``entry`` through the ORM (chain 0 unless it names one; ``seq`` the chain's
        next unless set); StaleWrite if another writer already appended after
        ``entry.prev_hash`` (the chain cannot fork: ``prev_hash`` is unique)."""
        # Unset columns read as None before the insert, whatever the annotations say.
        if getattr(entry, "chain", None) is None:
            entry.chain = 0
        if getattr(entry, "seq", None) is None:
            entry.seq = self.head(entry.chain, lock=False)[0] + 1
        try:
            with conflicts_as("audit chain", None), self._session.begin_nested():
                self._session.add(entry)
        except IntegrityError as exc:
            if _forks(exc):
                raise StaleWrite("audit chain", entry.prev_hash) from exc
            raise
        return entry

    def last(self, chain: int = 0) -> AuditEntry | None:
        return self._session.scalar(
            select(AuditEntry)
            .where(AuditEntry.chain == chain)
            .order_by(AuditEntry.seq.desc())
            .limit(1)
        )

    def chains(self) -> list[int]:
        """The chains that hold entries."""
        return list(self._session.scalars(select(AuditEntry.chain).distinct().order_by("chain")))

    def all_in_order(self, chain: int = 0, after_seq: int = 0) -> list[AuditEntry]:
        """Chain ``chain``'s entries after ``after_seq``, in order."""
        return list(
            self._session.scalars(
                select(AuditEntry)
                .where(AuditEntry.chain == chain, AuditEntry.seq > after_seq)
                .order_by(AuditEntry.seq)
            )
        )

    def latest(self, chain: int, count: int) -> list[AuditEntry]:
        """Chain ``chain``'s last ``count`` entries, newest first."""
        return list(
            self._session.scalars(
                select(AuditEntry)
                .where(AuditEntry.chain == chain)
                .order_by(AuditEntry.seq.desc())
                .limit(count)
            )
        )


def _forks(exc: IntegrityError) -> bool:
    return violates(exc, "uq_audit_entries_prev_hash", "audit_entries.prev_hash") or violates(
        exc, "pk_audit_entries", "audit_entries.chain, audit_entries.seq"
    )
