"""``akkreditiv serve`` as people start it: in an empty folder with only the database URL set,
the database elsewhere (another folder, or PostgreSQL), and several processes at once."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

import httpx
import pytest

from tests.unit.server.storage.databases import postgres_schema

from .server_process import ServerProcess, start_server

pytestmark = pytest.mark.integration

PROVIDER = "https://sp.example"
KEY_FILES = ("kek.bin", "pseudonym.key", "signing-key.pem", "keycard-pepper.bin", "piv-ca-key.pem")


def _published_keys(server: ServerProcess) -> tuple[object, str]:
    """What the service shows of its keys: the assertion-signing JWKS and the PIV CA."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        jwks = http.get("/.well-known/jwks.json")
        ca = http.get("/piv/ca.pem")
    assert jwks.status_code == 200, jwks.text
    assert ca.status_code == 200, ca.text
    return jwks.json(), ca.text


@pytest.mark.parametrize("where", ["sqlite-elsewhere", "postgresql"])
def test_serve_starts_in_an_empty_folder_with_the_database_elsewhere(
    tmp_path: Path, where: str
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with contextlib.ExitStack() as stack:
        database = (
            f"sqlite+pysqlite:///{tmp_path / 'elsewhere' / 'akkreditiv.db'}"
            if where == "sqlite-elsewhere"
            else stack.enter_context(postgres_schema())
        )
        server = start_server(folder, database, provider=PROVIDER, bare=True)
        try:
            _published_keys(server)
        finally:
            server.stop()
    assert "Traceback" not in server.output()
    made = sorted(path.name for path in (folder / "var").iterdir() if path.is_file())
    for name in KEY_FILES:
        assert name in made
        mode = stat.S_IMODE((folder / "var" / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
    assert stat.S_IMODE((folder / "var").stat().st_mode) == 0o700


def test_two_serve_processes_started_at_once_make_one_set_of_keys(tmp_path: Path) -> None:
    folder = tmp_path / "fresh"
    database = f"sqlite+pysqlite:///{tmp_path / 'db' / 'akkreditiv.db'}"
    servers: list[ServerProcess] = []
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def start() -> None:
        go.wait()
        try:
            servers.append(start_server(folder, database, provider=PROVIDER, bare=True))
        except BaseException as exc:  # reported below, with the other process stopped
            errors.append(exc)

    starters = [threading.Thread(target=start) for _ in range(2)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join(timeout=120)
    try:
        assert not errors, errors
        assert len(servers) == 2
        first, second = (_published_keys(server) for server in servers)
        assert first == second
    finally:
        for server in servers:
            server.stop()
    leftovers = [path.name for path in (folder / "var").iterdir() if path.name.endswith(".tmp")]
    assert leftovers == []


def test_serve_on_a_fresh_folder_keeps_its_database_and_keys_private(tmp_path: Path) -> None:
    """Started where nothing exists yet, with the default places under ``var/`` (the
    database's too), with a umask of 022: the database, its write-ahead log and shared memory,
    its lock files and every key are 0600, their folders 0700, while the service runs."""
    folder = tmp_path / "fresh"
    folder.mkdir()
    database = folder / "var" / "akkreditiv.db"
    previous = os.umask(0o022)  # the child inherits it
    try:
        server = start_server(
            folder, f"sqlite+pysqlite:///{database}", provider=PROVIDER, bare=True
        )
    finally:
        os.umask(previous)
    try:
        _published_keys(server)
        files = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for path in (folder / "var").iterdir()
            if path.is_file()
        }
        folders = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for path in (folder / "var").iterdir()
            if path.is_dir()
        }
    finally:
        server.stop()
    private = [f"akkreditiv.db{end}" for end in ("", "-wal", "-shm", "-setup", "-writers")]
    for name in (*private, *KEY_FILES, "audit-checkpoint-key.pem"):
        assert files.get(name) == 0o600, f"{name}: {files.get(name, 0):o}"
    assert stat.S_IMODE((folder / "var").stat().st_mode) == 0o700
    assert folders["audit-checkpoints"] == 0o700
