"""The audit log as several hash chains: ``audit_entries`` gets a ``chain`` column (entries are
``(chain, seq)``, each chain numbered from 1 and linked on its own), and the one-row
``audit_head`` becomes ``audit_heads``, a row for each of the 64 possible chains, moved by a
trigger with every insert into its chain.

The chain that existed becomes chain 0 as it stands: its entries, hashes and head are kept, so
checkpoints signed before still verify. The other chains start at their own genesis hash
(``audit_chain.genesis``, copied here as it is at this revision).

Revision ID: 0011
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

from server.storage.migrations.versions import v0002_audit_head as one_chain

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

CHAINS = 64  # frozen copy of domain.model.AUDIT_CHAINS
GENESIS = "00" * 32  # frozen copy of audit_chain.GENESIS


def _genesis(chain: int) -> str:
    if chain == 0:
        return GENESIS
    return hashlib.sha256(f"akkreditiv audit chain {chain}".encode("ascii")).hexdigest()


_SQLITE_TRIGGER = """
CREATE TRIGGER audit_entries_move_head AFTER INSERT ON audit_entries
BEGIN
    UPDATE audit_heads SET seq = NEW.seq, hash = NEW.hash WHERE chain = NEW.chain;
END
"""

# SET search_path FROM CURRENT: the function finds audit_heads in the schema it was made in.
_POSTGRESQL_FUNCTION = """
CREATE FUNCTION audit_entries_move_head() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE audit_heads SET seq = NEW.seq, hash = NEW.hash WHERE chain = NEW.chain;
    RETURN NULL;
END
$$
"""


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _drop_trigger() -> None:
    if _postgresql():
        op.execute("DROP TRIGGER audit_entries_move_head ON audit_entries")
        op.execute("DROP FUNCTION audit_entries_move_head()")
    else:
        op.execute("DROP TRIGGER audit_entries_move_head")


def upgrade() -> None:
    _drop_trigger()
    heads = op.create_table(
        "audit_heads",
        sa.Column("chain", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_heads")),
        sa.CheckConstraint(
            f"chain >= 0 AND chain < {CHAINS}", name=op.f("ck_audit_heads_chain_range")
        ),
    )
    op.execute("INSERT INTO audit_heads (chain, seq, hash) SELECT 0, seq, hash FROM audit_head")
    op.bulk_insert(heads, [{"chain": n, "seq": 0, "hash": _genesis(n)} for n in range(1, CHAINS)])
    op.drop_table("audit_head")
    chain = sa.Column("chain", sa.SmallInteger(), nullable=False, server_default="0")
    if _postgresql():
        bind = op.get_bind()
        serial = bind.scalar(sa.text("SELECT pg_get_serial_sequence('audit_entries', 'seq')"))
        op.add_column("audit_entries", chain)
        op.drop_constraint("pk_audit_entries", "audit_entries", type_="primary")
        op.create_primary_key("pk_audit_entries", "audit_entries", ["chain", "seq"])
        # Each chain numbers its own entries (the append does): no sequence hands out seqs.
        op.execute("ALTER TABLE audit_entries ALTER COLUMN seq DROP DEFAULT")
        if serial is not None:
            op.execute(f"DROP SEQUENCE {serial}")
        op.execute(_POSTGRESQL_FUNCTION)
        op.execute(one_chain._POSTGRESQL_TRIGGER)  # the same trigger, calling the new function
    else:
        with op.batch_alter_table("audit_entries", recreate="always") as batch:
            batch.add_column(chain)
            batch.drop_constraint("pk_audit_entries", type_="primary")
            batch.create_primary_key("pk_audit_entries", ["chain", "seq"])
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    """Back to one chain, as migration 0002 left it (its trigger): possible only while every
    entry is in chain 0."""
    bind = op.get_bind()
    others = bind.scalar(sa.text("SELECT count(*) FROM audit_entries WHERE chain <> 0"))
    if others:
        raise RuntimeError(
            f"{others} audit entries are in chains other than 0: one chain cannot hold them"
        )
    _drop_trigger()
    one_chain.create_head_table()
    op.execute(
        "INSERT INTO audit_head (id, seq, hash) SELECT 1, seq, hash FROM audit_heads "
        "WHERE chain = 0"
    )
    op.drop_table("audit_heads")
    if _postgresql():
        op.drop_constraint("pk_audit_entries", "audit_entries", type_="primary")
        op.create_primary_key("pk_audit_entries", "audit_entries", ["seq"])
        op.drop_column("audit_entries", "chain")
        op.execute("CREATE SEQUENCE audit_entries_seq_seq OWNED BY audit_entries.seq")
        op.execute(
            "SELECT setval('audit_entries_seq_seq', "
            "COALESCE((SELECT max(seq) FROM audit_entries), 0) + 1, false)"
        )
        op.execute(
            "ALTER TABLE audit_entries ALTER COLUMN seq SET DEFAULT "
            "nextval('audit_entries_seq_seq')"
        )
        op.execute(one_chain._POSTGRESQL_FUNCTION)
        op.execute(one_chain._POSTGRESQL_TRIGGER)
    else:
        with op.batch_alter_table("audit_entries", recreate="always") as batch:
            batch.drop_constraint("pk_audit_entries", type_="primary")
            batch.drop_column("chain")
            batch.create_primary_key("pk_audit_entries", ["seq"])
        op.execute(one_chain._SQLITE_TRIGGER)
