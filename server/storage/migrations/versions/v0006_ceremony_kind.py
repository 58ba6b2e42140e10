"""Every ceremony row says what it is: a ``kind`` (login, legacy login, FIDO2 registration, PIV
enrolment) instead of a prefix in ``service_provider``, and a ``ceremony_state`` holding what
a library gives to keep between its steps (python-fido2's registration state), as given.

Rows written before: the kind is read from the old prefixes, which are taken off (a legacy
login keeps its provider; a registration or an enrolment keeps its identity in
``identity_id``); an open FIDO2 registration's state moves into ``ceremony_state``.

Revision ID: 0006
"""

from __future__ import annotations

import base64
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values at 0006.
CEREMONY_KIND = ("login", "legacy_login", "fido_registration", "piv_enrolment")
PREFIXES = {
    "legacy_login": "legacy-login:",
    "fido_registration": "fido-registration:",
    "piv_enrolment": "piv-enrolment:",
}
OPEN = "open"
FIDO_OPEN_PREFIX = "fido-reg:"
PIV_OPEN = "piv-enrol"


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _websafe(data: bytes) -> str:
    # python-fido2's websafe_encode: URL-safe base64 without padding.
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _table() -> sa.TableClause:
    return sa.table(
        "auth_transactions",
        sa.column("id", sa.Uuid()),
        sa.column("kind", sa.String(32)),
        sa.column("service_provider", sa.String(128)),
        sa.column("identity_id", sa.Uuid()),
        sa.column("state", sa.String(32)),
        sa.column("challenge", sa.LargeBinary()),
        sa.column("ceremony_state", _json()),
    )


def upgrade() -> None:
    allowed = ", ".join(f"'{value}'" for value in CEREMONY_KIND)
    with op.batch_alter_table("auth_transactions") as batch:
        batch.add_column(sa.Column("kind", sa.String(32), nullable=False, server_default="login"))
        batch.add_column(sa.Column("ceremony_state", _json(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_auth_transactions_ceremony_kind"), f"kind IN ({allowed})"
        )
    table = sa.table(
        "auth_transactions",
        sa.column("id", sa.Uuid()),
        sa.column("kind", sa.String(32)),
        sa.column("service_provider", sa.String(128)),
        sa.column("state", sa.String(32)),
        sa.column("challenge", sa.LargeBinary()),
        sa.column("ceremony_state", _json()),
    )
    bind = op.get_bind()
    for kind, prefix in PREFIXES.items():
        rows = bind.execute(
            sa.select(table.c.id, table.c.service_provider, table.c.state, table.c.challenge).where(
                table.c.service_provider.startswith(prefix)
            )
        ).all()
        for row in rows:
            values: dict[str, Any] = {"kind": kind}
            if kind == "legacy_login":
                values["service_provider"] = row.service_provider[len(prefix) :]
            else:
                values["service_provider"] = ""
            if kind == "fido_registration" and row.state.startswith(FIDO_OPEN_PREFIX):
                values["state"] = OPEN
                values["ceremony_state"] = {
                    "challenge": _websafe(row.challenge or b""),
                    "user_verification": row.state[len(FIDO_OPEN_PREFIX) :],
                }
                values["challenge"] = None
            if kind == "piv_enrolment" and row.state == PIV_OPEN:
                values["state"] = OPEN
            bind.execute(table.update().where(table.c.id == row.id).values(**values))


def downgrade() -> None:
    # The prefixes come back; a registration or enrolment still open is closed (its state had
    # another shape before), which only asks the person to begin it again.
    table = _table()
    for kind, prefix in PREFIXES.items():
        owner = (
            table.c.service_provider
            if kind == "legacy_login"
            else sa.cast(table.c.identity_id, sa.String(64))
        )
        op.execute(
            table.update()
            .where(table.c.kind == kind)
            .values(service_provider=sa.literal(prefix) + owner)
        )
    op.execute(
        table.update()
        .where(table.c.kind.in_(["fido_registration", "piv_enrolment"]), table.c.state == OPEN)
        .values(state="failed")
    )
    with op.batch_alter_table("auth_transactions") as batch:
        batch.drop_constraint(op.f("ck_auth_transactions_ceremony_kind"), type_="check")
        batch.drop_column("ceremony_state")
        batch.drop_column("kind")
