"""The algorithm of a relying party's ID tokens: ``oidc_clients.id_token_alg``, ES256 unless
the provider was registered for RS256.

Revision ID: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("oidc_clients") as batch:
        batch.add_column(
            sa.Column("id_token_alg", sa.String(8), nullable=False, server_default="ES256")
        )


def downgrade() -> None:
    with op.batch_alter_table("oidc_clients") as batch:
        batch.drop_column("id_token_alg")
