"""Tables of the move from the legacy eID: the legacy store (users, key cards, code tokens), the
resumable importer's runs and rejected rows, the guided migration flows and their step events,
and the plan (waves and invitations). Same metadata as ``tables``; created only by migrations.

Sizes matter here: five million legacy users. A key card is therefore stored as a sealed card
secret (its index/code pairs are derived from it, as the legacy printing system did) and a
148-bit bitmap of used positions, not as 148 digests.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.model import ProofingChannel
from server.storage.tables import Base, BigIntPk, Json, UtcDateTime, _enum, utcnow


class LegacyUserStatus(enum.StrEnum):
    ACTIVE = "active"
    MIGRATED = "migrated"  # legacy login still works until the shutdown date
    CLOSED = "closed"


class KeyCardStatus(enum.StrEnum):
    ACTIVE = "active"
    EXHAUSTED = "exhausted"
    REPLACED = "replaced"


class ImportStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class LegacyUser(Base):
    __tablename__ = "legacy_users"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_number: Mapped[str] = mapped_column(String(32), unique=True)  # "ddmmyy-ssss"
    name: Mapped[str] = mapped_column(String(200))
    birth_year: Mapped[int] = mapped_column(Integer, index=True)  # for cohorts by birth year
    bank: Mapped[str | None] = mapped_column(String(64), index=True)  # for cohorts by bank
    # The legacy scheme's own string, e.g. "pbkdf2_sha256$<iterations>$<salt>$<hash>".
    password_hash: Mapped[str] = mapped_column(String(255))
    status: Mapped[LegacyUserStatus] = mapped_column(
        _enum(LegacyUserStatus, "legacy_user_status"), default=LegacyUserStatus.ACTIVE
    )
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    identity_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identities.id"))
    migrated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    # SHA-256 of the imported row's canonical form: re-importing the same row changes nothing.
    row_digest: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class LegacyKeyCard(Base):
    __tablename__ = "legacy_key_cards"

    serial: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("legacy_users.user_id"), index=True)
    # The card secret, sealed (SecretBox context "legacy-card:<serial>").
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    used: Mapped[bytes] = mapped_column(LargeBinary)  # bitmap of used positions (148 bits)
    remaining: Mapped[int] = mapped_column(Integer)
    status: Mapped[KeyCardStatus] = mapped_column(
        _enum(KeyCardStatus, "key_card_status"), default=KeyCardStatus.ACTIVE
    )
    issued_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class LegacyCodeToken(Base):
    """The optional legacy code token (a TOTP/HOTP display)."""

    __tablename__ = "legacy_code_tokens"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("legacy_users.user_id"), index=True)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)  # context "legacy-token:<serial>"
    algorithm: Mapped[str] = mapped_column(String(8))  # "totp" or "hotp"
    digits: Mapped[int] = mapped_column(Integer, default=6)
    counter: Mapped[int] = mapped_column(BigInteger, default=0)
    last_used_window: Mapped[int | None] = mapped_column(BigInteger)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class ImportRun(Base):
    """One import of one source file; ``byte_offset``/``line_number`` are where the next
    uncommitted line starts, committed with the rows before it, so a killed run resumes."""

    __tablename__ = "import_runs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    source: Mapped[str] = mapped_column(String(500))
    # SHA-256 over the size, the first and the last MiB: a resumed run reads the same file.
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    format: Mapped[str] = mapped_column(String(8))  # "jsonl" or "csv"
    byte_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    line_number: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_imported: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_unchanged: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[ImportStatus] = mapped_column(
        _enum(ImportStatus, "import_status"), default=ImportStatus.RUNNING
    )
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class ImportReject(Base):
    __tablename__ = "import_rejects"
    __table_args__ = (UniqueConstraint("run_id", "line_number", name="uq_import_rejects_line"),)

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("import_runs.id"), index=True)
    line_number: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500))  # what is wrong, never the row's secrets


class MigrationWave(Base):
    __tablename__ = "migration_waves"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # Who is in it, e.g. {"birth_year": [1940, 1949]} or {"bank": "Nordbank"}.
    cohort: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    starts_on: Mapped[dt.date] = mapped_column(Date)
    deadline: Mapped[dt.date] = mapped_column(Date)
    quota: Mapped[int] = mapped_column(Integer)  # people to invite in this wave
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class MigrationInvitation(Base):
    __tablename__ = "migration_invitations"

    user_id: Mapped[str] = mapped_column(ForeignKey("legacy_users.user_id"), primary_key=True)
    wave_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("migration_waves.id"), index=True)
    invited_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    reminders: Mapped[int] = mapped_column(Integer, default=0)


class MigrationFlow(Base):
    """One person's guided migration, a persisted state machine (its states and transitions
    belong to the migration service). One flow per legacy user: an abandoned flow resumes."""

    __tablename__ = "migration_flows"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(ForeignKey("legacy_users.user_id"), unique=True)
    wave_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("migration_waves.id"), index=True)
    channel: Mapped[ProofingChannel] = mapped_column(_enum(ProofingChannel, "flow_channel"))
    state: Mapped[str] = mapped_column(String(32), index=True)
    operator_ids: Mapped[list[str]] = mapped_column(Json, default=list)
    checks: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # what operators checked
    chosen: Mapped[list[str]] = mapped_column(Json, default=list)  # authenticator kinds
    identity_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identities.id"))
    credential_ids: Mapped[list[str]] = mapped_column(Json, default=list)
    pending_index: Mapped[str | None] = mapped_column(String(8))  # key-card index shown
    failures: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    abandoned_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    version: Mapped[int] = mapped_column(Integer)
    # The bank or centre whose operator started the flow (its customer once enrolled).
    organisation: Mapped[str | None] = mapped_column(String(80), index=True)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class MigrationEvent(Base):
    """Each step a flow takes (or fails, or drops at), for the weekly report."""

    __tablename__ = "migration_events"

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    flow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("migration_flows.id"), index=True)
    wave_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("migration_waves.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    step: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))  # "ok", "failed", "dropped", "reminded"
    channel: Mapped[ProofingChannel] = mapped_column(_enum(ProofingChannel, "event_channel"))
    kind: Mapped[str | None] = mapped_column(String(32))  # the authenticator kind, if any


# The tables of these classes, for the statements written in SQLAlchemy Core (the bulk import,
# the waves and the weekly report).
LEGACY_USERS = cast(Table, LegacyUser.__table__)
LEGACY_KEY_CARDS = cast(Table, LegacyKeyCard.__table__)
LEGACY_CODE_TOKENS = cast(Table, LegacyCodeToken.__table__)
IMPORT_RUNS = cast(Table, ImportRun.__table__)
IMPORT_REJECTS = cast(Table, ImportReject.__table__)
MIGRATION_WAVES = cast(Table, MigrationWave.__table__)
MIGRATION_INVITATIONS = cast(Table, MigrationInvitation.__table__)
MIGRATION_FLOWS = cast(Table, MigrationFlow.__table__)
MIGRATION_EVENTS = cast(Table, MigrationEvent.__table__)
