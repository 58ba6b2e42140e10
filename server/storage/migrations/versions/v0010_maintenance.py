"""The sweep of what expired: ``maintenance_leases`` lets one process at a time do a periodic
task (the sweep), whoever holds a task's row until its ``until``; ``throttles`` gets an index
on ``tat_ms``, so the counters that have drained are found without reading them all.

Revision ID: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "maintenance_leases",
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task", name=op.f("pk_maintenance_leases")),
    )
    op.create_index(op.f("ix_throttles_tat_ms"), "throttles", ["tat_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_throttles_tat_ms"), table_name="throttles")
    op.drop_table("maintenance_leases")
