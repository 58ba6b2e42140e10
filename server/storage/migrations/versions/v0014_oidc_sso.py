"""Single sign-on of the OpenID Provider: ``oidc_sso_sessions``, one per browser and SSO group
(who, the level, when, with which credentials, the providers it served).

Revision ID: 0014
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "oidc_sso_sessions",
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("browser_binding", sa.String(64), nullable=False),
        sa.Column("sso_group", sa.String(64), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("amr", _json(), nullable=False),
        sa.Column("credentials", _json(), nullable=False),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("clients", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_oidc_sso_sessions")),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_oidc_sso_sessions_identity_id_identities"),
        ),
    )
    for column in ("browser_binding", "expires_at"):
        op.create_index(op.f(f"ix_oidc_sso_sessions_{column}"), "oidc_sso_sessions", [column])


def downgrade() -> None:
    op.drop_table("oidc_sso_sessions")
