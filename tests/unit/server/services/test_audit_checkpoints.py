"""The audit chain's signed checkpoints on SQLite and PostgreSQL: when the service signs one,
that workers appending at once sign each head once, what it refuses to sign, the download
route, and ``akkreditiv audit verify`` with its options."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from akkreditiv.cli import app as cli
from server.app import create_app
from server.services.access import Role
from server.services.audit import (
    POSTGRESQL_PARTITIONS,
    AuditLog,
    AuditPartitions,
    append_with_retry,
    verify_database,
)
from server.services.audit_chain import Anchor
from server.services.audit_checkpointer import Checkpointer, CheckpointPolicy
from server.services.audit_checkpoints import (
    CHECKPOINT_TYPE,
    CheckpointFile,
    CheckpointKey,
    CheckpointRejected,
    public_keys,
    verify_checkpoint,
)
from server.services.errors import AuditChainBroken, Breakage
from server.services.tokens_jwt import SigningKey
from server.settings import Settings
from server.storage.audit_repositories import AuditRepository
from server.storage.engine import create_engine_for, migrate, session_factory
from tests.unit.server.conftest import make_key
from tests.unit.server.services.test_audit_attacks import cut_tail, serve
from tests.unit.server.storage import conftest as storage

database_url = storage.database_url
empty_engine = storage.empty_engine
engine = storage.engine
sessions = storage.sessions

START = 1_777_000_000.0
AT = dt.datetime.fromtimestamp(START, dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _append(sessions: sessionmaker[Session], count: int) -> None:
    for n in range(count):
        append_with_retry(
            sessions, "tick", actor="system", subject=str(n), details={}, attempts=100
        )


def _checkpointer(
    sessions: sessionmaker[Session],
    folder: Path,
    *,
    entries: int = 5,
    seconds: float = 60,
    clock: Callable[[], float] = time.time,
) -> Checkpointer:
    return Checkpointer(
        sessions,
        CheckpointKey.from_file(folder / "checkpoint-key.pem", create=True),
        CheckpointFile(folder / "checkpoints"),
        CheckpointPolicy(every_entries=entries, every_s=seconds),
        clock=clock,
        poll_s=0.05,
    )


def _seqs(checkpointer: Checkpointer) -> list[int]:
    """How many entries the log held at each checkpoint."""
    return [checkpoint.entries for checkpoint in checkpointer.checkpoints()]


def test_a_checkpoint_is_due_every_n_entries_and_every_m_seconds(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    clock = Clock()
    checkpointer = _checkpointer(sessions, tmp_path, entries=5, seconds=60, clock=clock)
    assert checkpointer.checkpoint_if_due() is None  # an empty chain has nothing to anchor
    _append(sessions, 1)
    first = checkpointer.checkpoint_if_due()
    assert first is not None
    assert first.heads == (Anchor(0, 1, first.heads[0].hash),)  # anchored at once
    _append(sessions, 3)
    assert checkpointer.checkpoint_if_due() is None  # 3 entries, 0 seconds: not yet
    _append(sessions, 2)
    assert _seqs(checkpointer) == [1]
    assert checkpointer.checkpoint_if_due() is not None  # 5 entries since the last
    _append(sessions, 1)
    clock.now += 59
    assert checkpointer.checkpoint_if_due() is None
    clock.now += 1
    assert checkpointer.checkpoint_if_due() is not None  # 60 seconds since the last
    clock.now += 600
    assert checkpointer.checkpoint_if_due() is None  # the head did not move: nothing to sign
    assert checkpointer.checkpoint_if_due(force=True) is None
    assert _seqs(checkpointer) == [1, 6, 7]
    with sessions() as session:
        head = AuditRepository(session).head(lock=False)
    assert checkpointer.checkpoints()[-1].heads == (Anchor(0, *head),)


def test_a_checkpoint_reads_its_stretch_of_the_chain_in_a_few_statements(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The stretch since the last checkpoint is read at once and hashed after the read ends:
    not one statement an entry (each entry was loaded again after the rollback)."""
    checkpointer = _checkpointer(sessions, tmp_path, entries=1)
    _append(sessions, 1)
    checkpointer.checkpoint_if_due()
    _append(sessions, 40)
    statements: list[str] = []
    engine = sessions.kw["bind"]

    def record(*args: object) -> None:
        statements.append(str(args[2]).split()[0])

    event.listen(engine, "before_cursor_execute", record)
    try:
        checkpoint = checkpointer.checkpoint_if_due()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert checkpoint is not None
    assert checkpoint.entries == 41
    assert len([word for word in statements if word == "SELECT"]) <= 3


def test_an_entry_noticed_in_its_transaction_makes_the_checkpoint_due(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    checkpointer = _checkpointer(sessions, tmp_path, entries=3)
    _append(sessions, 1)
    checkpointer.checkpoint_if_due()
    _append(sessions, 2)
    # The third entry is appended but not committed: the two before it are signed.
    with sessions.begin() as session:
        entry = AuditLog(session).append("tick", actor="system", subject="3", details={})
        checkpointer.noticed(entry.chain, entry.seq)
        assert checkpointer.checkpoint_if_due() is not None
    assert _seqs(checkpointer) == [1, 3]


def test_workers_signing_at_once_sign_each_head_once(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    workers = [_checkpointer(sessions, tmp_path) for _ in range(4)]
    errors: list[BaseException] = []

    def work(checkpointer: Checkpointer) -> None:
        try:
            for _ in range(5):
                _append(sessions, 1)
                checkpointer.checkpoint_if_due(force=True)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    seqs = _seqs(workers[0])
    assert seqs == sorted(set(seqs))
    assert seqs[-1] == 20
    lines = (tmp_path / "checkpoints" / "checkpoints.jws").read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert len(lines) == len(seqs) + 1


def test_a_checkpoint_binds_the_head_of_every_chain(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    checkpointer = _checkpointer(sessions, tmp_path, entries=100)
    partitions = AuditPartitions(4)
    for n in range(10):
        append_with_retry(
            sessions, "tick", actor="system", subject=str(n), details={}, partitions=partitions
        )
    signed = checkpointer.checkpoint_if_due()
    assert signed is not None
    with sessions() as session:
        heads = AuditRepository(session).heads()
    assert signed.heads == tuple(Anchor(*head) for head in heads if head.seq)
    assert sorted(head.seq for head in signed.heads) == [2, 2, 3, 3]
    assert signed.entries == 10
    # A chain cut after it was signed: the next checkpoint is refused, verify finds it.
    last = signed.heads[-1]
    with sessions.begin() as session:
        session.execute(
            text("DELETE FROM audit_entries WHERE chain = :chain AND seq = :seq"),
            {"chain": last.chain, "seq": last.seq},
        )
        session.execute(
            text("UPDATE audit_heads SET seq = seq - 1 WHERE chain = :chain"),
            {"chain": last.chain},
        )
    with pytest.raises(AuditChainBroken) as refused:
        checkpointer.checkpoint_if_due(force=True)
    with sessions() as session, pytest.raises(AuditChainBroken) as found:
        verify_database(session, anchors=signed.heads)
    for caught in (refused, found):
        assert (caught.value.chain, caught.value.seq) == (last.chain, last.seq)
        assert caught.value.reason is Breakage.REMOVED


def test_a_chain_cut_below_the_last_checkpoint_is_not_signed(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    checkpointer = _checkpointer(sessions, tmp_path)
    _append(sessions, 4)
    checkpointer.checkpoint_if_due()
    with sessions.begin() as session:
        session.execute(text("DELETE FROM audit_entries WHERE seq > 2"))
        session.execute(
            text(
                "UPDATE audit_heads SET seq = 2, hash = "
                "(SELECT hash FROM audit_entries WHERE seq = 2) WHERE chain = 0"
            )
        )
    _append(sessions, 5)  # the chain grows again past the checkpoint, on a forged base
    with pytest.raises(AuditChainBroken) as caught:
        checkpointer.checkpoint_if_due(force=True)
    assert caught.value.reason is Breakage.ALTERED
    assert _seqs(checkpointer) == [4]


def test_a_head_moved_back_is_not_signed(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    checkpointer = _checkpointer(sessions, tmp_path)
    _append(sessions, 4)
    checkpointer.checkpoint_if_due()
    with sessions.begin() as session:
        session.execute(text("UPDATE audit_heads SET seq = 3 WHERE chain = 0"))
    with pytest.raises(AuditChainBroken) as caught:
        checkpointer.checkpoint_if_due(force=True)
    assert (caught.value.seq, caught.value.reason) == (4, Breakage.REMOVED)


def test_a_forged_last_line_stops_the_signing(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    checkpointer = _checkpointer(sessions, tmp_path)
    _append(sessions, 2)
    stranger = CheckpointKey(SigningKey.generate())
    with checkpointer.file.locked() as file:
        file.append(stranger.sign([Anchor(0, 2, "ab" * 32)], AT))
    _append(sessions, 1)
    with pytest.raises(CheckpointRejected, match="unknown key"):
        checkpointer.checkpoint_if_due(force=True)


def test_the_thread_signs_when_due_and_at_stop(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    checkpointer = _checkpointer(sessions, tmp_path, entries=3, seconds=3600)
    _append(sessions, 1)
    checkpointer.start()  # signs the head found at start
    try:
        for _ in range(3):
            with sessions.begin() as session:
                entry = AuditLog(session).append("tick", actor="system", subject="s", details={})
            checkpointer.noticed(entry.chain, entry.seq)
        deadline = time.monotonic() + 10
        while _seqs(checkpointer)[-1] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        _append(sessions, 1)
    finally:
        checkpointer.stop()
    assert _seqs(checkpointer) == [1, 4, 5]


def test_a_checkpoint_signed_with_another_type_or_key_is_rejected() -> None:
    signing = SigningKey.generate()
    key = CheckpointKey(signing)
    keys = {key.key_id: key.public_key()}
    good = key.sign([Anchor(0, 3, "cd" * 32)], AT)
    assert verify_checkpoint(good.token, keys, line=1) == good
    # The same key signing an assertion (a JWT) that names a seq and a hash is no checkpoint.
    assertion = signing.signer().sign(
        {"iss": "i", "sub": "s", "aud": "a", "iat": 1, "exp": 2, "seq": 3, "hash": "cd" * 32}
    )
    with pytest.raises(CheckpointRejected, match="not an audit checkpoint"):
        verify_checkpoint(assertion, keys, line=1)
    other = CheckpointKey(SigningKey.generate())
    with pytest.raises(CheckpointRejected, match="unknown key"):
        verify_checkpoint(other.sign([Anchor(0, 3, "cd" * 32)], AT).token, keys, line=1)
    assert jwt.get_unverified_header(good.token)["typ"] == CHECKPOINT_TYPE


# Whatever a signed payload holds, it is a checkpoint or rejected as none: never another error.
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70) | st.just("ab" * 32),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
_PAYLOADS = st.one_of(
    _JSON,
    st.fixed_dictionaries({"at": _JSON, "heads": _JSON}),
    st.fixed_dictionaries(
        {"at": st.just(AT.isoformat()), "heads": st.lists(st.lists(_JSON, max_size=4))}
    ),
    st.fixed_dictionaries({"at": st.just(AT.isoformat()), "seq": _JSON, "hash": _JSON}),
)


_FUZZ_KEY = SigningKey.generate()


@given(payload=_PAYLOADS)
def test_any_signed_payload_is_a_checkpoint_or_rejected(payload: object) -> None:
    key = CheckpointKey(_FUZZ_KEY)
    token = jwt.api_jws.PyJWS().encode(
        json.dumps(payload).encode(),
        _FUZZ_KEY.private_key,
        algorithm="ES256",
        headers={"kid": key.key_id, "typ": CHECKPOINT_TYPE},
    )
    keys = {key.key_id: key.public_key()}
    try:
        checkpoint = verify_checkpoint(token, keys, line=1)
    except CheckpointRejected:
        with pytest.raises(CheckpointRejected, match="a signed payload that is no checkpoint"):
            verify_checkpoint(token, keys, line=1)
        return
    chains = [head.chain for head in checkpoint.heads]
    assert chains == sorted(set(chains))
    assert all(head.seq >= 1 and len(head.hash) == 64 for head in checkpoint.heads)


# --- the download route and the command -----------------------------------------------------


@pytest.fixture
def database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """The settings' database, migrated, as a command or another process would see it."""
    engine = create_engine_for(settings.database_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def test_supervisors_download_the_checkpoints_and_their_key(
    settings: Settings, tmp_path: Path
) -> None:
    serve(settings, 3)
    supervisor = make_key(settings, "audit-office", Role.SUPERVISOR)
    operator = make_key(settings, "desk-1", Role.OPERATOR_BANK)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        _append(client.app.state.services.sessions, 2)  # type: ignore[attr-defined]
        answer = client.get("/audit/checkpoints", headers=supervisor)
        later = client.get("/audit/checkpoints", params={"after": 3}, headers=supervisor)
        assert client.get("/audit/checkpoints", headers=operator).status_code == 403
        assert client.get("/audit/checkpoints").status_code == 401
    assert answer.status_code == 200
    document = answer.json()
    assert [checkpoint["entries"] for checkpoint in document["checkpoints"]] == [3]
    assert later.json()["checkpoints"] == []
    jwks = tmp_path / "checkpoint-key.jwk"
    jwks.write_text(json.dumps({"keys": document["keys"]}))
    keys = public_keys(jwks)
    for checkpoint in document["checkpoints"]:
        heads = verify_checkpoint(checkpoint["jws"], keys, line=1).heads
        assert [head._asdict() for head in heads] == checkpoint["heads"]
    # A copy of the file and the downloaded key verify the database away from the service.
    copy = tmp_path / "copy.jws"
    copy.write_text("".join(c["jws"] + "\n" for c in document["checkpoints"]))
    result = CliRunner().invoke(
        cli,
        ["audit", "verify", "--database-url", settings.database_url,
         "--checkpoints", str(copy), "--public-key", str(jwks)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "audit log intact: 5 entries, matching 1 signed checkpoints (the latest: 3 entries in "
        f"{_in_chains(settings, 3)} at"
    )


def _in_chains(settings: Settings, served: int) -> str:
    """In how many chains ``serve`` put its first ``served`` entries: one on SQLite; on
    PostgreSQL each append takes the next of eight chains in turn."""
    if settings.database_url.startswith("sqlite"):
        return "1 chain"
    return f"{min(served, POSTGRESQL_PARTITIONS)} chains"


def _verify(settings: Settings, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli,
        ["audit", "verify", "--database-url", settings.database_url, *extra],
        env={"AKKREDITIV_KEK_FILE": str(settings.kek_file)},
    )
    return result.exit_code, result.stdout, result.stderr


def test_cli_verify_names_the_latest_checkpoint(settings: Settings) -> None:
    serve(settings, 4)
    code, stdout, stderr = _verify(settings)
    assert code == 0
    assert stdout.startswith("audit log intact: 4 entries, matching 1 signed checkpoints")
    assert f"(the latest: 4 entries in {_in_chains(settings, 4)} at 20" in stdout
    assert stderr == ""


def test_cli_verify_warns_without_checkpoints(
    settings: Settings, database: sessionmaker[Session]
) -> None:
    _append(database, 2)
    code, stdout, stderr = _verify(settings)
    assert (code, stdout) == (0, "audit log intact: 2 entries\n")
    assert "no signed checkpoint" in stderr


def test_cli_verify_explains_a_cut_end(settings: Settings, database: sessionmaker[Session]) -> None:
    serve(settings, 3)
    with database() as session:
        [last] = AuditLog(session).tail(1)
    cut_tail(settings.database_url, last.chain, last.seq - 1)
    code, stdout, _ = _verify(settings)
    assert code == 3
    entry = f"entry {last.seq} of chain {last.chain}"
    assert stdout.splitlines()[0] == f"audit log broken at {entry}: removed"
    assert f"names {entry}, which the database no longer holds" in stdout


def test_cli_verify_keeps_the_explicit_anchor(
    settings: Settings, database: sessionmaker[Session]
) -> None:
    _append(database, 3)
    with database() as session:
        last = AuditRepository(session).head(lock=False)
    with database.begin() as session:
        session.execute(text("DELETE FROM audit_entries WHERE seq = 3"))
    code, stdout, _ = _verify(settings, "--anchor", f"{last[0]}:{last[1]}")
    assert code == 3
    assert "audit log broken at entry 3 of chain 0: removed" in stdout
    assert "checkpoint given names entry 3 of chain 0" in stdout


def test_cli_verify_exits_1_without_the_checkpoint_key(settings: Settings) -> None:
    serve(settings, 1)
    settings.audit_checkpoint_key_file.unlink()
    code, _, stderr = _verify(settings)
    assert code == 1
    assert "public key" in stderr
