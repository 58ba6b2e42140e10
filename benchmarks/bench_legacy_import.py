"""The legacy import at scale: generate a synthetic population, import it with ``akkreditiv
legacy import`` (its own process, as an operator runs it) at two sizes, and, in the same run, a
bare ``executemany`` insert of the same rows (JSON parsing, no checks, no sealing, no look-ups,
no resume bookkeeping) as the baseline.

    .venv/bin/python benchmarks/bench_legacy_import.py [--count 1000000]
        [--database sqlite|postgresql] [--batch 20000] [--json]

Reported: generation rows/s; import rows/s and the importer process's peak RSS at ``--count``
and at a tenth of it (memory must not grow with the input); where the importer's time went
(reading and checking rows, sealing, the database); the baseline's rows/s and the ratio; and
the time 5 million rows would take at the measured rate. ``--minimum N`` is a smoke run of N
rows (``--seconds`` is accepted for the shared benchmark runner and ignored: the work is a
fixed number of rows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from server.services.migration.generator import generate
from server.services.migration.importer import default_workers
from server.storage.engine import create_engine_for, migrate

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
TARGET_ROWS = 5_000_000
# The baseline's rows per transaction: fixed, so that its rate stays the yardstick it was
# whatever batch the import is measured with.
BASELINE_BATCH = 5000


@contextlib.contextmanager
def database(kind: str, folder: Path, name: str) -> Iterator[str]:
    """A new, empty database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite+pysqlite:///{folder / f'{name}.db'}"
        return
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def head(source: Path, target: Path, lines: int) -> Path:
    """The first ``lines`` lines of ``source``, copied a line at a time."""
    with source.open("rb") as reader, target.open("wb") as writer:
        for _, text in zip(range(lines), reader, strict=False):
            writer.write(text)
    return target


def run_import(source: Path, url: str, kek: Path, batch: int, workers: int) -> dict[str, Any]:
    """``akkreditiv legacy import`` in a child process: its JSON summary, wall time and peak
    RSS (from wait4, the child's own high-water mark)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "akkreditiv", "legacy", "import", str(source)),
            *("--database-url", url, "--batch", str(batch), "--workers", str(workers)),
            *("--quiet", "--json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "AKKREDITIV_KEK_FILE": str(kek)},
    )
    # Both pipes are small: the summary, or one line of error.
    out, err = (pipe.read() if pipe else b"" for pipe in (process.stdout, process.stderr))
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"the import failed: {err.decode(errors='replace')}")
    summary: dict[str, Any] = json.loads(out)
    summary["wall_seconds"] = time.perf_counter() - started
    summary["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux reports kilobytes
    # CPU of the importer and its parsing workers: on a shared machine it moves far less than
    # the wall-clock rate does.
    summary["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return summary


def _insert(table: str, columns: str, mark: str) -> str:
    marks = ", ".join([mark] * len(columns.split(",")))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - constants


def baseline(source: Path, url: str, batch: int) -> float:
    """Rows per second of a bare insert of the same rows into the same tables: parse each
    JSON line and ``executemany`` it, a transaction per ``batch`` rows, nothing else."""
    engine = create_engine_for(url)
    migrate(engine)
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    postgres = engine.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"
    users_sql = _insert(
        "legacy_users",
        "user_id, person_number, name, birth_year, bank, password_hash, status, failures,"
        " row_digest, imported_at, version",
        mark,
    )
    cards_sql = _insert(
        "legacy_key_cards",
        "serial, user_id, sealed_secret, used, remaining, status, issued_at, version",
        mark,
    )
    tokens_sql = _insert(
        "legacy_code_tokens",
        "serial, user_id, sealed_secret, algorithm, digits, counter, failures, version",
        mark,
    )
    rows = 0
    started = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with source.open("rb") as reader:
            while True:
                users: list[tuple[Any, ...]] = []
                cards: list[tuple[Any, ...]] = []
                tokens: list[tuple[Any, ...]] = []
                for _, text in zip(range(batch), reader, strict=False):
                    row = json.loads(text)
                    user_id = row["user_id"]
                    users.append(
                        (
                            *(user_id, row["person_number"], row["name"], 1900, row["bank"]),
                            *(row["password_hash"], "active", 0, "", now, 1),
                        )
                    )
                    card = row["key_card"]
                    cards.append(
                        (
                            *(card["serial"], user_id, bytes.fromhex(card["secret"]), bytes(19)),
                            *(148 - len(card["used"]), "active", now, 1),
                        )
                    )
                    token = row["code_token"]
                    if token:
                        seed = bytes.fromhex(token["seed"])
                        tokens.append((token["serial"], user_id, seed, "totp", 6, 0, 0, 1))
                if not users:
                    break
                if not postgres:
                    cursor.execute("BEGIN")
                cursor.executemany(users_sql, users)
                cursor.executemany(cards_sql, cards)
                if tokens:
                    cursor.executemany(tokens_sql, tokens)
                raw.commit()
                rows += len(users)
    finally:
        raw.close()
        engine.dispose()
    return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--minimum", type=int, help="a smoke run of this many rows")
    parser.add_argument("--seconds", type=float, help="ignored (fixed work, not a duration)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="parsing processes of the import"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    count = args.minimum if args.minimum is not None else args.count
    small = max(1, count // 10)
    results: dict[str, Any] = {"database": args.database, "rows": count, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="bench-legacy-") as folder_name:
        folder = Path(folder_name)
        export = folder / "legacy.jsonl"
        made = generate(export, count=count, seed=1)
        results["generate_rows_per_s"] = round(count / made.seconds, 1)
        results["file_mb"] = round(made.size / 1e6, 1)
        kek = folder / "kek.bin"
        kek.write_bytes(os.urandom(32))
        kek.chmod(0o600)
        for label, size in (("small", small), ("large", count)):
            source = export if size == count else head(export, folder / "small.jsonl", size)
            with database(args.database, folder, label) as url:
                summary = run_import(source, url, kek, args.batch, args.workers)
            if summary["inserted"] != size:
                raise SystemExit(f"{label}: imported {summary['inserted']} of {size} rows")
            results[label] = {
                "rows": size,
                "rows_per_s": summary["rows_per_second"],
                "import_seconds": summary["seconds"],
                "process_seconds": round(summary["wall_seconds"], 2),
                "peak_rss_mb": round(summary["peak_rss_mb"], 1),
                "cpu_us_per_row": round(summary["cpu_seconds"] / size * 1e6, 1),
                "timings_s": summary["timings"],
            }
        with database(args.database, folder, "baseline") as url:
            results["baseline_rows_per_s"] = round(baseline(export, url, BASELINE_BATCH), 1)
    large = results["large"]
    results["import_vs_baseline_ratio"] = round(
        large["rows_per_s"] / results["baseline_rows_per_s"], 3
    )
    results["peak_rss_growth"] = round(large["peak_rss_mb"] / results["small"]["peak_rss_mb"], 3)
    results["extrapolated_5m_minutes"] = round(TARGET_ROWS / large["rows_per_s"] / 60, 1)
    results["load_average"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"database {args.database}, {count:,} rows ({results['file_mb']} MB of JSON lines), "
        f"{args.workers} parsing worker(s)"
    )
    print(f"generate:  {results['generate_rows_per_s']:>12,.0f} rows/s")
    for label in ("small", "large"):
        part = results[label]
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in part["timings_s"].items())
        print(
            f"import {part['rows']:>9,}: {part['rows_per_s']:>9,.0f} rows/s, "
            f"{part['cpu_us_per_row']:.0f} us CPU a row, peak RSS {part['peak_rss_mb']:.0f} MB "
            f"({timings})"
        )
    print(
        f"baseline (bare executemany): {results['baseline_rows_per_s']:,.0f} rows/s; import "
        f"{results['import_vs_baseline_ratio']} x baseline"
    )
    print(f"5 million rows at this rate: {results['extrapolated_5m_minutes']} minutes")
    print(f"load average at the end: {results['load_average']}")


if __name__ == "__main__":
    main()
