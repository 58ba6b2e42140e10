"""Initial schema: identities, proofing, credentials, audit log, transactions, rate limits.

Revision ID: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values at this revision: later code changes must not rewrite history.
IDENTITY_STATUS = ("active", "suspended", "closed")
ASSURANCE = ("low", "substantial", "high")
CHANNELS = ("self_service", "bank", "service_centre")
CREDENTIAL_KINDS = (
    "password",
    "code_display",
    "audio_reader",
    "otp_token",
    "fido2",
    "piv",
    "key_card",
)
CREDENTIAL_STATES = (
    "ordered",
    "shipped",
    "activation_pending",
    "active",
    "blocked",
    "lost",
    "revoked",
    "replaced",
)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _one_of(table: str, column: str, name: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{table}_{name}"))


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("person_number", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("identity_assurance", sa.String(32), nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identities")),
        sa.UniqueConstraint("person_number", name=op.f("uq_identities_person_number")),
        _one_of("identities", "status", "identity_status", IDENTITY_STATUS),
        _one_of("identities", "identity_assurance", "identity_assurance", ASSURANCE),
    )
    op.create_table(
        "proofing_records",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("document_kind", sa.String(64), nullable=False),
        sa.Column("operator_ids", _json(), nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proofing_records")),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_proofing_records_identity_id_identities"),
        ),
        _one_of("proofing_records", "channel", "proofing_channel", CHANNELS),
        _one_of("proofing_records", "level", "proofing_level", ASSURANCE),
    )
    op.create_index(op.f("ix_proofing_records_identity_id"), "proofing_records", ["identity_id"])
    op.create_table(
        "credentials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("serial", sa.String(128), nullable=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("public_data", _json(), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("drift", sa.Integer(), nullable=False),
        sa.Column("last_used_window", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _when(), nullable=False),
        sa.Column("updated_at", _when(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_credentials_identity_id_identities")
        ),
        _one_of("credentials", "kind", "credential_kind", CREDENTIAL_KINDS),
        _one_of("credentials", "state", "credential_state", CREDENTIAL_STATES),
    )
    op.create_index(op.f("ix_credentials_identity_id"), "credentials", ["identity_id"])
    op.create_index(op.f("ix_credentials_serial"), "credentials", ["serial"])
    op.create_table(
        "audit_entries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", _when(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(128), nullable=True),
        sa.Column("details", _json(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_entries_prev_hash")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_entries_hash")),
    )
    op.create_table(
        "auth_transactions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("service_provider", sa.String(128), nullable=False),
        sa.Column("min_level", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=True),
        sa.Column("factors", _json(), nullable=False),
        sa.Column("challenge", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _when(), nullable=False),
        sa.Column("expires_at", _when(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_transactions")),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_auth_transactions_identity_id_identities"),
        ),
        _one_of("auth_transactions", "min_level", "min_level", ASSURANCE),
    )
    op.create_index(op.f("ix_auth_transactions_expires_at"), "auth_transactions", ["expires_at"])
    op.create_index(op.f("ix_auth_transactions_identity_id"), "auth_transactions", ["identity_id"])
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", _when(), nullable=False),
        sa.Column("locked_until", _when(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
    op.drop_index(op.f("ix_auth_transactions_identity_id"), table_name="auth_transactions")
    op.drop_index(op.f("ix_auth_transactions_expires_at"), table_name="auth_transactions")
    op.drop_table("auth_transactions")
    op.drop_table("audit_entries")
    op.drop_index(op.f("ix_credentials_serial"), table_name="credentials")
    op.drop_index(op.f("ix_credentials_identity_id"), table_name="credentials")
    op.drop_table("credentials")
    op.drop_index(op.f("ix_proofing_records_identity_id"), table_name="proofing_records")
    op.drop_table("proofing_records")
    op.drop_table("identities")
