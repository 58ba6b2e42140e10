"""A real ``akkreditiv serve`` process for integration tests: its own database, key files and
API keys in a folder, started on a free port, ready once uvicorn says it listens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from firmware_sim.tokens.piv_attestation import PivManufacturer
from server.services.access import ApiKeys, Role

READY = "Uvicorn running on"


def follow_stderr(
    process: subprocess.Popen[str], marker: str, log: list[str], name: str
) -> tuple[threading.Thread, threading.Event]:
    """Read everything ``process`` writes to stderr into ``log`` (so a full pipe never blocks
    it), in a thread; the event is set once a line holds ``marker``, or the process ended."""
    ready = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if marker in line:
                ready.set()
        ready.set()  # the process ended: stop waiting

    reader = threading.Thread(target=drain, name=f"{name}-stderr", daemon=True)
    reader.start()
    return reader, ready


def free_port() -> int:
    """A port nobody listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running service: its ``url``, the environment it was started with, and an API key
    (``headers``) for the test service provider, which may also enrol and import tokens."""

    url: str
    env: dict[str, str]
    headers: dict[str, str]
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        if self.reader is not None:
            self.reader.join(timeout=15)  # it ends at the end of the server's output
        if self.process.stderr is not None:
            self.process.stderr.close()

    def output(self) -> str:
        return "".join(self.log[-50:])


def _simulated_card_vendor(folder: Path) -> Path:
    path = folder / "sim-piv-root.pem"
    path.write_bytes(PivManufacturer.load_or_create().root_pem())
    return path


def start_server(
    folder: Path,
    database_url: str,
    *,
    provider: str,
    timeout: float = 60.0,
    extra_env: Mapping[str, str | None] | None = None,
    bare: bool = False,
) -> ServerProcess:
    """Start ``akkreditiv serve`` with everything it keeps in ``folder``; returns once it
    listens (uvicorn's own line on stderr, not a poll), or raises with what it printed. Its
    web origin is ``http://localhost:PORT`` (what the CLI signs for when given the URL).

    ``bare``: as someone would start it in ``folder`` with only the database URL set (no other
    ``AKKREDITIV_*`` setting, so every key takes its default place under ``folder/var``, and
    no API key). Otherwise it trusts the simulated PIV cards' attestation root. A setting of
    ``extra_env`` that is None is left unset."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if bare:
        outside = {k: v for k, v in os.environ.items() if not k.startswith("AKKREDITIV_")}
        chosen: dict[str, str | None] = {
            **outside,
            "AKKREDITIV_DATABASE_URL": database_url,
            **(extra_env or {}),
        }
        headers: dict[str, str] = {}
    else:
        keys_file = folder / "api-keys.json"
        _, key = ApiKeys(keys_file).add(provider, [Role.SUPERVISOR, Role.PROVIDER])
        headers = {"Authorization": f"Bearer {key}"}
        chosen = {
            **os.environ,
            "AKKREDITIV_DATABASE_URL": database_url,
            "AKKREDITIV_KEK_FILE": str(folder / "kek.bin"),
            "AKKREDITIV_PSEUDONYM_KEY_FILE": str(folder / "pseudonym.key"),
            "AKKREDITIV_SIGNING_KEY_FILE": str(folder / "signing.pem"),
            "AKKREDITIV_API_KEYS_FILE": str(keys_file),
            "AKKREDITIV_ISSUER": url,
            "AKKREDITIV_RP_ORIGINS": f'["http://localhost:{port}"]',
            # The simulated cards' vendor, as the demo trusts it (cards made in this process).
            "AKKREDITIV_PIV_ATTESTATION_ROOTS": str(_simulated_card_vendor(folder)),
            **(extra_env or {}),
        }
    env = {name: value for name, value in chosen.items() if value is not None}
    process = subprocess.Popen(
        [sys.executable, "-m", "akkreditiv", "serve", "--port", str(port)],
        env=env,
        cwd=folder if bare else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = ServerProcess(url, env, headers, process)
    server.reader, ready = follow_stderr(process, READY, server.log, f"serve-{port}")
    if not ready.wait(timeout) or process.poll() is not None:
        server.stop()
        raise RuntimeError(f"akkreditiv serve did not start:\n{server.output()}")
    try:
        health = httpx.get(f"{url}/health", timeout=10)
    except httpx.HTTPError as exc:
        server.stop()
        raise RuntimeError(f"akkreditiv serve does not answer ({exc}):\n{server.output()}") from exc
    if health.status_code != 200:
        server.stop()
        raise RuntimeError(f"akkreditiv serve is unhealthy: {health.status_code} {health.text}")
    return server
