"""The move from the legacy eID: legacy users, key cards and code tokens, import runs and
rejected rows, migration waves, invitations, flows and their step events.

Revision ID: 0003
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values at this revision.
LEGACY_USER_STATUS = ("active", "migrated", "closed")
KEY_CARD_STATUS = ("active", "exhausted", "replaced")
IMPORT_STATUS = ("running", "completed", "failed")
CHANNELS = ("self_service", "bank", "service_centre")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _serial() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _one_of(table: str, column: str, name: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{table}_{name}"))


def _fk(table: str, column: str, target: str, target_column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.{target_column}"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def _index(table: str, column: str) -> None:
    op.create_index(op.f(f"ix_{table}_{column}"), table, [column])


def upgrade() -> None:
    op.create_table(
        "legacy_users",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("person_number", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("birth_year", sa.Integer(), nullable=False),
        sa.Column("bank", sa.String(64), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", _when(), nullable=True),
        sa.Column("identity_id", sa.Uuid(), nullable=True),
        sa.Column("migrated_at", _when(), nullable=True),
        sa.Column("row_digest", sa.String(64), nullable=False),
        sa.Column("imported_at", _when(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_legacy_users")),
        sa.UniqueConstraint("person_number", name=op.f("uq_legacy_users_person_number")),
        _fk("legacy_users", "identity_id", "identities", "id"),
        _one_of("legacy_users", "status", "legacy_user_status", LEGACY_USER_STATUS),
    )
    _index("legacy_users", "birth_year")
    _index("legacy_users", "bank")
    op.create_table(
        "legacy_key_cards",
        sa.Column("serial", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
        sa.Column("used", sa.LargeBinary(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("issued_at", _when(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_legacy_key_cards")),
        _fk("legacy_key_cards", "user_id", "legacy_users", "user_id"),
        _one_of("legacy_key_cards", "status", "key_card_status", KEY_CARD_STATUS),
    )
    _index("legacy_key_cards", "user_id")
    op.create_table(
        "legacy_code_tokens",
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
        sa.Column("algorithm", sa.String(8), nullable=False),
        sa.Column("digits", sa.Integer(), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("last_used_window", sa.BigInteger(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_legacy_code_tokens")),
        _fk("legacy_code_tokens", "user_id", "legacy_users", "user_id"),
    )
    _index("legacy_code_tokens", "user_id")
    op.create_table(
        "import_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("line_number", sa.BigInteger(), nullable=False),
        sa.Column("rows_imported", sa.BigInteger(), nullable=False),
        sa.Column("rows_unchanged", sa.BigInteger(), nullable=False),
        sa.Column("rows_rejected", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("started_at", _when(), nullable=False),
        sa.Column("updated_at", _when(), nullable=False),
        sa.Column("finished_at", _when(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_runs")),
        _one_of("import_runs", "status", "import_status", IMPORT_STATUS),
    )
    _index("import_runs", "fingerprint")
    op.create_table(
        "import_rejects",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("line_number", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_rejects")),
        sa.UniqueConstraint("run_id", "line_number", name=op.f("uq_import_rejects_line")),
        _fk("import_rejects", "run_id", "import_runs", "id"),
    )
    _index("import_rejects", "run_id")
    op.create_table(
        "migration_waves",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("cohort", _json(), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("deadline", sa.Date(), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_waves")),
        sa.UniqueConstraint("name", name=op.f("uq_migration_waves_name")),
    )
    op.create_table(
        "migration_invitations",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("wave_id", sa.Uuid(), nullable=False),
        sa.Column("invited_at", _when(), nullable=False),
        sa.Column("reminded_at", _when(), nullable=True),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_migration_invitations")),
        _fk("migration_invitations", "user_id", "legacy_users", "user_id"),
        _fk("migration_invitations", "wave_id", "migration_waves", "id"),
    )
    _index("migration_invitations", "wave_id")
    _index("migration_invitations", "invited_at")
    op.create_table(
        "migration_flows",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("wave_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("operator_ids", _json(), nullable=False),
        sa.Column("checks", _json(), nullable=False),
        sa.Column("chosen", _json(), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=True),
        sa.Column("credential_ids", _json(), nullable=False),
        sa.Column("pending_index", sa.String(8), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("started_at", _when(), nullable=False),
        sa.Column("updated_at", _when(), nullable=False),
        sa.Column("completed_at", _when(), nullable=True),
        sa.Column("abandoned_at", _when(), nullable=True),
        sa.Column("reminded_at", _when(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_flows")),
        sa.UniqueConstraint("user_id", name=op.f("uq_migration_flows_user_id")),
        _fk("migration_flows", "user_id", "legacy_users", "user_id"),
        _fk("migration_flows", "wave_id", "migration_waves", "id"),
        _fk("migration_flows", "identity_id", "identities", "id"),
        _one_of("migration_flows", "channel", "flow_channel", CHANNELS),
    )
    _index("migration_flows", "wave_id")
    _index("migration_flows", "state")
    _index("migration_flows", "updated_at")
    op.create_table(
        "migration_events",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("wave_id", sa.Uuid(), nullable=True),
        sa.Column("at", _when(), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_events")),
        _fk("migration_events", "flow_id", "migration_flows", "id"),
        _fk("migration_events", "wave_id", "migration_waves", "id"),
        _one_of("migration_events", "channel", "event_channel", CHANNELS),
    )
    _index("migration_events", "flow_id")
    _index("migration_events", "wave_id")
    _index("migration_events", "at")


def downgrade() -> None:
    for table in (
        "migration_events",
        "migration_flows",
        "migration_invitations",
        "migration_waves",
        "import_rejects",
        "import_runs",
        "legacy_code_tokens",
        "legacy_key_cards",
        "legacy_users",
    ):
        op.drop_table(table)
