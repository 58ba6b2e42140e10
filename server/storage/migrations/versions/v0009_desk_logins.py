"""A person who logs in at a bank's desk becomes its customer: ``desk_logins`` keeps each such
login (the person, the organisation, the login, the operator's key, the level reached).

Revision ID: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

# A frozen copy of the values at 0009.
ASSURANCE = ("low", "substantial", "high")


def upgrade() -> None:
    allowed = ", ".join(f"'{value}'" for value in ASSURANCE)
    op.create_table(
        "desk_logins",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=False),
        sa.Column("organisation", sa.String(80), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("operator_key_id", sa.String(16), nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desk_logins")),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_desk_logins_identity_id_identities")
        ),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_desk_logins_transaction_id")),
        sa.CheckConstraint(f"level IN ({allowed})", name=op.f("ck_desk_logins_desk_login_level")),
    )
    for column in ("identity_id", "organisation"):
        op.create_index(op.f(f"ix_desk_logins_{column}"), "desk_logins", [column])


def downgrade() -> None:
    op.drop_table("desk_logins")
