"""Failures throttle, they no longer lock: ``throttles`` keeps one decaying counter per key
(a source network; a person from one source network; a person anywhere, for the alert) as the
theoretical arrival time of the generic cell rate algorithm, in milliseconds; a code token or
key card is blocked for a while (``blocked_until``, growing with ``blocks``), not for good.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "throttles",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("tat_ms", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_throttles")),
    )
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("blocks", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("blocks")
        batch.drop_column("blocked_until")
    op.drop_table("throttles")
