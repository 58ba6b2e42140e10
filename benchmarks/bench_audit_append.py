"""Lock waits of the audit log on PostgreSQL: K processes append at once, with the log in one
chain (as it was: every append queues for one head row) and in N chains, in the same run.

    .venv/bin/python benchmarks/bench_audit_append.py [--processes 8] [--partitions 8]
        [--seconds 10] [--rounds 2] [--json]

Each process is a worker as ``akkreditiv serve`` runs one, cut down to the audit log: a
transaction writes a row of its own (the step's change), appends an audit entry through
``AuditLog`` (the service's code), and commits; again and again until ``--seconds`` are up.
The two layouts take turns, ``--rounds`` times each, each on a fresh schema.

Lock waits are measured twice, and both are reported:
- *client*: every worker times the statements that lock a chain's head (``SELECT ... FROM
  audit_heads ... FOR UPDATE``, with or without ``SKIP LOCKED``), from send to answer. That is
  the wait for the row lock plus one round trip (the round trip alone is the time with one
  process, or with no other holder: under a millisecond here).
- *server*: a thread samples ``pg_stat_activity`` every 10 ms and counts the workers' backends
  waiting on a heavyweight lock (``wait_event_type = 'Lock'``: a row lock is a wait for the
  holder's transaction id); samples times interval estimate the backends' seconds of waiting.
Every run ends with ``verify_database`` over the chains written: the figures are of appends
that chained correctly. ``--minimum N`` makes each worker append at least N entries (with
``--seconds 0``, a smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
from sqlalchemy import event, text

from server.services.audit import (
    POSTGRESQL_PARTITIONS,
    AuditLog,
    AuditPartitions,
    verify_database,
)
from server.storage.audit_repositories import AuditRepository
from server.storage.engine import create_engine_for, migrate, session_factory

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SAMPLE_S = 0.01


@contextlib.contextmanager
def schema(base: str) -> Iterator[tuple[str, str]]:
    """A fresh schema: its URL (whose connections are named after it) and its name."""
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = _libpq(base)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        options = quote(f"-csearch_path={name}")
        yield f"{base}?options={options}&application_name={name}", name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# --- a worker process ----------------------------------------------------------------------------


def work(url: str, name: str, partitions: int, seconds: float, minimum: int) -> dict[str, Any]:
    """Append until ``seconds`` are up and ``minimum`` entries are in; the figures as JSON."""
    engine = create_engine_for(url, pool_size=1, pool_overflow=0)
    sessions = session_factory(engine)
    chains = AuditPartitions(partitions)
    waited = [0.0]

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM audit_heads" in statement and "FOR UPDATE" in statement:
            conn.info["locking_since"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, *_: Any) -> None:
        since = conn.info.pop("locking_since", None)
        if since is not None:
            waited[0] += time.perf_counter() - since

    step = text("UPDATE bench_steps SET n = n + 1 WHERE name = :name")
    latencies: list[float] = []
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    while True:
        begun = time.perf_counter()
        with sessions.begin() as session:
            session.execute(step, {"name": name})
            AuditLog(session, partitions=chains).append(
                "bench.step", actor=name, subject=str(len(latencies)), details={}
            )
        latencies.append(time.perf_counter() - begun)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and len(latencies) >= minimum:
            break
    engine.dispose()
    return {
        "appends": len(latencies),
        "seconds": elapsed,
        "lock_s": waited[0],
        "latencies": latencies,
    }


# --- the run -------------------------------------------------------------------------------------


class Sampler:
    """Counts, every ``SAMPLE_S``, the backends named ``application`` that wait on a lock."""

    def __init__(self, base: str, application: str) -> None:
        self._dsn = _libpq(base)
        self._application = application
        self.samples = 0
        self.waiting = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'"
        )
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            started = time.perf_counter()
            while not self._stop.wait(SAMPLE_S):
                row = conn.execute(query, (self._application,)).fetchone()
                self.samples += 1
                self.waiting += int(row[0]) if row else 0
            self.seconds = time.perf_counter() - started


def run(base: str, partitions: int, processes: int, seconds: float, minimum: int) -> dict[str, Any]:
    with schema(base) as (url, name):
        engine = create_engine_for(url)
        migrate(engine)
        workers = [f"w{n}" for n in range(processes)]
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE bench_steps (name text PRIMARY KEY, n bigint)"))
            connection.execute(
                text("INSERT INTO bench_steps (name, n) VALUES (:name, 0)"),
                [{"name": worker} for worker in workers],
            )
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    *(url, worker, str(partitions), str(seconds), str(minimum)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for worker in workers
        ]
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline() != "ready\n":
                raise SystemExit("a worker did not start")
        with Sampler(base, name) as sampler:
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            results = [json.loads(child.communicate()[0]) for child in children]
        if any(child.returncode for child in children):
            raise SystemExit("a worker failed")
        with session_factory(engine)() as session:
            verified = verify_database(session)
            used = [head.chain for head in AuditRepository(session).heads() if head.seq]
        engine.dispose()
    appends = sum(result["appends"] for result in results)
    if verified != appends:
        raise SystemExit(f"{appends} appends, but {verified} entries verify")
    wall = max(result["seconds"] for result in results)
    latencies = sorted(ms * 1000 for result in results for ms in result["latencies"])
    lock_s = sum(result["lock_s"] for result in results)
    return {
        "partitions": partitions,
        "chains_used": len(used),
        "appends": appends,
        "appends_per_s": appends / wall,
        "client_lock_wait_s": lock_s,
        "client_lock_wait_ms_per_append": 1000 * lock_s / appends,
        "server_lock_wait_s": sampler.waiting * sampler.seconds / max(1, sampler.samples),
        "server_waiting_backends_mean": sampler.waiting / max(1, sampler.samples),
        "transaction_p50_ms": statistics.median(latencies),
        "transaction_p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "seconds": wall,
    }


def _combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one layout together: sums of counts and seconds, rates from the sums."""
    appends = sum(r["appends"] for r in runs)
    wall = sum(r["seconds"] for r in runs)
    client = sum(r["client_lock_wait_s"] for r in runs)
    server = sum(r["server_lock_wait_s"] for r in runs)
    return {
        "partitions": runs[0]["partitions"],
        "chains_used": max(r["chains_used"] for r in runs),
        "appends": appends,
        "appends_per_s": appends / wall,
        "client_lock_wait_s": client,
        "client_lock_wait_ms_per_append": 1000 * client / appends,
        "server_lock_wait_s": server,
        "server_lock_wait_ms_per_append": 1000 * server / appends,
        "server_waiting_backends_mean": statistics.mean(
            r["server_waiting_backends_mean"] for r in runs
        ),
        "transaction_p50_ms": statistics.median(r["transaction_p50_ms"] for r in runs),
        "transaction_p99_ms": max(r["transaction_p99_ms"] for r in runs),
        "rounds": [
            {key: r[key] for key in ("appends_per_s", "client_lock_wait_ms_per_append")}
            for r in runs
        ],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, name, partitions, seconds, minimum = sys.argv[2:7]
        figures = work(url, name, int(partitions), float(seconds), int(minimum))
        print(json.dumps(figures))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=PG, help="the PostgreSQL server (a URL)")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=POSTGRESQL_PARTITIONS)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--minimum", type=int, default=1, help="appends per worker at least")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs: dict[int, list[dict[str, Any]]] = {1: [], args.partitions: []}
    for _ in range(args.rounds):
        for partitions in runs:
            runs[partitions].append(
                run(args.postgres, partitions, args.processes, args.seconds, args.minimum)
            )
    one, many = (_combined(runs[partitions]) for partitions in runs)
    figures = {
        "processes": args.processes,
        "one_chain": one,
        "partitioned": many,
        "ratios": {
            "appends_per_s": many["appends_per_s"] / one["appends_per_s"],
            "client_lock_wait_per_append": (
                many["client_lock_wait_ms_per_append"] / one["client_lock_wait_ms_per_append"]
            ),
            "server_lock_wait_per_append": (
                many["server_lock_wait_ms_per_append"] / one["server_lock_wait_ms_per_append"]
                if one["server_lock_wait_ms_per_append"]
                else None
            ),
        },
    }
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    print(f"{args.processes} processes appending at once, {args.rounds} rounds of each layout")
    print("per append: the head-lock statement's time (client), lock wait sampled in the server")
    print(
        f"{'chains':>7} {'appends/s':>10} {'statement ms':>13} {'lock wait ms':>13}"
        f" {'waiting':>8} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for layout in (one, many):
        print(
            f"{layout['partitions']:>7} {layout['appends_per_s']:>10.0f}"
            f" {layout['client_lock_wait_ms_per_append']:>13.2f}"
            f" {layout['server_lock_wait_ms_per_append']:>13.2f}"
            f" {layout['server_waiting_backends_mean']:>8.2f}"
            f" {layout['transaction_p50_ms']:>7.1f} {layout['transaction_p99_ms']:>7.1f}"
        )
    ratios = figures["ratios"]
    print(
        f"{args.partitions} chains / 1 chain: appends/s x{ratios['appends_per_s']:.2f}, "
        f"head-lock statement time per append x{ratios['client_lock_wait_per_append']:.3f}"
    )


if __name__ == "__main__":
    main()
