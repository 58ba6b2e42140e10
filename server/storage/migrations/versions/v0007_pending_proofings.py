"""Two operators means two keys: a High proofing waits in ``pending_proofings`` for a second
operator's approval; a proofing record and a migration flow keep the organisation (bank or
citizen service centre) whose operator made them.

Revision ID: 0007
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values at 0007.
CHANNELS = ("self_service", "bank", "service_centre")
STATES = ("waiting", "approved", "cancelled")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _one_of(column: str, name: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_pending_proofings_{name}"))


def upgrade() -> None:
    op.create_table(
        "pending_proofings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=True),
        sa.Column("flow_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("document_kind", sa.String(64), nullable=False),
        sa.Column("organisation", sa.String(80), nullable=False),
        sa.Column("first_key_id", sa.String(16), nullable=False),
        sa.Column("first_operator", sa.String(128), nullable=False),
        sa.Column("named_operators", _json(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("approver_key_id", sa.String(16), nullable=True),
        sa.Column("approver", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_proofings")),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_pending_proofings_identity_id_identities"),
        ),
        _one_of("channel", "pending_proofing_channel", CHANNELS),
        _one_of("state", "pending_proofing_state", STATES),
    )
    for column in ("identity_id", "flow_id", "organisation"):
        op.create_index(op.f(f"ix_pending_proofings_{column}"), "pending_proofings", [column])
    for table in ("proofing_records", "migration_flows"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("organisation", sa.String(80), nullable=True))
        op.create_index(op.f(f"ix_{table}_organisation"), table, ["organisation"])


def downgrade() -> None:
    for table in ("migration_flows", "proofing_records"):
        op.drop_index(op.f(f"ix_{table}_organisation"), table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("organisation")
    op.drop_table("pending_proofings")
