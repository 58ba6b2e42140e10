"""Migrations of the audit log on SQLite and PostgreSQL: 0002 (the chain's head) starts the head
at the last entry already stored, the trigger moves it with every insert, and it downgrades
cleanly; 0011 (several chains) keeps the one chain as chain 0, with its old checkpoints."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import jwt
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Engine, column, inspect, table, text

from server.domain.model import AUDIT_CHAINS
from server.services.audit import AuditLog, AuditPartitions, format_at, verify_database
from server.services.audit_chain import GENESIS, Anchor, AuditRecord, genesis, record_hash
from server.services.audit_checkpoints import CHECKPOINT_TYPE, CheckpointKey, verify_checkpoint
from server.services.tokens_jwt import SigningKey
from server.storage.audit_repositories import AuditRepository
from server.storage.engine import (
    MIGRATIONS,
    _alembic_config,
    current_revision,
    migrate,
    session_factory,
)
from server.storage.tables import UtcDateTime
from tests.unit.server.storage.together import READY, run_together

AT = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


# audit_entries as migrations 0001 to 0010 leave it (one chain: no ``chain`` column).
_ONE_CHAIN = table(
    "audit_entries",
    *(column(name) for name in ("seq", "event", "actor", "subject", "prev_hash", "hash")),
    column("at", UtcDateTime()),
    column("details", JSON()),
)


def _insert_entry(
    engine: Engine,
    seq: int,
    *,
    prev_hash: str | None = None,
    digest: str | None = None,
    subject: str = "-",
    details: dict[str, Any] | None = None,
) -> str:
    """An entry of the one chain; a made-up hash and link unless given."""
    digest = digest or f"{seq:064x}"
    with engine.begin() as connection:
        connection.execute(
            _ONE_CHAIN.insert(),
            {
                "seq": seq,
                "at": AT,
                "event": "e",
                "actor": "system",
                "subject": subject,
                "details": details or {},
                "prev_hash": prev_hash or f"{seq - 1:064x}",
                "hash": digest,
            },
        )
    return digest


def _head(engine: Engine) -> Any:
    with engine.connect() as connection:
        return tuple(connection.execute(text("SELECT seq, hash FROM audit_head")).one())


def test_audit_head_starts_at_the_last_stored_entry_and_follows_inserts(
    empty_engine: Engine,
) -> None:
    migrate(empty_engine, "0001")
    _insert_entry(empty_engine, 1)
    second = _insert_entry(empty_engine, 2)

    migrate(empty_engine, "0002")

    assert _head(empty_engine) == (2, second)
    third = _insert_entry(empty_engine, 3)
    assert _head(empty_engine) == (3, third)


def test_audit_head_downgrades_to_plain_entries_and_upgrades_again(empty_engine: Engine) -> None:
    migrate(empty_engine, "0002")
    _insert_entry(empty_engine, 1)
    with empty_engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0001")
    assert current_revision(empty_engine) == "0001"
    assert "audit_head" not in inspect(empty_engine).get_table_names()
    last = _insert_entry(empty_engine, 2)  # no trigger left behind to fail the insert

    migrate(empty_engine, "0002")

    assert _head(empty_engine) == (2, last)


def test_processes_migrating_one_empty_database_at_once_all_succeed(
    database_url: str, empty_engine: Engine
) -> None:
    # As the workers of ``akkreditiv serve --workers N`` do when they start.
    script = (
        "import sys\n"
        "from server.storage.engine import create_engine_for, migrate\n"
        "engine = create_engine_for(sys.argv[1])\n"
        f"{READY}"
        "migrate(engine)\n"
    )
    run_together(script, [[database_url]] * 4)
    assert current_revision(empty_engine) == ScriptDirectory(str(MIGRATIONS)).get_current_head()


# --- migration 0011: the audit log in several chains -----------------------------------------


def _chain_before_0011(engine: Engine, count: int) -> list[tuple[int, str]]:
    """``count`` entries of a real chain, as the service wrote them before 0011: their
    ``(seq, hash)``."""
    prev, written = GENESIS, []
    for seq in range(1, count + 1):
        record = AuditRecord(seq, format_at(AT), "e", "system", f"s-{seq}", {"n": seq})
        digest = _insert_entry(
            engine,
            seq,
            prev_hash=prev,
            digest=record_hash(prev, record),
            subject=record.subject,
            details=record.details,
        )
        written.append((seq, digest))
        prev = digest
    return written


def _signed_before_0011(key: CheckpointKey, signing: SigningKey, seq: int, digest: str) -> str:
    """A checkpoint as the service signed them before 0011: one head, no chain."""
    payload = {"seq": seq, "hash": digest, "at": AT.isoformat()}
    return jwt.api_jws.PyJWS().encode(
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("ascii"),
        signing.private_key,
        algorithm="ES256",
        headers={"kid": key.key_id, "typ": CHECKPOINT_TYPE},
    )


def test_the_one_chain_becomes_chain_0_and_its_old_checkpoints_still_verify(
    empty_engine: Engine,
) -> None:
    migrate(empty_engine, "0010")
    written = _chain_before_0011(empty_engine, 4)
    signing = SigningKey.generate()
    key = CheckpointKey(signing)
    token = _signed_before_0011(key, signing, *written[-1])

    migrate(empty_engine)

    sessions = session_factory(empty_engine)
    with sessions() as session:
        heads = AuditRepository(session).heads()
        assert [entry.seq for entry in AuditRepository(session).all_in_order(0)] == [1, 2, 3, 4]
    assert len(heads) == AUDIT_CHAINS
    assert heads[0] == (0, *written[-1])
    assert all(head == (n, 0, genesis(n)) for n, head in enumerate(heads) if n)
    old = verify_checkpoint(token, {key.key_id: key.public_key()}, line=1)
    assert old.heads == (Anchor(0, *written[-1]),)
    partitions = AuditPartitions(4)
    for n in range(8):
        with sessions.begin() as session:
            AuditLog(session, partitions=partitions).append(
                "after", actor="system", subject=str(n), details={}
            )
    with sessions() as session:
        assert verify_database(session, anchors=old.heads) == 12
        assert len([head for head in AuditRepository(session).heads() if head.seq]) == 4


def test_0011_downgrades_while_chain_0_holds_every_entry(empty_engine: Engine) -> None:
    migrate(empty_engine, "0010")
    written = _chain_before_0011(empty_engine, 2)
    migrate(empty_engine)
    with empty_engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0010")
    assert _head(empty_engine) == written[-1]
    assert "audit_heads" not in inspect(empty_engine).get_table_names()
    _insert_entry(empty_engine, 3)  # the one chain, its trigger back in place
    assert _head(empty_engine)[0] == 3

    migrate(empty_engine)

    with session_factory(empty_engine)() as session:
        assert AuditRepository(session).head(0, lock=False)[0] == 3


def test_0011_refuses_to_downgrade_entries_of_other_chains(empty_engine: Engine) -> None:
    migrate(empty_engine)
    sessions = session_factory(empty_engine)
    partitions = AuditPartitions(2)
    for n in range(2):
        with sessions.begin() as session:
            AuditLog(session, partitions=partitions).append(
                "e", actor="system", subject=str(n), details={}
            )
    with empty_engine.begin() as connection, pytest.raises(RuntimeError, match="other than 0"):
        command.downgrade(_alembic_config(connection), "0010")
    # The later revisions went down; 0011 stays, with both chains.
    assert current_revision(empty_engine) == "0011"
    with sessions() as session:
        assert verify_database(session) == 2
        assert len([head for head in AuditRepository(session).heads() if head.seq]) == 2
