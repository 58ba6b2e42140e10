"""Repositories over one Session: they flush but never commit; the caller owns the transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    String,
    Table,
    bindparam,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from server.domain.model import (
    STOCK_IDENTITY_ID,
    CredentialKind,
    CredentialState,
    IdentityStatus,
    Level,
)
from server.storage.conflicts import conflicts_as as _conflicts_as
from server.storage.conflicts import violates
from server.storage.errors import DuplicatePersonNumber, NotFound, StaleWrite
from server.storage.tables import (
    AuthTransaction,
    Credential,
    Identity,
    ProofingRecord,
    RateLimit,
    Throttle,
    UtcDateTime,
)
from server.storage.throttle_repositories import ThrottleState

# The statements every login factor runs, built once: a Core statement skips the ORM's
# per-row bookkeeping, and a prebuilt one skips building and hashing the statement per call
# (its SQL is compiled once and cached). They run on the session's connection, inside the
# session's transaction.
_credentials = cast(Table, Credential.__table__)
_rate_limits = cast(Table, RateLimit.__table__)
_throttles = cast(Table, Throttle.__table__)

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
        _credentials.c.blocked_until,
        _credentials.c.blocks,
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
        blocked_until=bindparam("new_blocked_until", type_=UtcDateTime()),
        blocks=bindparam("new_blocks"),
        version=_credentials.c.version + 1,
    )
)


def account_limit_key(identity_id: uuid.UUID) -> str:
    """The throttle key of one person's login failures from anywhere (for the alert)."""
    return f"account:{identity_id}"


def network_throttle_key(network: str) -> str:
    """The throttle key of the login failures from one source network (an IPv4 address or
    an IPv6 /64), whoever they named."""
    return f"net:{network}"


def everywhere_throttle_key(subject: str) -> str:
    """The throttle key of the login failures naming one subject from every network."""
    return f"everywhere:{subject}"


def familiar_network_key(subject: str, network: str) -> str:
    """The key that remembers a network the subject proved a factor from."""
    return f"seen:{subject}@{network}"


def subject_throttle_key(subject: str, network: str) -> str:
    """The throttle key of the login failures naming one subject (the keyed digest of the
    number typed, so a number nobody has is throttled as one somebody has) from one source
    network."""
    return f"subject:{subject}@{network}"


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


_network_limit = _throttles.alias("network_limit")
_subject_limit = _throttles.alias("subject_limit")
_everywhere_limit = _throttles.alias("everywhere_limit")
_familiar = _throttles.alias("familiar")
# The subject of subject_throttle_key: transaction.subject_digest or account_limit_key(identity)
_SUBJECT = func.coalesce(
    AuthTransaction.subject_digest, _AccountLimitKey(AuthTransaction.identity_id)
)
_AT_NETWORK = bindparam("at_network", type_=String())
_LOGIN_CONTEXT = (
    select(
        AuthTransaction,
        Identity.status,
        _network_limit.c.tat_ms.label("network_tat"),
        _network_limit.c.failures.label("network_failures"),
        _subject_limit.c.tat_ms.label("subject_tat"),
        _subject_limit.c.failures.label("subject_failures"),
        _everywhere_limit.c.tat_ms.label("everywhere_tat"),
        _everywhere_limit.c.failures.label("everywhere_failures"),
        _familiar.c.tat_ms.label("familiar_until"),
    )
    .outerjoin(Identity, Identity.id == AuthTransaction.identity_id)
    .outerjoin(_network_limit, _network_limit.c.key == bindparam("network_key"))
    .outerjoin(_subject_limit, _subject_limit.c.key == literal("subject:") + _SUBJECT + _AT_NETWORK)
    .outerjoin(_everywhere_limit, _everywhere_limit.c.key == literal("everywhere:") + _SUBJECT)
    .outerjoin(_familiar, _familiar.c.key == literal("seen:") + _SUBJECT + _AT_NETWORK)
    .where(AuthTransaction.id == bindparam("transaction_id"))
)


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
            if violates(exc, "uq_identities_person_number", "identities.person_number"):
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
            if violates(exc, "fk_credentials_identity_id_identities", "FOREIGN KEY"):
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

    def clear_temporary_blocks(self, identity_id: uuid.UUID) -> int:
        """End the temporary blocks and wrong-code runs of the identity's credentials: how
        many credentials had one."""
        result = self._session.execute(
            update(_credentials)
            .where(
                _credentials.c.identity_id == identity_id,
                (_credentials.c.blocked_until.is_not(None))
                | (_credentials.c.blocks > 0)
                | (_credentials.c.failures > 0),
            )
            .values(blocked_until=None, blocks=0, failures=0, version=_credentials.c.version + 1)
            .execution_options(synchronize_session=False)
        )
        self._session.expire_all()
        return int(getattr(result, "rowcount", 0))

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
                    "new_blocked_until": changed.blocked_until,
                    "new_blocks": changed.blocks,
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
    blocked_until: dt.datetime | None = None
    blocks: int = 0


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

    def login_context(self, transaction_id: uuid.UUID, network: str) -> LoginContext:
        """What a login factor starts from, in one statement: the transaction, the status of
        its identity, and the throttles of the subject it names (``subject_throttle_key``):
        from the source ``network``, from everywhere, whether ``network`` is familiar, and
        the network's own."""
        row = self._session.execute(
            _LOGIN_CONTEXT,
            {
                "transaction_id": transaction_id,
                "network_key": network_throttle_key(network),
                "at_network": f"@{network}",
            },
        ).first()
        if row is None:
            raise NotFound("transaction", transaction_id)
        transaction, status, *counters, familiar_until = row
        network_limit, subject_limit, everywhere_limit = (
            None if tat is None else ThrottleState(tat, failures)
            for tat, failures in zip(counters[::2], counters[1::2], strict=True)
        )
        return LoginContext(
            transaction, status, network_limit, subject_limit, everywhere_limit, familiar_until
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


class LoginContext(NamedTuple):
    transaction: AuthTransaction
    identity_status: IdentityStatus | None  # None: the login names no one (yet)
    network_limit: ThrottleState | None  # None: no failures counted
    subject_limit: ThrottleState | None
    everywhere_limit: ThrottleState | None
    familiar_until_ms: int | None  # until when the network is the subject's own


def _check_expected(kind: str, key: uuid.UUID, version: int, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != version:
        raise StaleWrite(kind, key)
