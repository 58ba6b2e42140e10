"""The audit log service: appends hash-chained events inside the caller's transaction and verifies
the stored chain (``audit_chain`` does the hashing, ``AuditRepository`` the storage)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import time
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.orm import Session, sessionmaker

from server.services.audit_chain import (
    GENESIS,
    AnchorMismatch,
    AuditRecord,
    JsonValue,
    record_hash,
    validate_details,
    verify,
)
from server.services.errors import AuditChainBroken, AuditDetailsRefused, Breakage
from server.storage.errors import StaleWrite
from server.storage.repositories import AuditRepository
from server.storage.tables import AuditEntry

# The column widths of ``audit_entries``: PostgreSQL enforces them and SQLite does not, so they
# are checked here to make both databases refuse the same events.
FIELD_LIMITS = {"event": 64, "actor": 128, "subject": 128}
DEFAULT_ATTEMPTS = 5

StoredEntry = tuple[AuditRecord, str, str]


def format_at(moment: dt.datetime) -> str:
    """The one text form of an entry's time that the hash covers: UTC, always microseconds.

    Both databases keep microseconds exactly, so the time read back formats to the same text.
    """
    if moment.tzinfo is None:
        raise ValueError("audit times are timezone-aware")
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


class AuditLog:
    """Appends events to the audit log within the caller's transaction (``session``).

    Concurrency: an append reads the chain's end from the one-row ``audit_head`` (which a
    trigger moves with every inserted entry) and locks it to the end of the transaction on
    PostgreSQL, so concurrent requests queue for the chain's end, one append at a time, and the
    queue is only as long as the tail of a transaction after its audit event. (A SQLite write
    transaction holds the whole database; the server begins them ``IMMEDIATE``.) Whatever gets
    past that still cannot fork the chain: ``prev_hash`` and ``seq`` are unique, so of two
    transactions that chained after the same entry the later one raises ``StaleWrite`` from
    ``append`` and must be rolled back. The caller then retries the *whole* transaction: the
    event belongs with the change it records, so the audit entry alone is never retried. Events
    that stand alone use ``append_with_retry``, which opens its own transactions. On SQLite a
    deferred transaction that read before another one committed an entry also gets
    ``StaleWrite`` (its snapshot is stale).

    The head row also makes a cut-off end visible: entries deleted from the end leave the head
    where it was, so the next entry chains after the missing ones and ``verify`` reports them
    REMOVED (unless the head row was rewritten too; the signed checkpoints kept outside the
    database, ``audit_checkpoints``, catch that).

    ``clock`` returns seconds since the epoch (``time.time``, as ``Services.clock``).
    """

    def __init__(self, session: Session, clock: Callable[[], float] = time.time) -> None:
        self._session = session
        self._clock = clock
        self._entries = AuditRepository(session)

    def append(
        self, event: str, *, actor: str, subject: str, details: Mapping[str, JsonValue]
    ) -> AuditEntry:
        """Chain one event after the last entry, inserted in the session's transaction.

        Raises ``AuditDetailsRefused`` (nothing is written) when ``details`` holds a
        secret-looking key or a value that is not plain JSON, ``ValueError`` when a field is
        longer than its column, and ``StaleWrite`` when another transaction appended first.
        The entry returned is not in the session (it was inserted with one statement).
        """
        validate_details(details)
        for name, value in (("event", event), ("actor", actor), ("subject", subject)):
            if len(value) > FIELD_LIMITS[name]:
                raise ValueError(f"audit {name} is longer than {FIELD_LIMITS[name]} characters")
        # The session's pending changes are written first, so the chain's lock is held for
        # as little as possible: from here to the end of the transaction. The time is taken
        # under it, so entries' times follow their order.
        self._session.flush()
        last_seq, prev_hash = self._entries.head(lock=True)
        at = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        record = AuditRecord(
            seq=last_seq + 1,
            at=format_at(at),
            event=event,
            actor=actor,
            subject=subject,
            details=dict(details),
        )
        values = {
            "seq": record.seq,
            "at": at,
            "event": event,
            "actor": actor,
            "subject": subject,
            "details": record.details,
            "prev_hash": prev_hash,
            "hash": record_hash(prev_hash, record),
        }
        self._entries.insert_next(values)
        return AuditEntry(**values)

    def tail(self, count: int = 20) -> list[AuditEntry]:
        """The last ``count`` entries, oldest first."""
        if count < 1:
            return []
        last = self._entries.last()
        if last is None:
            return []
        # append numbers entries without gaps, so the last ``count`` follow ``last.seq - count``.
        return self._entries.all_in_order(after_seq=max(0, last.seq - count))


def append_with_retry(
    sessions: sessionmaker[Session],
    event: str,
    *,
    actor: str,
    subject: str,
    details: Mapping[str, JsonValue],
    clock: Callable[[], float] = time.time,
    attempts: int = DEFAULT_ATTEMPTS,
) -> AuditEntry:
    """Append a standalone event in its own transaction, retrying after ``StaleWrite``.

    Each attempt is a fresh transaction that re-reads the last entry. After ``attempts``
    conflicts the last ``StaleWrite`` is raised. Refused details are not retried.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            with sessions.begin() as session:
                return AuditLog(session, clock).append(
                    event, actor=actor, subject=subject, details=details
                )
        except StaleWrite:
            if attempt == attempts:
                raise
            # Writers that collided and retried at once would collide again: back off for a
            # random, growing moment (capped), as any optimistic-concurrency client must.
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))  # noqa: S311
    raise AssertionError("unreachable: the last attempt returns or raises")


def verify_database(
    session: Session,
    *,
    anchor: tuple[int, str] | None = None,
    anchors: Sequence[tuple[int, str]] = (),
) -> int:
    """Verify the whole stored chain; return how many entries it holds.

    Raises ``AuditChainBroken`` with the first broken entry and how it is broken (see
    ``audit_chain.verify``). ``anchor`` and ``anchors`` are ``(seq, hash)`` checkpoints kept
    outside the database; without one, entries cut off the end cannot be detected. A chain
    intact in itself that a checkpoint contradicts raises ``AnchorMismatch``.
    """
    entries = _stored(AuditRepository(session).all_in_order(), start_seq=1, start_hash=GENESIS)
    _verify(entries, anchor=anchor, anchors=anchors)
    return len(entries)


def verify_segment(session: Session, start: tuple[int, str], end: tuple[int, str]) -> None:
    """Verify the entries after the trusted ``start`` (an earlier checkpoint's ``(seq, hash)``,
    or ``(0, GENESIS)``) up to ``end``, which they must reach: ``AuditChainBroken`` if not.

    The rows are read and the session's transaction ended before any hashing, so a check of a
    long stretch holds no lock (on SQLite the server's transactions hold the database)."""
    (start_seq, start_hash), (end_seq, _) = start, end
    stored = AuditRepository(session).all_in_order(after_seq=start_seq)
    # Detached first: a rollback expires what the session holds, and each entry read after it
    # would be loaded again, one statement (and, on SQLite, one transaction) an entry.
    session.expunge_all()
    session.rollback()
    entries = _stored(
        [entry for entry in stored if entry.seq <= end_seq],
        start_seq=start_seq + 1,
        start_hash=start_hash,
    )
    _verify(entries, start_seq=start_seq + 1, start_hash=start_hash, anchors=[end])


def _stored(stored: Sequence[AuditEntry], *, start_seq: int, start_hash: str) -> list[StoredEntry]:
    entries: list[StoredEntry] = []
    for entry in stored:
        record = _record_of(entry)
        if record is None:
            # A row no append could have written: report any earlier breakage first, then it.
            _verify(entries, start_seq=start_seq, start_hash=start_hash)
            raise AuditChainBroken(entry.seq, Breakage.ALTERED)
        entries.append((record, entry.prev_hash, entry.hash))
    return entries


def _verify(
    entries: list[StoredEntry],
    *,
    start_seq: int = 1,
    start_hash: str = GENESIS,
    anchor: tuple[int, str] | None = None,
    anchors: Sequence[tuple[int, str]] = (),
) -> None:
    """``audit_chain.verify``, telling moved entries from altered ones.

    The database returns entries ordered by ``seq``, and the hash covers ``seq``: an entry moved
    by changing its ``seq`` (two entries swapped, say) fails its hash like an altered one. When
    its record hashes correctly under the position its ``prev_hash`` links give it, it was
    moved, not changed, and is reported as REORDERED.
    """
    try:
        verify(entries, start_seq=start_seq, start_hash=start_hash, anchor=anchor, anchors=anchors)
    except AuditChainBroken as broken:
        if (
            broken.reason is Breakage.ALTERED
            and not isinstance(broken, AnchorMismatch)
            and _was_moved(entries, broken.seq)
        ):
            raise AuditChainBroken(broken.seq, Breakage.REORDERED) from broken
        raise


def _was_moved(entries: list[StoredEntry], seq: int) -> bool:
    by_prev = {prev_hash: digest for _, prev_hash, digest in entries}
    position: dict[str, int] = {}
    link = GENESIS
    # Follow the links from the start; stop at a forged cycle.
    while link in by_prev and by_prev[link] not in position:
        link = by_prev[link]
        position[link] = len(position) + 1
    for record, prev_hash, digest in entries:
        if record.seq == seq:
            original = position.get(digest)
            return (
                original is not None
                and original != seq
                and record_hash(prev_hash, dataclasses.replace(record, seq=original)) == digest
            )
    return False


def _record_of(entry: AuditEntry) -> AuditRecord | None:
    """The record an entry's hash covers, or None when the row cannot be one (tampered)."""
    if entry.subject is None or not isinstance(entry.details, dict):
        return None
    try:
        return AuditRecord(
            seq=entry.seq,
            at=format_at(entry.at),
            event=entry.event,
            actor=entry.actor,
            subject=entry.subject,
            details=entry.details,
        )
    except (ValueError, AuditDetailsRefused):
        return None
