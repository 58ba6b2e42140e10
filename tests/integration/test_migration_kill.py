"""Guided migrations against a real ``akkreditiv serve`` process that is killed with SIGKILL at
every round of steps, then started again: each person's next request is either answered and
then the server is killed (between steps), or killed right after it was sent (before the
server read it), while its transaction is open (the SQLite write lock held: mid-step), or just
after it committed (the answer lost). The people then resume from what ``GET /migrations/{id}``
says and retry. Whatever each kill hit, every flow completes exactly once: one identity per
person, flows completed, legacy users migrated, each step's event once, the audit chain whole.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpGenerator, OtpTokenState
from server.domain.model import CredentialState
from server.services.access import ApiKeys, Role
from server.services.audit import verify_database
from server.services.migration.formats import code_for, hash_legacy_password, new_card_secret
from server.services.migration.store import LegacyStore
from server.services.secretbox import SecretBox
from server.storage.engine import create_engine_for, migrate, session_factory
from server.storage.migration_tables import (
    LegacyUser,
    LegacyUserStatus,
    MigrationEvent,
    MigrationFlow,
)
from server.storage.tables import Credential, Identity

pytestmark = pytest.mark.integration

PASSWORD = "gammel adgangskode"  # noqa: S105 - a test legacy password
NEW_PASSWORD = "Ny og lang adgangskode 2026"  # noqa: S105 - a test password
NAME = "Johannes V. Jensen"
PEOPLE = 4
# In the order they are sent within a round: a request sent "before" the kill goes last, so
# the lock seen "inside" a step is that step's own.
MODES = ("between", "after_commit", "inside", "before")
STEPS = ("start", "prove", "confirm", "choose", "activate", "complete")
MAX_ROUNDS = 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], bool], timeout: float = 60.0, interval: float = 0.002
) -> None:
    """Poll ``condition`` (an observation of another process) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(interval)  # a poll interval: leaves the loaded CPUs to the server


class Server:
    """``akkreditiv serve`` on one port and one SQLite database, started and killed at will."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = folder / "migration.db"
        self.database_url = f"sqlite+pysqlite:///{self.database}"
        self.env = {
            **os.environ,
            "AKKREDITIV_DATABASE_URL": self.database_url,
            "AKKREDITIV_KEK_FILE": str(folder / "kek.bin"),
            "AKKREDITIV_PSEUDONYM_KEY_FILE": str(folder / "pseudonym.key"),
            "AKKREDITIV_SIGNING_KEY_FILE": str(folder / "signing.pem"),
            "AKKREDITIV_API_KEYS_FILE": str(folder / "api-keys.json"),
            "AKKREDITIV_ISSUER": self.url,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log = folder / "serve.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "akkreditiv", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.starts += 1
        with httpx.Client(base_url=self.url, timeout=1) as probe:

            def up() -> bool:
                assert self.process is not None
                assert self.process.poll() is None, f"the service exited: {self.tail()}"
                try:
                    return probe.get("/health").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(up, timeout=120, interval=0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL
        self.process = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    yield running
    if running.process is not None:
        running.process.terminate()
        running.process.wait(timeout=30)


@dataclass
class Migrant:
    """One person and what their browser knows: the flow id and the key number shown."""

    user_id: str
    person_number: str
    secret: bytes
    token: OtpTokenState
    number: int
    flow: str | None = None
    index: str | None = None
    modes: list[str] = field(default_factory=list)

    def mode_for(self, step: str) -> str:
        """Person n meets the kill mode n places along at each step, so across the people
        every step is killed in every mode; a retry of a step is answered, to move on."""
        if any(seen.startswith(f"{step}:") for seen in self.modes):
            return "between"
        return MODES[(STEPS.index(step) + self.number) % len(MODES)]

    def start(self) -> tuple[str, str, dict[str, Any] | None]:
        return ("POST", "/migrations", {"user_id": self.user_id})

    def next_request(self, http: httpx.Client) -> tuple[str, str, dict[str, Any] | None] | None:
        """The request that moves the flow on, from where the service says it is."""
        if self.flow is None:
            return self.start()
        view = http.get(f"/migrations/{self.flow}").json()
        action = view["next_action"]
        base = f"/migrations/{self.flow}"
        if action is None:
            return None
        if action in ("prove", "start"):
            if self.index is None or action == "start":
                return self.start()  # a new key number to type
            code = code_for(self.secret, self.index)
            body = {"user_id": self.user_id, "password": PASSWORD, "code": code}
            return ("POST", f"{base}/prove", body)
        if action == "confirm":
            return ("POST", f"{base}/confirm", {"person_number": self.person_number, "name": NAME})
        if action == "choose":
            return ("POST", f"{base}/choose", None)  # the proposal: code display + password
        if action == "activate":
            code = OtpGenerator(self.token, lambda _: None).totp_now()
            body = {"password": NEW_PASSWORD, "serial": self.token.serial, "code": code}
            return ("POST", f"{base}/activate", body)
        assert action == "complete", view
        return ("POST", f"{base}/complete", None)

    def answered(self, path: str, answer: httpx.Response) -> None:
        assert answer.status_code < 500, answer.text
        body = answer.json()
        if path == "/migrations" and answer.status_code == 201:
            self.flow, self.index = body["id"], body["index"]
        elif "index" in body:
            self.index = body["index"]

    def lost(self, path: str) -> None:
        """The answer to a request on its way when the server died: if it was a start, the
        key number it chose (if any) is unknown, so the next proof starts again."""
        if path == "/migrations":
            self.index = None


def send_raw(port: int, method: str, path: str, body: dict[str, Any] | None) -> socket.socket:
    """Write a whole request to the server without waiting for the answer."""
    data = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode() + data)
    return sock


class Database:
    """Observations of the server's SQLite database from outside the server."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events_of(self, user_id: str) -> int:
        with sqlite3.connect(self.path, timeout=30) as connection:
            row = connection.execute(
                "SELECT count(*) FROM migration_events e JOIN migration_flows f"
                " ON e.flow_id = f.id WHERE f.user_id = ?",
                (user_id,),
            ).fetchone()
        return int(row[0])

    def write_lock_held(self) -> bool:
        """Whether a transaction holds the write lock now (the server's requests begin
        IMMEDIATE, so a request inside its transaction holds it)."""
        connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return True
            raise
        else:
            connection.execute("ROLLBACK")
            return False
        finally:
            connection.close()


def seed(server: Server) -> tuple[list[Migrant], dict[str, str]]:
    """Legacy users with key cards (real PBKDF2 cost, so a proof takes a while) in a migrated
    database, a supervisor's API key, and the keys the server will read."""
    box = SecretBox.from_file(server.folder / "kek.bin", create=True)
    engine = create_engine_for(server.database_url)
    migrate(engine)
    migrants: list[Migrant] = []
    with session_factory(engine)() as session, session.begin():
        store = LegacyStore(session, box, decoy_key=os.urandom(32))
        for n in range(PEOPLE):
            user_id = f"kill-{n}"
            secret = new_card_secret()
            number = f"0506{70 + n}-{1234 + n}"
            store.add_user(user_id, number, NAME, 1970 + n, hash_legacy_password(PASSWORD))
            store.issue_card(user_id, secret, serial=f"KCK{n}")
            token = otp_token.new_state(Model.DISPLAY)
            migrants.append(Migrant(user_id, number, secret, token, n))
    engine.dispose()
    _, key = ApiKeys(server.folder / "api-keys.json").add("supervisor", [Role.SUPERVISOR])
    return migrants, {"Authorization": f"Bearer {key}"}


def step_of(path: str) -> str:
    return "start" if path == "/migrations" else path.rsplit("/", 1)[-1]


def kill_round(
    server: Server,
    database: Database,
    http: httpx.Client,
    pending: list[tuple[Migrant, tuple[str, str, dict[str, Any] | None]]],
    hits: dict[str, list[str]],
) -> None:
    """Each person's next request under its kill mode; then SIGKILL, and a new server."""
    sockets: list[socket.socket] = []
    steps = [step_of(path) for _, (_, path, _) in pending]
    modes = [migrant.mode_for(step) for (migrant, _), step in zip(pending, steps, strict=True)]
    for mode, step, (migrant, (method, path, body)) in sorted(
        zip(modes, steps, pending, strict=True), key=lambda row: MODES.index(row[0])
    ):
        migrant.modes.append(f"{step}:{mode}")
        if mode == "between":
            migrant.answered(path, http.request(method, path, json=body))
            hits[mode].append(step)
            continue
        before = database.events_of(migrant.user_id)
        sockets.append(send_raw(server.port, method, path, body))
        migrant.lost(path)

        def committed(m: Migrant = migrant, b: int = before) -> bool:
            return database.events_of(m.user_id) > b

        if mode == "after_commit":
            wait_until(committed)
        elif mode == "inside":
            # Until the request's transaction is open (unless it finished first: a miss).
            seen_open: list[bool] = []

            def open_or_done(
                done: Callable[[], bool] = committed, seen: list[bool] = seen_open
            ) -> bool:
                if database.write_lock_held():
                    seen.append(True)
                return bool(seen) or done()

            wait_until(open_or_done)
            if not seen_open:
                continue
        hits[mode].append(step)
    server.kill()
    for sock in sockets:
        sock.close()
    server.start()


@pytest.mark.timeout(900)  # a dozen restarts of the service on a loaded machine
def test_killing_the_server_at_every_step_loses_nothing_and_duplicates_nothing(
    server: Server,
) -> None:
    migrants, supervisor = seed(server)
    database = Database(server.database)
    server.start()
    # No kept-alive connections: each request finds the server of the moment.
    with httpx.Client(
        base_url=server.url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0)
    ) as http:
        document = pskc.write_pskc([m.token.pskc_key() for m in migrants])
        imported = http.post(
            "/token-batches",
            content=document,
            headers={"content-type": "application/xml", **supervisor},
        )
        assert imported.status_code == 201, imported.text
        hits: dict[str, list[str]] = {mode: [] for mode in MODES}
        for _ in range(MAX_ROUNDS):
            plans = [(m, m.next_request(http)) for m in migrants]
            pending = [(m, request) for m, request in plans if request is not None]
            if not pending:
                break
            kill_round(server, database, http, pending, hits)
        else:
            pytest.fail(f"flows did not complete in {MAX_ROUNDS} rounds: {server.tail()}")

    server.kill()
    # The kills hit where they were meant to: mid-step at least during the long steps (the
    # PBKDF2 of the legacy proof, the Argon2id of the new password).
    assert {"prove", "activate"} <= set(hits["inside"]), (hits, [m.modes for m in migrants])
    assert hits["after_commit"], hits
    engine = create_engine_for(server.database_url)
    with session_factory(engine)() as session:
        identities = session.scalar(
            select(func.count())
            .select_from(Identity)
            .where(Identity.person_number != "token-stock")
        )
        assert identities == PEOPLE
        for migrant in migrants:
            flow = session.scalars(
                select(MigrationFlow).where(MigrationFlow.user_id == migrant.user_id)
            ).one()
            assert flow.state == "completed", migrant.modes
            identity = session.scalars(
                select(Identity).where(Identity.person_number == migrant.person_number)
            ).one()
            assert flow.identity_id == identity.id
            user = session.get(LegacyUser, migrant.user_id)
            assert user is not None
            assert (user.status, user.identity_id) == (LegacyUserStatus.MIGRATED, identity.id)
            credentials = session.scalars(
                select(Credential).where(Credential.identity_id == identity.id)
            ).all()
            assert sorted(c.kind.value for c in credentials) == ["code_display", "password"]
            assert all(c.state is CredentialState.ACTIVE for c in credentials)
            assert sorted(flow.credential_ids) == sorted(str(c.id) for c in credentials)
            ok_steps = session.scalars(
                select(MigrationEvent.step).where(
                    MigrationEvent.flow_id == flow.id, MigrationEvent.outcome == "ok"
                )
            ).all()
            for step in ("started", "legacy_proven", "details_confirmed", "completed"):
                assert ok_steps.count(step) == 1, (step, ok_steps, migrant.modes)
            assert ok_steps.count("authenticator_chosen") == 2  # code display and password
            assert ok_steps.count("activated") == 2
        assert verify_database(session) > 0  # the audit chain survived every kill
    engine.dispose()
    assert server.starts >= 4
