"""SQLAlchemy 2 declarative tables; the schema itself is created only by the Alembic migrations."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
)
from sqlalchemy import DateTime as _DateTime
from sqlalchemy import Enum as _Enum
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from server.domain.model import (
    AUDIT_CHAINS,
    CeremonyKind,
    CredentialKind,
    CredentialState,
    IdentityStatus,
    Level,
    ProofingChannel,
)

# Explicit constraint names, so migrations can refer to them on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact); JSON text elsewhere.
Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
BigIntPk = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: storage only accepts timezone-aware datetimes")
        value = value.astimezone(dt.UTC)
        # SQLite compares datetimes as text: keep one naive UTC format so ordering holds.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def _enum(cls: type[StrEnum], name: str) -> _Enum:
    # VARCHAR + CHECK rather than a native PG enum: adding a value stays a plain migration.
    return _Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        validate_strings=True,
        length=32,
        values_callable=lambda members: [member.value for member in members],
    )


class LevelColumn(TypeDecorator[Level]):
    """An assurance level stored as its label (``"low"``, ``"substantial"``, ``"high"``),
    VARCHAR with a CHECK constraint as the other enums, so the stored values never changed."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: Level | None, dialect: Dialect) -> str | None:
        return None if value is None else Level(value).label

    def process_result_value(self, value: str | None, dialect: Dialect) -> Level | None:
        return None if value is None else Level.parse(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Identity(Base):
    __tablename__ = "identities"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    person_number: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[IdentityStatus] = mapped_column(
        _enum(IdentityStatus, "identity_status"), default=IdentityStatus.ACTIVE
    )
    identity_assurance: Mapped[Level] = mapped_column(LevelColumn())
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ProofingRecord(Base):
    __tablename__ = "proofing_records"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identities.id"), index=True)
    channel: Mapped[ProofingChannel] = mapped_column(_enum(ProofingChannel, "proofing_channel"))
    document_kind: Mapped[str] = mapped_column(String(64))
    # High assurance needs two approving staff members; their ids are kept as a JSON list.
    operator_ids: Mapped[list[str]] = mapped_column(Json, default=list)
    level: Mapped[Level] = mapped_column(LevelColumn())
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # The organisation whose operator recorded it (a bank's customers are the people it proved).
    organisation: Mapped[str | None] = mapped_column(String(80), index=True)


class Credential(Base):
    """One authenticator. ``secret_ciphertext`` is sealed by a service; storage never decrypts."""

    __tablename__ = "credentials"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identities.id"), index=True)
    kind: Mapped[CredentialKind] = mapped_column(_enum(CredentialKind, "credential_kind"))
    state: Mapped[CredentialState] = mapped_column(
        _enum(CredentialState, "credential_state"), default=CredentialState.ORDERED
    )
    serial: Mapped[str | None] = mapped_column(String(128), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    public_data: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    counter: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    drift: Mapped[int] = mapped_column(Integer, default=0)
    last_used_window: Mapped[int | None] = mapped_column(BigInteger)
    # A code token or key card refused for a while after wrong codes (never for good):
    # ``blocks`` counts the blocks in a row, each longer than the last; a success ends the run.
    blocked_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    blocks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer)

    # The ORM adds "AND version = :old" to every UPDATE and bumps it: optimistic locking.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class AuditEntry(Base):
    """Append-only and hash-chained: entry ``seq`` of chain ``chain`` (the log is several
    chains, each linked on its own); unique ``prev_hash`` makes a forked chain impossible."""

    __tablename__ = "audit_entries"

    chain: Mapped[int] = mapped_column(
        SmallInteger, primary_key=True, autoincrement=False, server_default="0"
    )
    seq: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    event: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """Each chain's end in a row of its own: the last entry's ``seq`` and ``hash``, or 0 and
    the chain's genesis hash before the first. A trigger on ``audit_entries`` moves a chain's
    row with every insert into it (migrations 0002, 0011); an append locks one row and chains
    after what it holds. Every possible chain has its row from the migration on."""

    __tablename__ = "audit_heads"
    __table_args__ = (
        CheckConstraint(f"chain >= 0 AND chain < {AUDIT_CHAINS}", name="chain_range"),
    )

    chain: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuthTransaction(Base):
    """A persisted ceremony (a login, a legacy login, a FIDO2 registration, a PIV enrolment):
    its ``kind`` says which; its states and transitions belong to the service of that kind."""

    __tablename__ = "auth_transactions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[CeremonyKind] = mapped_column(
        _enum(CeremonyKind, "ceremony_kind"), default=CeremonyKind.LOGIN
    )
    # The provider a login is for ("" for a registration or an enrolment: the identity's own).
    service_provider: Mapped[str] = mapped_column(String(128))
    min_level: Mapped[Level] = mapped_column(LevelColumn())
    state: Mapped[str] = mapped_column(String(32))
    identity_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identities.id"), index=True)
    factors: Mapped[list[str]] = mapped_column(Json, default=list)
    challenge: Mapped[bytes | None] = mapped_column(LargeBinary)
    # What a library keeps between a ceremony's steps, as it gave it (python-fido2's state).
    ceremony_state: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # A keyed digest of the person number typed at identify (Pseudonyms.subject_digest), so
    # decoy answers for a number that matches no identity are the same in every login.
    subject_digest: Mapped[str | None] = mapped_column(String(64))
    # The browser session that opened the login's pages (a keyed digest of its token): once
    # claimed, the login's pages answer only that browser, so a login cannot be finished in,
    # or delivered to, another browser's session.
    browser_binding: Mapped[str | None] = mapped_column(String(64))
    # Where the browser goes when the login is done (the provider's page), if it said so.
    return_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class RateLimit(Base):
    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    locked_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class Throttle(Base):
    """A decaying failure counter (the generic cell rate algorithm): ``tat_ms`` is when the
    counter would be empty again, in milliseconds since the epoch; each failure moves it on by
    the key's interval from now or from where it was, whichever is later. ``failures`` counts
    the failures since it was last empty (for operators and the alert)."""

    __tablename__ = "throttles"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    tat_ms: Mapped[int] = mapped_column(BigInteger, index=True)  # the sweep finds drained ones
    failures: Mapped[int] = mapped_column(Integer, default=0)


class MaintenanceLease(Base):
    """Who does a periodic task (the sweep of what expired) until when: a process takes the
    task's row only once ``until`` has passed, so several processes do not all do it."""

    __tablename__ = "maintenance_leases"

    task: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    until: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class KeyFingerprint(Base):
    """A fingerprint of each key the service keeps in a file, as the first process that served
    this database had it: every later process, on any machine, must hold the same key."""

    __tablename__ = "key_fingerprints"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    since: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class PendingState(StrEnum):
    WAITING = "waiting"
    APPROVED = "approved"
    CANCELLED = "cancelled"


class PendingProofing(Base):
    """A High proofing recorded by one operator, waiting for a second operator of the same
    channel and organisation to approve it with their own key. A proofing made in an assisted
    migration waits on the flow until the flow has enrolled its identity."""

    __tablename__ = "pending_proofings"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identities.id"), index=True)
    flow_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    channel: Mapped[ProofingChannel] = mapped_column(
        _enum(ProofingChannel, "pending_proofing_channel")
    )
    document_kind: Mapped[str] = mapped_column(String(64))
    organisation: Mapped[str] = mapped_column(String(80), index=True)
    first_key_id: Mapped[str] = mapped_column(String(16))
    first_operator: Mapped[str] = mapped_column(String(128))
    # Who the first operator said was present: kept as told, it counts for nothing.
    named_operators: Mapped[list[str]] = mapped_column(Json, default=list)
    state: Mapped[PendingState] = mapped_column(_enum(PendingState, "pending_proofing_state"))
    approver_key_id: Mapped[str | None] = mapped_column(String(16))
    approver: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    decided_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class DeskLogin(Base):
    """A person who logged in at an organisation's desk: its operator began the login and the
    person completed it (at Substantial or above); from then on one of its customers."""

    __tablename__ = "desk_logins"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identities.id"), index=True)
    organisation: Mapped[str] = mapped_column(String(80), index=True)
    # The login (``auth_transactions``): one person at a desk per login.
    transaction_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    operator_key_id: Mapped[str] = mapped_column(String(16))
    level: Mapped[Level] = mapped_column(LevelColumn())
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
