"""Repositories over one Session: they flush but never commit; the caller owns the transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import sqlite3
import uuid
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Select,
    String,
    Table,
    bindparam,
    case,
    delete,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.functions import FunctionElement

from server.domain.model import (
    STOCK_IDENTITY_ID,
    CredentialKind,
    CredentialState,
    IdentityStatus,
    Level,
)
from server.storage.errors import DuplicatePersonNumber, NotFound, StaleWrite, StorageError
from server.storage.tables import (
    AuditEntry,
    AuditHead,
    AuthTransaction,
    Credential,
    Identity,
    ProofingRecord,
    RateLimit,
    UtcDateTime,
)

# PostgreSQL serialization_failure and deadlock_detected: the other writer won; retry.
_PG_CONFLICT_STATES = frozenset({"40001", "40P01"})

# The statements every login factor runs, built once: a Core statement skips the ORM's
# per-row bookkeeping, and a prebuilt one skips building and hashing the statement per call
# (its SQL is compiled once and cached). They run on the session's connection, inside the
# session's transaction.
_credentials = cast(Table, Credential.__table__)
_rate_limits = cast(Table, RateLimit.__table__)
_audit_entries = cast(Table, AuditEntry.__table__)
_audit_head = cast(Table, AuditHead.__table__)

_FACTOR_STATES = (
    select(
        _credentials.c.id,
        _credentials.c.kind,
        _credentials.c.state,
        _credentials.c.version,
        _credentials.c.secret_ciphertext,
        _credentials.c.public_data,
        _credentials.c.counter,
        _credentials.c.failures,
        _credentials.c.drift,
        _credentials.c.last_used_window,
    )
    .where(
        _credentials.c.identity_id == bindparam("identity_id"),
        _credentials.c.state == bindparam("state"),
    )
    .order_by(_credentials.c.created_at, _credentials.c.id)
)
_SAVE_FACTOR_STATE = (
    update(_credentials)
    .where(
        _credentials.c.id == bindparam("credential_id"),
        _credentials.c.version == bindparam("read_version"),
    )
    .values(
        state=bindparam("new_state"),
        counter=bindparam("new_counter"),
        failures=bindparam("new_failures"),
        drift=bindparam("new_drift"),
        last_used_window=bindparam("new_last_used_window"),
        version=_credentials.c.version + 1,
    )
)


@functools.cache
def _limit_states(count: int) -> Select[tuple[str, int, dt.datetime | None]]:
    # One bound parameter per key rather than an "expanding" IN, whose SQL is rewritten at
    # every execution.
    keys: list[BindParameter[str]] = [bindparam(f"key{n}") for n in range(count)]
    return select(_rate_limits.c.key, _rate_limits.c.failures, _rate_limits.c.locked_until).where(
        _rate_limits.c.key.in_(keys)
    )


def source_limit_key(source: str) -> str:
    """The rate-limit key of the failures from one source (a client address)."""
    return f"source:{source}"


def account_limit_key(identity_id: uuid.UUID) -> str:
    """The rate-limit key of one person's consecutive login failures."""
    return f"account:{identity_id}"


class _AccountLimitKey(FunctionElement[str]):
    """``account_limit_key`` of a Uuid column, in SQL: so the login's first statement finds
    the person's counter with the transaction that names them."""

    type = String()
    inherit_cache = True
    name = "account_limit_key"


@compiles(_AccountLimitKey)
def _account_limit_key(element: _AccountLimitKey, compiler: SQLCompiler, **kw: Any) -> str:
    # PostgreSQL's uuid as text is str(uuid.UUID): lowercase, hyphenated.
    (column,) = element.clauses
    return f"('account:' || CAST({compiler.process(column, **kw)} AS TEXT))"


@compiles(_AccountLimitKey, "sqlite")
def _account_limit_key_sqlite(element: _AccountLimitKey, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLAlchemy keeps a Uuid in SQLite as its 32 lowercase hex digits: hyphenated here as
    # str(uuid.UUID) does (tests/unit/server/storage checks both against Python).
    (column,) = element.clauses
    sql = compiler.process(column, **kw)
    groups = " || '-' || ".join(
        f"substr({sql}, {start}, {length})"
        for start, length in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
    )
    return f"('account:' || {groups})"


_source_limit = _rate_limits.alias("source_limit")
_account_limit = _rate_limits.alias("account_limit")
_LOGIN_CONTEXT = (
    select(
        AuthTransaction,
        Identity.status,
        _source_limit.c.failures.label("source_failures"),
        _source_limit.c.locked_until.label("source_locked_until"),
        _account_limit.c.failures.label("account_failures"),
        _account_limit.c.locked_until.label("account_locked_until"),
    )
    .outerjoin(Identity, Identity.id == AuthTransaction.identity_id)
    .outerjoin(_source_limit, _source_limit.c.key == bindparam("source_key"))
    .outerjoin(
        _account_limit, _account_limit.c.key == _AccountLimitKey(AuthTransaction.identity_id)
    )
    .where(AuthTransaction.id == bindparam("transaction_id"))
)
_HEAD = select(_audit_head.c.seq, _audit_head.c.hash).where(_audit_head.c.id == 1)
_HEAD_LOCKED = _HEAD.with_for_update()
_INSERT_ENTRY = insert(_audit_entries)


def _is_write_conflict(exc: OperationalError) -> bool:
    orig = exc.orig
    # In WAL mode a transaction that read an older snapshot may not write after another
    # connection committed (BUSY_SNAPSHOT): SQLite's form of "someone changed it since you
    # read it". A reading transaction that wants to write while another holds the write lock
    # gets plain BUSY at once, without waiting: it must restart just the same.
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_BUSY_SNAPSHOT)
    return getattr(orig, "sqlstate", None) in _PG_CONFLICT_STATES


@contextmanager
def _conflicts_as(kind: str, key: uuid.UUID | str | int | None) -> Iterator[None]:
    try:
        yield
    except StaleDataError as exc:
        raise StaleWrite(kind, key) from exc
    except OperationalError as exc:
        if _is_write_conflict(exc):
            raise StaleWrite(kind, key) from exc
        raise


class IdentityRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, identity: Identity) -> Identity:
        """Insert; a taken person number raises DuplicatePersonNumber and leaves the session
        usable (the insert runs in a savepoint)."""
        try:
            with self._session.begin_nested():
                self._session.add(identity)
        except IntegrityError as exc:
            if _violates(exc, "uq_identities_person_number", "identities.person_number"):
                raise DuplicatePersonNumber from exc
            raise
        return identity

    def get(self, identity_id: uuid.UUID) -> Identity:
        identity = self._session.get(Identity, identity_id)
        if identity is None:
            raise NotFound("identity", identity_id)
        return identity

    def by_person_number(self, person_number: str) -> Identity:
        identity = self._session.scalar(
            select(Identity).where(Identity.person_number == person_number)
        )
        if identity is None:
            raise NotFound("identity", "with this person number")
        return identity

    def set_status(self, identity_id: uuid.UUID, status: IdentityStatus) -> Identity:
        identity = self.get(identity_id)
        identity.status = status
        with _conflicts_as("identity", identity_id):
            self._session.flush()
        return identity

    def raise_assurance(self, identity_id: uuid.UUID, level: Level) -> Identity:
        identity = self.get(identity_id)
        identity.identity_assurance = level
        with _conflicts_as("identity", identity_id):
            self._session.flush()
        return identity

    def add_proofing(self, record: ProofingRecord) -> ProofingRecord:
        self.get(record.identity_id)
        self._session.add(record)
        self._session.flush()
        return record

    def lock(self, identity_id: uuid.UUID) -> Identity | None:
        """The identity, read again and locked for the rest of the transaction on PostgreSQL
        (SQLite allows one writer at a time anyway), or None."""
        return self._session.scalar(
            select(Identity)
            .where(Identity.id == identity_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )

    def proofing_for(self, identity_id: uuid.UUID) -> list[ProofingRecord]:
        return list(
            self._session.scalars(
                select(ProofingRecord)
                .where(ProofingRecord.identity_id == identity_id)
                .order_by(ProofingRecord.created_at, ProofingRecord.id)
            )
        )


class CredentialRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, credential: Credential) -> Credential:
        try:
            with self._session.begin_nested():
                self._session.add(credential)
        except IntegrityError as exc:
            if _violates(exc, "fk_credentials_identity_id_identities", "FOREIGN KEY"):
                raise NotFound("identity", credential.identity_id) from exc
            raise
        return credential

    def get(self, credential_id: uuid.UUID) -> Credential:
        credential = self._session.get(Credential, credential_id)
        if credential is None:
            raise NotFound("credential", credential_id)
        return credential

    def for_identity(
        self, identity_id: uuid.UUID, states: Collection[CredentialState] | None = None
    ) -> list[Credential]:
        query = select(Credential).where(Credential.identity_id == identity_id)
        if states is not None:
            query = query.where(Credential.state.in_(list(states)))
        return list(self._session.scalars(query.order_by(Credential.created_at, Credential.id)))

    def update(self, credential: Credential, expected_version: int | None = None) -> Credential:
        """Write the changes made to ``credential``; raises StaleWrite if another writer changed
        it since it was read (or since ``expected_version``, carried across requests)."""
        _check_expected("credential", credential.id, credential.version, expected_version)
        with _conflicts_as("credential", credential.id):
            self._session.flush()
        return credential

    def serial_taken(self, *serials: str) -> bool:
        """Whether any credential (of any person, or in stock) has one of ``serials``."""
        found = self._session.scalar(
            select(Credential.id).where(Credential.serial.in_(serials)).limit(1)
        )
        return found is not None

    def in_stock(self, serial: str, state: CredentialState) -> Credential | None:
        """The token ``serial`` held in stock (by the stock identity) in ``state``."""
        return self._session.scalar(
            select(Credential).where(
                Credential.serial == serial,
                Credential.identity_id == STOCK_IDENTITY_ID,
                Credential.state == state,
            )
        )

    def of_identity(
        self, identity_id: uuid.UUID, kind: CredentialKind, serial: str
    ) -> Credential | None:
        """The identity's credential of ``kind`` with ``serial``, in whatever state."""
        return self._session.scalar(
            select(Credential).where(
                Credential.serial == serial,
                Credential.kind == kind,
                Credential.identity_id == identity_id,
            )
        )

    def of_kind_in(
        self, kind: CredentialKind, states: Collection[CredentialState]
    ) -> list[Credential]:
        """Every credential of ``kind`` in one of ``states`` (the PIV revocation list's)."""
        return list(
            self._session.scalars(
                select(Credential).where(Credential.kind == kind, Credential.state.in_(states))
            )
        )

    def factor_states(
        self, identity_id: uuid.UUID, kinds: Collection[CredentialKind]
    ) -> list[FactorState]:
        """The identity's active credentials of ``kinds``, oldest first, as a login factor
        reads them (one statement, no ORM objects)."""
        rows = self._session.connection().execute(
            _FACTOR_STATES, {"identity_id": identity_id, "state": CredentialState.ACTIVE}
        )
        # An identity holds a handful of credentials: filtering here keeps the SQL fixed.
        return [FactorState(**row._mapping) for row in rows if row.kind in kinds]

    def save_factor_state(self, read: FactorState, changed: FactorState) -> None:
        """Write what a factor check changed (nothing, if it changed nothing) with the same
        optimistic lock as ``update``: StaleWrite if the row is no longer at the version read.
        ``updated_at`` follows from the column's own default."""
        if changed == read:
            return
        with _conflicts_as("credential", read.id):
            result = self._session.connection().execute(
                _SAVE_FACTOR_STATE,
                {
                    "credential_id": read.id,
                    "read_version": read.version,
                    "new_state": changed.state,
                    "new_counter": changed.counter,
                    "new_failures": changed.failures,
                    "new_drift": changed.drift,
                    "new_last_used_window": changed.last_used_window,
                },
            )
        if result.rowcount != 1:
            raise StaleWrite("credential", read.id)


@dataclasses.dataclass
class FactorState:
    """What a login factor reads and writes of one credential. A check changes a copy
    (``dataclasses.replace``) and hands both to ``save_factor_state``."""

    id: uuid.UUID
    kind: CredentialKind
    state: CredentialState
    version: int
    secret_ciphertext: bytes | None = dataclasses.field(repr=False)
    public_data: Mapping[str, Any]
    counter: int
    failures: int
    drift: int
    last_used_window: int | None


class AuditRepository:
    """Append-only: there is no update or delete. Hashing is the audit service's job."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def append(self, entry: AuditEntry) -> AuditEntry:
        """Insert the next entry; StaleWrite if another writer already appended after
        ``entry.prev_hash`` (the chain cannot fork: ``prev_hash`` is unique).

        ``seq`` is assigned by the database unless set. A chain whose hash covers ``seq`` sets
        it to ``last().seq + 1``: PostgreSQL sequences skip numbers after rollbacks.
        """
        try:
            with _conflicts_as("audit chain", None), self._session.begin_nested():
                self._session.add(entry)
        except IntegrityError as exc:
            if _violates(exc, "uq_audit_entries_prev_hash", "audit_entries.prev_hash") or _violates(
                exc, "pk_audit_entries", "audit_entries.seq"
            ):
                raise StaleWrite("audit chain", entry.prev_hash) from exc
            raise
        return entry

    def head(self, *, lock: bool) -> tuple[int, str]:
        """The chain's end: the last entry's ``seq`` and ``hash`` (0 and the genesis hash when
        empty), from the one-row ``audit_head`` that every insert moves. With ``lock`` the row
        stays locked to the end of the transaction on PostgreSQL, so appends queue for the
        chain's end here (a SQLite write transaction holds the whole database already)."""
        row = self._session.connection().execute(_HEAD_LOCKED if lock else _HEAD).first()
        if row is None:
            raise StorageError("the audit chain has no head row (is the schema migrated?)")
        return int(row.seq), str(row.hash)

    def insert_next(self, values: Mapping[str, Any]) -> None:
        """Insert the entry chained after ``head()``: one statement, no savepoint, no ORM
        object. StaleWrite if another writer appended first (``seq`` or ``prev_hash`` taken,
        or a SQLite snapshot gone stale); the transaction must then be rolled back."""
        try:
            with _conflicts_as("audit chain", None):
                self._session.connection().execute(_INSERT_ENTRY, dict(values))
        except IntegrityError as exc:
            if _violates(exc, "uq_audit_entries_prev_hash", "audit_entries.prev_hash") or _violates(
                exc, "pk_audit_entries", "audit_entries.seq"
            ):
                raise StaleWrite("audit chain", str(values.get("prev_hash"))) from exc
            raise

    def last(self) -> AuditEntry | None:
        return self._session.scalar(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))

    def all_in_order(self, after_seq: int = 0) -> list[AuditEntry]:
        return list(
            self._session.scalars(
                select(AuditEntry).where(AuditEntry.seq > after_seq).order_by(AuditEntry.seq)
            )
        )


class TransactionRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, transaction: AuthTransaction) -> AuthTransaction:
        self._session.add(transaction)
        self._session.flush()
        return transaction

    def get(self, transaction_id: uuid.UUID) -> AuthTransaction:
        transaction = self._session.get(AuthTransaction, transaction_id)
        if transaction is None:
            raise NotFound("transaction", transaction_id)
        return transaction

    def login_context(self, transaction_id: uuid.UUID, source: str) -> LoginContext:
        """What a login factor starts from, in one statement: the transaction, the status of
        its identity, and the failure counters of ``source`` and of the identity."""
        row = self._session.execute(
            _LOGIN_CONTEXT,
            {"transaction_id": transaction_id, "source_key": source_limit_key(source)},
        ).first()
        if row is None:
            raise NotFound("transaction", transaction_id)
        transaction, status, source_failures, source_until, account_failures, account_until = row
        return LoginContext(
            transaction,
            status,
            None if source_failures is None else LimitState(source_failures, source_until),
            None if account_failures is None else LimitState(account_failures, account_until),
        )

    def update(
        self, transaction: AuthTransaction, expected_version: int | None = None
    ) -> AuthTransaction:
        """As CredentialRepository.update: a second completion of one step raises StaleWrite."""
        _check_expected("transaction", transaction.id, transaction.version, expected_version)
        with _conflicts_as("transaction", transaction.id):
            self._session.flush()
        return transaction

    def delete_expired(self, now: dt.datetime) -> int:
        result = self._session.execute(
            delete(AuthTransaction).where(AuthTransaction.expires_at <= now)
        )
        return int(getattr(result, "rowcount", 0))


class LimitState(NamedTuple):
    failures: int
    locked_until: dt.datetime | None


class LoginContext(NamedTuple):
    transaction: AuthTransaction
    identity_status: IdentityStatus | None  # None: the login names no one (yet)
    source_limit: LimitState | None  # None: no failures counted
    account_limit: LimitState | None


class RateLimitRepository:
    """Failure counters shared by every worker; each update is one atomic upsert."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def record_failure(
        self,
        key: str,
        now: dt.datetime,
        *,
        window: dt.timedelta,
        max_failures: int,
        lockout: dt.timedelta,
    ) -> RateLimit:
        """Count one failure in the window that began within ``window`` of ``now`` (or start
        a new one); reaching ``max_failures`` sets ``locked_until = now + lockout``."""
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        table = RateLimit.__table__
        when = UtcDateTime()
        expired = table.c.window_start <= literal(now - window, when)
        failures = case((expired, 1), else_=table.c.failures + 1)
        locked_until = literal(now + lockout, when)
        insert = _upsert_insert(self._session).values(
            key=key,
            failures=1,
            window_start=now,
            locked_until=locked_until if max_failures <= 1 else None,
        )
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "failures": failures,
                "window_start": case((expired, literal(now, when)), else_=table.c.window_start),
                "locked_until": case(
                    (failures >= max_failures, locked_until), else_=table.c.locked_until
                ),
            },
        ).returning(RateLimit)
        with _conflicts_as("rate limit", key):
            row = self._session.scalars(
                statement, execution_options={"populate_existing": True}
            ).one()
        return row

    def reset(self, key: str) -> None:
        self._session.execute(delete(RateLimit).where(RateLimit.key == key))

    def states(self, keys: Collection[str]) -> dict[str, LimitState]:
        """The current counters of ``keys`` that have any, in one statement."""
        statement = _limit_states(len(keys))
        parameters = {f"key{n}": key for n, key in enumerate(keys)}
        rows = self._session.connection().execute(statement, parameters)
        return {row.key: LimitState(row.failures, row.locked_until) for row in rows}

    def get(self, key: str) -> RateLimit | None:
        return self._session.get(RateLimit, key, populate_existing=True)


def _upsert_insert(session: Session) -> postgresql.Insert | sqlite.Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(RateLimit)
    if dialect == "sqlite":
        return sqlite.insert(RateLimit)
    raise StorageError(f"no upsert for database dialect {dialect!r}")


def _check_expected(kind: str, key: uuid.UUID, version: int, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != version:
        raise StaleWrite(kind, key)


def _violates(exc: IntegrityError, constraint: str, sqlite_message: str) -> bool:
    # PostgreSQL names the violated constraint; SQLite only says what kind and which column.
    name = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    if name is not None:
        return bool(name == constraint)
    return sqlite_message in str(exc.orig)
