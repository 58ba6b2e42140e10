"""Several workers sharing one PostgreSQL: rate-limit counts and the audit chain stay exact."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.storage.audit_repositories import AuditRepository
from server.storage.engine import create_engine_for, migrate, session_factory
from server.storage.errors import StaleWrite
from server.storage.tables import AuditEntry
from server.storage.throttle_repositories import RateLimitRepository
from tests.unit.server.storage.databases import postgres_schema

pytestmark = pytest.mark.integration

WORKERS = 4
EACH = 25
GENESIS = "0" * 64
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def _rate_limit_worker(url: str) -> None:
    engine = create_engine_for(url)  # one engine per worker, as separate processes would have
    try:
        sessions = session_factory(engine)
        for _ in range(EACH):
            with sessions.begin() as session:
                RateLimitRepository(session).record_failure(
                    "pw:shared",
                    NOW,
                    window=dt.timedelta(hours=1),
                    max_failures=WORKERS * EACH,
                    lockout=dt.timedelta(hours=1),
                )
    finally:
        engine.dispose()


def _audit_worker(url: str, name: str) -> int:
    engine = create_engine_for(url)
    retries = 0
    try:
        sessions = session_factory(engine)
        for n in range(EACH):
            while True:
                try:
                    with sessions.begin() as session:
                        repository = AuditRepository(session)
                        last = repository.last()
                        prev = last.hash if last else GENESIS
                        digest = hashlib.sha256(f"{prev}|{name}-{n}".encode()).hexdigest()
                        repository.append(
                            AuditEntry(event=f"{name}-{n}", actor=name, prev_hash=prev, hash=digest)
                        )
                    break
                except StaleWrite:
                    retries += 1
    finally:
        engine.dispose()
    return retries


def test_rate_limit_counts_every_failure_when_workers_race() -> None:
    with postgres_schema() as url:
        engine = create_engine_for(url)
        migrate(engine)
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(_rate_limit_worker, [url] * WORKERS))
        with session_factory(engine)() as session:
            state = RateLimitRepository(session).get("pw:shared")
            assert state is not None
            assert state.failures == WORKERS * EACH
            assert state.locked_until == NOW + dt.timedelta(hours=1)
        engine.dispose()


def test_audit_chain_stays_linear_when_workers_append_concurrently() -> None:
    with postgres_schema() as url:
        engine = create_engine_for(url)
        migrate(engine)
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(_audit_worker, [url] * WORKERS, [f"w{i}" for i in range(WORKERS)]))
        with session_factory(engine)() as session:
            entries = AuditRepository(session).all_in_order()
        engine.dispose()
        assert len(entries) == WORKERS * EACH
        assert entries[0].prev_hash == GENESIS
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
