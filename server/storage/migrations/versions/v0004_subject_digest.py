"""A login keeps a keyed digest of the person number typed at identify, so decoy answers for
a number that matches no identity are the same in every login.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_transactions") as batch:
        batch.add_column(sa.Column("subject_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_transactions") as batch:
        batch.drop_column("subject_digest")
