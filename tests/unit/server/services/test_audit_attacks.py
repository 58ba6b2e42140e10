"""Attacks on the audit log's history, on SQLite and PostgreSQL: a rewrite with every later hash
recomputed and the head moved, and a cut of the last entries, each made after the running
service signed a checkpoint, are found by ``akkreditiv audit verify`` with no anchor given."""

from __future__ import annotations

import base64
import json

from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from akkreditiv.cli import app as cli
from server.app import create_app
from server.services.audit import append_with_retry, format_at
from server.services.audit_chain import AuditRecord, record_hash
from server.settings import Settings
from server.storage.engine import create_engine_for, session_factory
from server.storage.repositories import AuditRepository

# ``settings`` (the server tests' fixture) keeps the keys, and so the checkpoints, in tmp_path.
ENTRIES = 6


def serve(settings: Settings, events: int) -> None:
    """The service runs (started and stopped as ``akkreditiv serve`` would) and logs events."""
    with TestClient(create_app(settings)) as client:
        sessions = client.app.state.services.sessions  # type: ignore[attr-defined]
        for n in range(events):
            append_with_retry(
                sessions, "credential.activated", actor="system", subject=f"c-{n}", details={}
            )


def _verify(settings: Settings) -> tuple[int, str]:
    # Only where the database and the keys are: the checkpoint folder and its key follow them.
    result = CliRunner().invoke(
        cli,
        ["audit", "verify", "--database-url", settings.database_url],
        env={"AKKREDITIV_KEK_FILE": str(settings.kek_file)},
    )
    return result.exit_code, result.output


def rewrite_history(database_url: str, seq: int) -> None:
    """Change entry ``seq``'s actor, recompute every hash from it on, and move the head."""
    engine = create_engine_for(database_url)
    with session_factory(engine).begin() as session:
        entries = AuditRepository(session).all_in_order()
        prev_hash = entries[seq - 2].hash if seq > 1 else "00" * 32
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
                    "WHERE seq = :seq"
                ),
                {"actor": record.actor, "prev": prev_hash, "hash": digest, "seq": entry.seq},
            )
            prev_hash = digest
        session.execute(
            text("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"),
            {"seq": entries[-1].seq, "hash": prev_hash},
        )
    engine.dispose()


def cut_tail(database_url: str, keep: int) -> None:
    """Delete every entry after ``keep`` and move the head back to entry ``keep``."""
    engine = create_engine_for(database_url)
    with session_factory(engine).begin() as session:
        session.execute(text("DELETE FROM audit_entries WHERE seq > :keep"), {"keep": keep})
        session.execute(
            text(
                "UPDATE audit_head SET seq = :keep, "
                "hash = (SELECT hash FROM audit_entries WHERE seq = :keep) WHERE id = 1"
            ),
            {"keep": keep},
        )
    engine.dispose()


def test_verify_finds_a_rewritten_history_with_the_head_moved(settings: Settings) -> None:
    serve(settings, ENTRIES)
    assert _verify(settings)[0] == 0
    rewrite_history(settings.database_url, 3)
    code, output = _verify(settings)
    assert code == 3, output
    assert "entry 6" in output
    assert "checkpoint" in output


def test_verify_finds_a_cut_off_tail_with_the_head_moved_back(settings: Settings) -> None:
    serve(settings, ENTRIES)
    cut_tail(settings.database_url, 4)
    code, output = _verify(settings)
    assert code == 3, output
    assert "entry 5" in output
    assert "removed" in output


def test_the_service_signs_no_checkpoint_of_a_rewritten_history(settings: Settings) -> None:
    # The attacker rewrites, then waits for the service to sign the forged head: it does not.
    serve(settings, ENTRIES)
    rewrite_history(settings.database_url, 2)
    serve(settings, 2)
    code, output = _verify(settings)
    assert code == 3, output


def test_verify_reports_a_checkpoint_whose_signature_does_not_verify(settings: Settings) -> None:
    serve(settings, ENTRIES)
    files = sorted((settings.kek_file.parent / "audit-checkpoints").iterdir())
    assert files, "the service wrote no checkpoint"
    checkpoints = files[0]
    lines = checkpoints.read_text().splitlines()
    header, payload, signature = lines[-1].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["seq"] = 4  # point the signed head at an earlier entry, so a cut would pass
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    lines[-1] = f"{header}.{forged}.{signature}"
    checkpoints.write_text("\n".join(lines) + "\n")
    code, output = _verify(settings)
    assert code == 3, output
    assert "signature" in output
