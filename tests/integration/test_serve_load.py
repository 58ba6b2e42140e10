"""``akkreditiv serve`` under what a crowd or an attacker sends: a 20 MB body, declared or
streamed, is refused (413) with the service's memory, measured from /proc, growing by no more
than a few MB; a burst of writes while another process holds the database's write lock is
answered 503 with Retry-After, never 500, and writes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.server_process import ServerProcess, start_server
from tests.unit.server.web.forms import csrf_of

pytestmark = pytest.mark.integration

PROVIDER = "https://sp.example"
BODY = 20 * 1024 * 1024
PIECE = 64 * 1024
# What the service may grow by while it refuses one: its buffers and the answer, not the body.
FEW_MB = 4 * 1024


BURST = 24


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("load-db") / "akkreditiv.db"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database: Path) -> Iterator[ServerProcess]:
    """The service on SQLite, waiting at most 200 ms for the write lock."""
    process = start_server(
        tmp_path_factory.mktemp("load"),
        f"sqlite+pysqlite:///{database}",
        provider=PROVIDER,
        extra_env={"AKKREDITIV_SQLITE_BUSY_TIMEOUT_MS": "200"},
    )
    try:
        yield process
    finally:
        process.stop()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _peak_from_now(pid: int) -> int:
    """Start the process's peak resident memory (VmHWM) over from what it holds now (Linux's
    ``clear_refs`` 5); that resident memory, in KiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_kib(pid, "VmRSS")


def _pieces() -> Iterator[bytes]:
    piece = b"x" * PIECE
    for _ in range(BODY // PIECE):
        yield piece


def _send(server: ServerProcess, target: str, how: str, **headers: str) -> httpx.Response:
    content: bytes | Iterator[bytes] = b"x" * BODY if how == "declared" else _pieces()
    with server.client() as http:
        return http.post(target, content=content, headers=headers)


@pytest.mark.parametrize("how", ["declared", "chunked"])
@pytest.mark.parametrize("where", ["api", "page"])
def test_a_20_mb_body_is_refused_and_the_service_does_not_grow(
    server: ServerProcess, how: str, where: str
) -> None:
    with server.client() as http:
        login = http.post("/authentications", json={"min_level": "low"})
        assert login.status_code == 201, login.text
        page = http.get(f"/login/{login.json()['id']}")
        assert page.status_code == 200
        token = csrf_of(page)
    if where == "api":
        target, headers = "/authentications", {"content-type": "application/json"}
    else:
        target = f"/login/{login.json()['id']}"
        headers = {"content-type": "application/x-www-form-urlencoded", "accept": "text/html"}
    # The same request, small, once first: what serving it allocates is not counted.
    with server.client() as http:
        http.post(target, content=f"csrf={token}&person_number=x".encode(), headers=headers)
    pid = server.process.pid
    before = _peak_from_now(pid)

    answer = _send(server, target, how, **headers)

    assert answer.status_code == 413, answer.text
    grown = _status_kib(pid, "VmHWM") - before
    assert grown <= FEW_MB, f"the service grew by {grown} KiB at its peak"


def _logins(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM auth_transactions").fetchone()[0])


def test_a_burst_of_writes_while_another_process_holds_the_lock_answers_503(
    server: ServerProcess, database: Path
) -> None:
    def begin(_: int) -> httpx.Response:
        with server.client() as http:
            return http.post("/authentications", json={"min_level": "low"})

    before = _logins(database)
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(begin, range(BURST)))
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert {answer.status_code for answer in answers} == {503}
    assert {answer.headers["retry-after"] for answer in answers} == {"2"}
    assert _logins(database) == before
    # The lock released, the service writes again.
    assert [begin(n).status_code for n in range(3)] == [201, 201, 201]
    assert _logins(database) == before + 3
