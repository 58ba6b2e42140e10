"""The web pages: server-side browser sessions, and on a login the browser session that
claimed it (so a login finishes only in the browser that started it) and where the browser
returns when it is done.

Revision ID: 0005
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

BROWSER_KIND = ("anonymous", "citizen", "operator")  # frozen copy of the values at 0005


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    allowed = ", ".join(f"'{value}'" for value in BROWSER_KIND)
    op.create_table(
        "web_sessions",
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=True),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("operator_key", sa.String(64), nullable=True),
        sa.Column("operator_name", sa.String(128), nullable=True),
        sa.Column("operator_role", sa.String(128), nullable=True),
        sa.Column("data", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("token_digest", name=op.f("pk_web_sessions")),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_web_sessions_identity_id_identities")
        ),
        sa.CheckConstraint(f"kind IN ({allowed})", name=op.f("ck_web_sessions_browser_kind")),
    )
    op.create_index(op.f("ix_web_sessions_identity_id"), "web_sessions", ["identity_id"])
    op.create_index(op.f("ix_web_sessions_expires_at"), "web_sessions", ["expires_at"])
    with op.batch_alter_table("auth_transactions") as batch:
        batch.add_column(sa.Column("browser_binding", sa.String(64), nullable=True))
        batch.add_column(sa.Column("return_url", sa.String(2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_transactions") as batch:
        batch.drop_column("return_url")
        batch.drop_column("browser_binding")
    op.drop_table("web_sessions")
