"""The audit chain's head: one row with the last entry's ``seq`` and ``hash``, moved by a
trigger on every insert into ``audit_entries``.

An append locks and reads this row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write
transaction holds the database already) instead of taking an advisory lock and looking for the
highest ``seq``; the trigger moves the head in the same statement as the insert, so the head can
never disagree with a committed entry, whoever inserted it. Existing entries seed the head.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

GENESIS = "00" * 32  # frozen copy of audit_chain.GENESIS

_SEED = """
INSERT INTO audit_head (id, seq, hash) VALUES (
    1,
    COALESCE((SELECT seq FROM audit_entries ORDER BY seq DESC LIMIT 1), 0),
    COALESCE((SELECT hash FROM audit_entries ORDER BY seq DESC LIMIT 1), :genesis)
)
"""

_SQLITE_TRIGGER = """
CREATE TRIGGER audit_entries_move_head AFTER INSERT ON audit_entries
BEGIN
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
END
"""

# SET search_path FROM CURRENT: the function finds audit_head in the schema it was made in,
# whatever the search path of the session that inserts.
_POSTGRESQL_FUNCTION = """
CREATE FUNCTION audit_entries_move_head() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
    RETURN NULL;
END
$$
"""

_POSTGRESQL_TRIGGER = """
CREATE TRIGGER audit_entries_move_head AFTER INSERT ON audit_entries
FOR EACH ROW EXECUTE FUNCTION audit_entries_move_head()
"""


def create_head_table() -> None:
    """The one-row table, empty (migration 0011's downgrade makes it again)."""
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_head_one_row")),
    )


def upgrade() -> None:
    create_head_table()
    op.execute(sa.text(_SEED).bindparams(genesis=GENESIS))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRESQL_FUNCTION)
        op.execute(_POSTGRESQL_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_entries_move_head ON audit_entries")
        op.execute("DROP FUNCTION audit_entries_move_head()")
    else:
        op.execute("DROP TRIGGER audit_entries_move_head")
    op.drop_table("audit_head")
