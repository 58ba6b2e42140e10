"""The audit log service: appends hash-chained events inside the caller's transaction, to one of
several chains, and verifies the stored chains (``audit_chain`` does the hashing,
``AuditRepository`` the storage)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from sqlalchemy.orm import Session, sessionmaker

from server.domain.model import AUDIT_CHAINS
from server.services.audit_chain import (
    Anchor,
    AnchorMismatch,
    AuditRecord,
    JsonValue,
    genesis,
    record_hash,
    validate_details,
    verify,
)
from server.services.errors import AuditChainBroken, AuditDetailsRefused, Breakage
from server.storage.audit_repositories import AuditRepository, ChainHead
from server.storage.errors import StaleWrite
from server.storage.tables import AuditEntry

# The column widths of ``audit_entries``: PostgreSQL enforces them and SQLite does not, so they
# are checked here to make both databases refuse the same events.
FIELD_LIMITS = {"event": 64, "actor": 128, "subject": 128}
DEFAULT_ATTEMPTS = 5
# How many chains the service appends to on PostgreSQL unless AKKREDITIV_AUDIT_PARTITIONS says
# (on SQLite one: its write transaction holds the whole database, so chains cannot help).
POSTGRESQL_PARTITIONS = 8
# Where a session's ``info`` keeps the chain its transaction holds: (transaction, chain).
_HELD = "akkreditiv.audit_chain"

StoredEntry = tuple[AuditRecord, str, str]


class AuditPartitions:
    """Over how many chains (``count``, 1 to ``AUDIT_CHAINS``) appends spread, and where each
    append starts looking for a chain nobody holds: in turn, from a place that differs between
    processes, so appends running at once rarely even try the same chain first."""

    def __init__(self, count: int = 1) -> None:
        if isinstance(count, bool) or not 1 <= count <= AUDIT_CHAINS:
            raise ValueError(f"the audit log has 1 to {AUDIT_CHAINS} partitions")
        self.count = count
        self._turns = itertools.count(os.getpid())  # next() is atomic: threads share it

    @classmethod
    def for_database(cls, dialect: str, setting: int | None) -> AuditPartitions:
        """The setting's count, or the default for the database: ``POSTGRESQL_PARTITIONS`` on
        PostgreSQL, one chain on SQLite."""
        if setting is not None:
            return cls(setting)
        return cls(POSTGRESQL_PARTITIONS if dialect == "postgresql" else 1)

    def start(self) -> int:
        return next(self._turns) % self.count

    def __repr__(self) -> str:
        return f"AuditPartitions({self.count})"


def format_at(moment: dt.datetime) -> str:
    """The one text form of an entry's time that the hash covers: UTC, always microseconds.

    Both databases keep microseconds exactly, so the time read back formats to the same text.
    """
    if moment.tzinfo is None:
        raise ValueError("audit times are timezone-aware")
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


class AuditLog:
    """Appends events to the audit log within the caller's transaction (``session``).

    The log is several hash chains (``partitions``; one unless given), each entry in one, each
    chain linked on its own from its genesis hash. Concurrency: an append locks the end of one
    chain, a row of ``audit_heads`` (which a trigger moves with every inserted entry), to the
    end of the transaction on PostgreSQL: the first in turn that no other transaction holds,
    so appends from many requests and processes each take a chain of their own and do not
    queue, unless every chain is held (then it waits for one). The events of one transaction
    all go to the chain it took first, in order. (A SQLite write transaction holds the whole
    database; the server begins them ``IMMEDIATE``.) Whatever gets past that still cannot fork
    a chain: ``prev_hash`` and ``(chain, seq)`` are unique, so of two transactions that chained
    after the same entry the later one raises ``StaleWrite`` from ``append`` and must be
    rolled back. The caller then retries the *whole* transaction: the event belongs with the
    change it records, so the audit entry alone is never retried. Events that stand alone use
    ``append_with_retry``, which opens its own transactions. On SQLite a deferred transaction
    that read before another one committed an entry also gets ``StaleWrite`` (its snapshot is
    stale).

    The head rows also make a cut-off end visible: entries deleted from the end leave their
    chain's head where it was, so the next entry chains after the missing ones and ``verify``
    reports them REMOVED (unless the head row was rewritten too; the signed checkpoints of
    every chain's head kept outside the database, ``audit_checkpoints``, catch that).

    ``clock`` returns seconds since the epoch (``time.time``, as ``Services.clock``).
    """

    def __init__(
        self,
        session: Session,
        clock: Callable[[], float] = time.time,
        partitions: AuditPartitions | None = None,
    ) -> None:
        self._session = session
        self._clock = clock
        self._partitions = partitions if partitions is not None else AuditPartitions()
        self._entries = AuditRepository(session)

    def append(
        self, event: str, *, actor: str, subject: str, details: Mapping[str, JsonValue]
    ) -> AuditEntry:
        """Chain one event after the last entry of a chain, inserted in the session's
        transaction.

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
        # under it, so entries' times follow their order in the chain.
        self._session.flush()
        chain, last_seq, prev_hash = self._take_head()
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
            "chain": chain,
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

    def _take_head(self) -> ChainHead:
        """The end of the chain this transaction appends to, locked: the one it took for an
        earlier event, or a free one (``AuditRepository.take_head``). Holding one chain per
        transaction keeps its events in order and two transactions from waiting on each
        other's chains."""
        transaction = self._session.get_transaction()
        held = self._session.info.get(_HELD)
        if held is not None and held[0] is transaction:
            chain = held[1]
            return ChainHead(chain, *self._entries.head(chain, lock=True))
        head = self._entries.take_head(self._partitions.count, self._partitions.start())
        self._session.info[_HELD] = (transaction, head.chain)
        return head

    def tail(self, count: int = 20) -> list[AuditEntry]:
        """The last ``count`` entries of all chains together, oldest first (by time: the
        chains are ordered each in itself, and their entries' times follow that order)."""
        if count < 1:
            return []
        latest = [
            entry
            for head in self._entries.heads()
            if head.seq > 0
            for entry in self._entries.latest(head.chain, count)
        ]
        latest.sort(key=lambda entry: (entry.at, entry.chain, entry.seq))
        return latest[-count:]


def append_with_retry(
    sessions: sessionmaker[Session],
    event: str,
    *,
    actor: str,
    subject: str,
    details: Mapping[str, JsonValue],
    clock: Callable[[], float] = time.time,
    attempts: int = DEFAULT_ATTEMPTS,
    partitions: AuditPartitions | None = None,
) -> AuditEntry:
    """Append a standalone event in its own transaction, retrying after ``StaleWrite``.

    Each attempt is a fresh transaction that re-reads its chain's end. After ``attempts``
    conflicts the last ``StaleWrite`` is raised. Refused details are not retried.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            with sessions.begin() as session:
                return AuditLog(session, clock, partitions).append(
                    event, actor=actor, subject=subject, details=details
                )
        except StaleWrite:
            if attempt == attempts:
                raise
            # Writers that collided and retried at once would collide again: back off for a
            # random, growing moment (capped), as any optimistic-concurrency client must.
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))  # noqa: S311
    raise AssertionError("unreachable: the last attempt returns or raises")


def verify_database(session: Session, *, anchors: Iterable[Anchor] = ()) -> int:
    """Verify every stored chain; return how many entries they hold together.

    Raises ``AuditChainBroken`` with the first broken entry, its chain and how it is broken
    (see ``audit_chain.verify``). ``anchors`` are checkpoints kept outside the database;
    without one, entries cut off a chain's end cannot be detected. A chain intact in itself
    that a checkpoint contradicts raises ``AnchorMismatch``; a chain a checkpoint names that
    the database lacks altogether is REMOVED from its first entry.
    """
    repository = AuditRepository(session)
    by_chain: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for anchor in anchors:
        by_chain[anchor.chain].append((anchor.seq, anchor.hash))
    chains = {*repository.chains(), *by_chain}
    chains.update(head.chain for head in repository.heads() if head.seq > 0)
    count = 0
    for chain in sorted(chains):
        stored = repository.all_in_order(chain)
        if not 0 <= chain < AUDIT_CHAINS:
            # No append writes there: the rows were moved out of a chain (which shows them
            # REMOVED when it is checked first) or made up.
            raise AuditChainBroken(stored[0].seq, Breakage.ALTERED, chain=chain)
        start = genesis(chain)
        entries = _stored(stored, start_seq=1, start_hash=start, chain=chain)
        _verify(entries, start_hash=start, anchors=by_chain[chain], chain=chain)
        count += len(entries)
    return count


def verify_segment(
    session: Session, chain: int, start: tuple[int, str], end: tuple[int, str]
) -> None:
    """Verify chain ``chain``'s entries after the trusted ``start`` (an earlier checkpoint's
    ``(seq, hash)``, or ``(0, genesis(chain))``) up to ``end``, which they must reach:
    ``AuditChainBroken`` if not.

    The rows are read and the session's transaction ended before any hashing, so a check of a
    long stretch holds no lock (on SQLite the server's transactions hold the database)."""
    (start_seq, start_hash), (end_seq, _) = start, end
    stored = AuditRepository(session).all_in_order(chain, after_seq=start_seq)
    # Detached first: a rollback expires what the session holds, and each entry read after it
    # would be loaded again, one statement (and, on SQLite, one transaction) an entry.
    session.expunge_all()
    session.rollback()
    entries = _stored(
        [entry for entry in stored if entry.seq <= end_seq],
        start_seq=start_seq + 1,
        start_hash=start_hash,
        chain=chain,
    )
    _verify(entries, start_seq=start_seq + 1, start_hash=start_hash, anchors=[end], chain=chain)


def _stored(
    stored: Sequence[AuditEntry], *, start_seq: int, start_hash: str, chain: int
) -> list[StoredEntry]:
    entries: list[StoredEntry] = []
    for entry in stored:
        record = _record_of(entry)
        if record is None:
            # A row no append could have written: report any earlier breakage first, then it.
            _verify(entries, start_seq=start_seq, start_hash=start_hash, chain=chain)
            raise AuditChainBroken(entry.seq, Breakage.ALTERED, chain=chain)
        entries.append((record, entry.prev_hash, entry.hash))
    return entries


def _verify(
    entries: list[StoredEntry],
    *,
    start_seq: int = 1,
    start_hash: str,
    anchors: Sequence[tuple[int, str]] = (),
    chain: int,
) -> None:
    """``audit_chain.verify``, telling moved entries from altered ones.

    The database returns entries ordered by ``seq``, and the hash covers ``seq``: an entry moved
    by changing its ``seq`` (two entries swapped, say) fails its hash like an altered one. When
    its record hashes correctly under the position its ``prev_hash`` links give it, it was
    moved, not changed, and is reported as REORDERED.
    """
    try:
        verify(entries, start_seq=start_seq, start_hash=start_hash, anchors=anchors, chain=chain)
    except AuditChainBroken as broken:
        if (
            broken.reason is Breakage.ALTERED
            and not isinstance(broken, AnchorMismatch)
            and _was_moved(entries, broken.seq, start_seq, start_hash)
        ):
            raise AuditChainBroken(broken.seq, Breakage.REORDERED, chain=chain) from broken
        raise


def _was_moved(entries: list[StoredEntry], seq: int, start_seq: int, start_hash: str) -> bool:
    by_prev = {prev_hash: digest for _, prev_hash, digest in entries}
    position: dict[str, int] = {}
    link = start_hash
    # Follow the links from the start; stop at a forged cycle.
    while link in by_prev and by_prev[link] not in position:
        link = by_prev[link]
        position[link] = start_seq + len(position)
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
