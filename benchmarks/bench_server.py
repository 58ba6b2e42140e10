"""OTP verification over HTTP against the running service, from this (second) process on
loopback, and in the same run a bare FastAPI endpoint doing one HMAC code check and one row
update on the same database: requests per second and p50/p99 latency, and the ratio.

    .venv/bin/python benchmarks/bench_server.py [--database sqlite|postgresql] [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg

from devices.protocol import pskc
from devices.protocol.otp import hotp
from firmware_sim.tokens import otp_token

BENCH_DIR = Path(__file__).resolve().parent
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)  # waiting for another process to listen: poll, bounded
    raise SystemExit(f"{url} did not come up")


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+pysqlite:///{folder / 'bench.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        "host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def serve(command: list[str], env: dict[str, str], health: str) -> Iterator[None]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(health, process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stderr:
            process.stderr.close()


def seed(base: str, clients: int) -> list[tuple[str, otp_token.OtpTokenState]]:
    """An identity with an active HOTP token and an identified login per client."""
    http = httpx.Client(base_url=base, timeout=30)
    tokens = [
        otp_token.new_state(otp_token.Model.USB, otp_token.Algorithm.HOTP) for _ in range(clients)
    ]
    batch = http.post(
        "/token-batches",
        content=pskc.write_pskc([t.pskc_key() for t in tokens]),
        headers={"content-type": "application/xml"},
    )
    batch.raise_for_status()
    logins = []
    for index, token in enumerate(tokens):
        person = f"0101{90 + index % 10:02d}{1000 + index:04d}"
        identity = http.post(
            "/identities",
            json={
                "person_number": person,
                "name": f"Bench Person {index}",
                "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
            },
        )
        identity.raise_for_status()
        identity_id = identity.json()["id"]
        credential = http.post(f"/identities/{identity_id}/tokens", json={"serial": token.serial})
        if credential.status_code != 200:
            raise SystemExit(f"assigning token {token.serial}: {credential.text}")
        http.post(
            f"/credentials/{credential.json()['id']}/activate", json={"code": hotp(token.secret, 0)}
        ).raise_for_status()
        begun = http.post("/authentications", json={"provider": "https://bench.example"})
        begun.raise_for_status()
        transaction = begun.json()["id"]
        http.post(
            f"/authentications/{transaction}/identify", json={"person_number": person}
        ).raise_for_status()
        logins.append((transaction, token))
    return logins


def load(
    clients: int,
    seconds: float,
    request: Callable[[httpx.Client, int, int], httpx.Response],
    base: str,
    minimum: int = 1,
) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(client: int) -> None:
        nonlocal failures
        http = httpx.Client(base_url=base, timeout=30)
        n = 0
        while time.monotonic() < stop or n < minimum:
            started = time.perf_counter()
            answer = request(http, client, n)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if answer.status_code != 200:
                    failures += 1
            n += 1
        http.close()

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    begun = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begun
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "failures": failures,
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--minimum", type=int, default=20, help="requests per client at least")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as folder_name,
        database(args.database, Path(folder_name)) as url,
    ):
        folder = Path(folder_name)
        env = {
            **os.environ,
            "AKKREDITIV_DATABASE_URL": url,
            "AKKREDITIV_KEK_FILE": str(folder / "kek.bin"),
            "AKKREDITIV_PSEUDONYM_KEY_FILE": str(folder / "pseudonym.key"),
            "AKKREDITIV_SIGNING_KEY_FILE": str(folder / "signing.pem"),
        }
        port, base_port = free_port(), free_port()
        service = [sys.executable, "-m", "akkreditiv", "serve", "--port", str(port)]
        baseline = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "baseline_app:app",
            "--port",
            str(base_port),
            "--log-level",
            "warning",
            "--app-dir",
            str(BENCH_DIR),
        ]
        with serve(service, env, f"http://127.0.0.1:{port}/health"):
            logins = seed(f"http://127.0.0.1:{port}", args.clients)
            counters = [1] * args.clients

            def otp_request(http: httpx.Client, client: int, n: int) -> httpx.Response:
                transaction, token = logins[client]
                code = hotp(token.secret, counters[client])
                counters[client] += 1
                return http.post(f"/authentications/{transaction}/otp", json={"code": code})

            service_figures = load(
                args.clients, args.seconds, otp_request, f"http://127.0.0.1:{port}", args.minimum
            )
        with serve(baseline, env, f"http://127.0.0.1:{base_port}/docs"):
            base_counters = [0] * args.clients
            secret = b"12345678901234567890"

            def baseline_request(http: httpx.Client, client: int, n: int) -> httpx.Response:
                code = hotp(secret, base_counters[client])
                base_counters[client] += 1
                return http.post("/check", json={"client": client, "code": code})

            baseline_figures = load(
                args.clients,
                args.seconds,
                baseline_request,
                f"http://127.0.0.1:{base_port}",
                args.minimum,
            )

    results = {
        "database": args.database,
        "clients": args.clients,
        "service_otp": service_figures,
        "baseline_hmac_and_update": baseline_figures,
        "throughput_ratio": round(service_figures["rps"] / baseline_figures["rps"], 3),
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, figures in (
            ("service OTP verification", service_figures),
            ("bare FastAPI HMAC + update", baseline_figures),
        ):
            print(
                f"{name:28} {figures['rps']:8.1f} req/s  p50 {figures['p50_ms']:7.2f} ms  "
                f"p99 {figures['p99_ms']:7.2f} ms  failures {figures['failures']}"
            )
        print(f"throughput ratio (service / baseline): {results['throughput_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
