"""Attacks on the audit log's history, on SQLite and PostgreSQL: a rewrite with every later hash
recomputed and the head moved, and a cut of the last entries, in any of the log's chains, each
made after the running service signed a checkpoint, are found by ``akkreditiv audit verify``
with no anchor given."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from akkreditiv.cli import app as cli
from server.app import create_app
from server.services.audit import append_with_retry, format_at
from server.services.audit_chain import AuditRecord, genesis, record_hash
from server.settings import Settings
from server.storage.audit_repositories import AuditRepository
from server.storage.engine import create_engine_for, session_factory

# ``settings`` (the server tests' fixture) keeps the keys, and so the checkpoints, in tmp_path.
# The service appends to three chains here, on both databases: one after another, each append
# takes the next chain in turn, so nine events are three in each.
CHAINS = 3
ENTRIES = 9


def serve(settings: Settings, events: int) -> None:
    """The service runs (started and stopped as ``akkreditiv serve`` would) and logs events."""
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        for n in range(events):
            append_with_retry(
                services.sessions,
                "credential.activated",
                actor="system",
                subject=f"c-{n}",
                details={},
                partitions=services.audit_partitions,
            )


@pytest.fixture
def chains(settings: Settings) -> Settings:
    """The server tests' settings, with the audit log in ``CHAINS`` chains."""
    return settings.model_copy(update={"audit_partitions": CHAINS})


def _verify(settings: Settings) -> tuple[int, str]:
    # Only where the database and the keys are: the checkpoint folder and its key follow them.
    result = CliRunner().invoke(
        cli,
        ["audit", "verify", "--database-url", settings.database_url],
        env={"AKKREDITIV_KEK_FILE": str(settings.kek_file)},
    )
    return result.exit_code, result.output


def rewrite_history(database_url: str, chain: int, seq: int) -> None:
    """Change entry ``seq`` of ``chain``: its actor, every later hash of the chain recomputed,
    and the chain's head moved."""
    engine = create_engine_for(database_url)
    with session_factory(engine).begin() as session:
        entries = AuditRepository(session).all_in_order(chain)
        prev_hash = entries[seq - 2].hash if seq > 1 else genesis(chain)
        for entry in entries[seq - 1 :]:
            record = AuditRecord(
                seq=entry.seq,
                at=format_at(entry.at),
                event=entry.event,
                actor="mallory" if entry.seq == seq else entry.actor,
                subject=entry.subject,
                details=entry.details,
            )
            digest = record_hash(prev_hash, record)
            session.execute(
                text(
                    "UPDATE audit_entries SET actor = :actor, prev_hash = :prev, hash = :hash "
                    "WHERE chain = :chain AND seq = :seq"
                ),
                {
                    "actor": record.actor,
                    "prev": prev_hash,
                    "hash": digest,
                    "chain": chain,
                    "seq": entry.seq,
                },
            )
            prev_hash = digest
        session.execute(
            text("UPDATE audit_heads SET seq = :seq, hash = :hash WHERE chain = :chain"),
            {"seq": entries[-1].seq, "hash": prev_hash, "chain": chain},
        )
    engine.dispose()


def cut_tail(database_url: str, chain: int, keep: int) -> None:
    """Delete every entry of ``chain`` after ``keep`` and move its head back to entry ``keep``."""
    engine = create_engine_for(database_url)
    with session_factory(engine).begin() as session:
        kept = AuditRepository(session).all_in_order(chain)[:keep]
        where = {"chain": chain, "keep": keep, "hash": kept[-1].hash if kept else genesis(chain)}
        session.execute(
            text("DELETE FROM audit_entries WHERE chain = :chain AND seq > :keep"), where
        )
        session.execute(
            text("UPDATE audit_heads SET seq = :keep, hash = :hash WHERE chain = :chain"), where
        )
    engine.dispose()


def _chain_lengths(database_url: str) -> list[int]:
    engine = create_engine_for(database_url)
    with session_factory(engine)() as session:
        heads = AuditRepository(session).heads()
    engine.dispose()
    return [head.seq for head in heads if head.seq]


@pytest.mark.parametrize("chain", [0, 2])
def test_verify_finds_a_rewritten_history_with_the_head_moved(chains: Settings, chain: int) -> None:
    serve(chains, ENTRIES)
    assert _chain_lengths(chains.database_url) == [3, 3, 3]
    assert _verify(chains)[0] == 0
    rewrite_history(chains.database_url, chain, 2)
    code, output = _verify(chains)
    assert code == 3, output
    assert f"entry 3 of chain {chain}: altered" in output
    assert "checkpoint" in output


@pytest.mark.parametrize("chain", [0, 1])
def test_verify_finds_a_cut_off_tail_with_the_head_moved_back(chains: Settings, chain: int) -> None:
    serve(chains, ENTRIES)
    cut_tail(chains.database_url, chain, 1)
    code, output = _verify(chains)
    assert code == 3, output
    assert f"entry 2 of chain {chain}: removed" in output


def test_verify_finds_a_chain_removed_whole(chains: Settings) -> None:
    serve(chains, ENTRIES)
    cut_tail(chains.database_url, 1, 0)
    code, output = _verify(chains)
    assert code == 3, output
    assert "entry 1 of chain 1: removed" in output


def test_the_service_signs_no_checkpoint_of_a_rewritten_history(chains: Settings) -> None:
    # The attacker rewrites, then waits for the service to sign the forged head: it does not.
    serve(chains, ENTRIES)
    rewrite_history(chains.database_url, 1, 2)
    serve(chains, 3)
    code, output = _verify(chains)
    assert code == 3, output


def test_verify_reports_a_checkpoint_whose_signature_does_not_verify(chains: Settings) -> None:
    serve(chains, ENTRIES)
    files = sorted((chains.kek_file.parent / "audit-checkpoints").iterdir())
    assert files, "the service wrote no checkpoint"
    checkpoints = files[0]
    lines = checkpoints.read_text().splitlines()
    header, payload, signature = lines[-1].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["heads"][1][1] = 1  # point a chain's signed head at an earlier entry: a cut passes
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    lines[-1] = f"{header}.{forged}.{signature}"
    checkpoints.write_text("\n".join(lines) + "\n")
    code, output = _verify(chains)
    assert code == 3, output
    assert "signature" in output
