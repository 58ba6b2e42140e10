"""The OpenID Provider: ``oidc_clients`` (registered relying parties), ``oidc_requests``
(authorization requests waiting for their login), ``oidc_codes`` and ``oidc_tokens`` (kept as
digests), ``oidc_assertion_ids`` (client assertion ids seen, so none is accepted twice).

Revision ID: 0013
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "oidc_clients",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("redirect_uris", _json(), nullable=False),
        sa.Column("jwks", _json(), nullable=True),
        sa.Column("jwks_uri", sa.String(2048), nullable=True),
        sa.Column("secret_digest", sa.String(64), nullable=True),
        sa.Column("post_logout_redirect_uris", _json(), nullable=False),
        sa.Column("backchannel_logout_uri", sa.String(2048), nullable=True),
        sa.Column("entitled", _json(), nullable=False),
        sa.Column("sso_group", sa.String(64), nullable=True),
        _when("created_at"),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_oidc_clients")),
    )
    op.create_table(
        "oidc_requests",
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("params", _json(), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        sa.PrimaryKeyConstraint("transaction_id", name=op.f("pk_oidc_requests")),
    )
    op.create_index(op.f("ix_oidc_requests_expires_at"), "oidc_requests", ["expires_at"])
    op.create_table(
        "oidc_codes",
        sa.Column("code_digest", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=False),
        sa.Column("redirect_uri", sa.String(2048), nullable=False),
        sa.Column("scope", sa.String(1024), nullable=False),
        sa.Column("nonce", sa.String(255), nullable=True),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("code_challenge_method", sa.String(16), nullable=False),
        sa.Column("acr", sa.String(128), nullable=False),
        sa.Column("amr", _json(), nullable=False),
        _when("auth_time"),
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("claims", _json(), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("used_at", nullable=True),
        sa.PrimaryKeyConstraint("code_digest", name=op.f("pk_oidc_codes")),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_oidc_codes_identity_id_identities")
        ),
    )
    op.create_index(op.f("ix_oidc_codes_expires_at"), "oidc_codes", ["expires_at"])
    op.create_table(
        "oidc_tokens",
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("code_digest", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(1024), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("token_digest", name=op.f("pk_oidc_tokens")),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_oidc_tokens_identity_id_identities")
        ),
    )
    op.create_index(op.f("ix_oidc_tokens_code_digest"), "oidc_tokens", ["code_digest"])
    op.create_index(op.f("ix_oidc_tokens_expires_at"), "oidc_tokens", ["expires_at"])
    op.create_table(
        "oidc_assertion_ids",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        _when("expires_at"),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_oidc_assertion_ids")),
    )
    op.create_index(op.f("ix_oidc_assertion_ids_expires_at"), "oidc_assertion_ids", ["expires_at"])


def downgrade() -> None:
    for table in ("oidc_assertion_ids", "oidc_tokens", "oidc_codes", "oidc_requests"):
        op.drop_table(table)
    op.drop_table("oidc_clients")
