"""Complete guided migrations per second through the service layer (no HTTP): start, the legacy
proof, confirm, choose, activate, complete, each step in its own transaction as the API runs
it, with the audit log and the step events, on SQLite (WAL) or PostgreSQL, one flow at a time.

Two costs are hashing by design and dominate: the legacy proof checks a PBKDF2-SHA256 password
hash (the legacy export's own cost, 100,000 iterations by default) and a new password is
hashed with Argon2id (RFC 9106 low-memory profile). So three variants are measured in the same
run, with the bare hashes beside them:

* ``with_password``: the proposal, a code display and a password (PBKDF2 + Argon2id);
* ``code_display_only``: a code display alone (PBKDF2, no Argon2id);
* ``code_display_only_cheap_legacy_hash``: the same with a 1-iteration legacy hash: what the
  flow's own work (SQL, audit chain, events, TOTP, sealing) costs.

    .venv/bin/python benchmarks/bench_migration_flows.py [--database sqlite|postgresql]
        [--seconds 3] [--minimum 5] [--legacy-iterations 100000] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.orm import Session, sessionmaker

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpGenerator, OtpTokenState
from server.services.audit import AuditLog
from server.services.credentials import CredentialService
from server.services.identities import IdentityService
from server.services.migration.flow import MigrationFlows
from server.services.migration.flow_model import Authenticator, FlowState
from server.services.migration.formats import (
    DEFAULT_ITERATIONS,
    code_for,
    hash_legacy_password,
    new_card_secret,
)
from server.services.migration.legacy_proof import LegacyPolicy
from server.services.migration.store import LegacyStore
from server.services.passwords import Passwords
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
from server.storage.engine import create_engine_for, migrate, session_factory

PG = os.environ.get(
    "AKKREDITIV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
LEGACY_PASSWORD = "gammel adgangskode"  # noqa: S105 - the benchmark's legacy password
NEW_PASSWORD = "En ny og lang adgangskode"  # noqa: S105 - the benchmark's new password
NAME = "Karen Blixen"
POOL = 50  # people (and tokens) made at a time, outside the measured time


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+pysqlite:///{folder / 'flows.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    dsn = PG.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@dataclass
class Person:
    user_id: str
    person_number: str
    card: bytes
    token: OtpTokenState


class Bench:
    """The services of one transaction, as the API builds them, and a pool of legacy people
    with stock tokens."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.box = SecretBox([os.urandom(32)])
        self.decoy_key = os.urandom(32)
        self.pseudonyms = Pseudonyms(os.urandom(32))
        self.passwords = Passwords()
        self.policy = LegacyPolicy()
        self._numbers = itertools.count()

    def flows(self, session: Session) -> tuple[MigrationFlows, LegacyStore, CredentialService]:
        log = AuditLog(session)

        def audit(event: str, details: dict[str, Any]) -> None:
            log.append(event, actor="bench", subject="-", details=details)

        store = LegacyStore(
            session, self.box, audit=audit, decoy_key=self.decoy_key, policy=self.policy
        )
        credentials = CredentialService(
            session, self.box, self.passwords, clock=time.time, audit=audit
        )
        identities = IdentityService(session, self.pseudonyms, audit=audit)
        flows = MigrationFlows(
            session, store, identities, credentials, decoy_key=self.decoy_key, audit=audit
        )
        return flows, store, credentials

    def step(self, call: Callable[[MigrationFlows], Any]) -> Any:
        with self.sessions() as session, session.begin():
            return call(self.flows(session)[0])

    def people(self, count: int, password_hash: str) -> list[Person]:
        made: list[Person] = []
        with self.sessions() as session, session.begin():
            _, store, credentials = self.flows(session)
            for _ in range(count):
                n = next(self._numbers)
                number = f"{1 + (n // 9000) % 28:02d}0180-{1000 + n % 9000:04d}"
                person = Person(
                    f"bench{n}", number, new_card_secret(), otp_token.new_state(Model.DISPLAY)
                )
                store.add_user(person.user_id, number, NAME, 1980, password_hash)
                store.issue_card(person.user_id, person.card, serial=f"KCB{n}")
                made.append(person)
            credentials.import_batch(pskc.write_pskc([p.token.pskc_key() for p in made]))
        return made

    def migrate(self, person: Person, kinds: list[Authenticator] | None) -> None:
        """One complete flow, a transaction per step."""
        started = self.step(lambda flows: flows.start(person.user_id))
        flow_id = started.view.id
        code = code_for(person.card, started.index)
        self.step(lambda flows: flows.prove(flow_id, person.user_id, LEGACY_PASSWORD, code))
        self.step(lambda flows: flows.confirm(flow_id, person.person_number, NAME))
        self.step(lambda flows: flows.choose(flow_id, kinds))
        totp = OtpGenerator(person.token, lambda _: None).totp_now()
        password = NEW_PASSWORD if kinds is None or Authenticator.PASSWORD in kinds else None
        self.step(
            lambda flows: flows.activate(
                flow_id, password=password, serial=person.token.serial, code=totp
            )
        )
        done = self.step(lambda flows: flows.complete(flow_id))
        if done.state is not FlowState.COMPLETED:
            raise SystemExit(f"a flow ended in {done.state}")


def measure(
    bench: Bench,
    kinds: list[Authenticator] | None,
    password_hash: str,
    seconds: float,
    minimum: int,
) -> dict[str, float]:
    """Flows per second over at least ``seconds`` and ``minimum`` flows, counting only the
    flows' own time (making people and tokens is not counted)."""
    pool = bench.people(1, password_hash)
    bench.migrate(pool.pop(), kinds)  # warm up
    count, spent = 0, 0.0
    while spent < seconds or count < minimum:
        if not pool:
            pool = bench.people(POOL, password_hash)
        person = pool.pop()
        began = time.perf_counter()
        bench.migrate(person, kinds)
        spent += time.perf_counter() - began
        count += 1
    return {
        "flows": count,
        "flows_per_s": round(count / spent, 2),
        "ms_per_flow": round(1000 * spent / count, 1),
    }


def bare_rate(operation: Callable[[], object], seconds: float, minimum: int) -> float:
    operation()
    count, began = 0, time.perf_counter()
    while True:
        operation()
        count += 1
        elapsed = time.perf_counter() - began
        if elapsed >= seconds and count >= minimum:
            return round(count / elapsed, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant")
    parser.add_argument("--minimum", type=int, default=5, help="flows per variant at least")
    parser.add_argument(
        "--legacy-iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help="PBKDF2 iterations of the legacy password hashes",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    real_hash = hash_legacy_password(LEGACY_PASSWORD, iterations=args.legacy_iterations)
    cheap_hash = hash_legacy_password(LEGACY_PASSWORD, iterations=1)
    code_display = [Authenticator.CODE_DISPLAY]
    with tempfile.TemporaryDirectory() as folder, database(args.database, Path(folder)) as url:
        engine = create_engine_for(url)
        migrate(engine)
        bench = Bench(session_factory(engine))
        variants = {
            "with_password": measure(bench, None, real_hash, args.seconds, args.minimum),
            "code_display_only": measure(
                bench, code_display, real_hash, args.seconds, args.minimum
            ),
            "code_display_only_cheap_legacy_hash": measure(
                bench, code_display, cheap_hash, args.seconds, args.minimum
            ),
        }
        engine.dispose()
    salt = os.urandom(16)
    results: dict[str, Any] = {
        "database": args.database,
        "legacy_iterations": args.legacy_iterations,
        **variants,
        "bare_legacy_pbkdf2_per_s": bare_rate(
            lambda: hashlib.pbkdf2_hmac("sha256", b"password", salt, args.legacy_iterations),
            args.seconds,
            args.minimum,
        ),
        "bare_argon2id_hash_per_s": bare_rate(
            lambda: Passwords().hash_password(NEW_PASSWORD), args.seconds, args.minimum
        ),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"complete migration flows, service layer, {args.database}, one at a time")
    for name, figures in variants.items():
        print(
            f"  {name:<38} {figures['flows_per_s']:>8.2f} flows/s  "
            f"{figures['ms_per_flow']:>7.1f} ms/flow  ({figures['flows']} flows)"
        )
    pbkdf2 = results["bare_legacy_pbkdf2_per_s"]
    argon2 = results["bare_argon2id_hash_per_s"]
    print(f"  bare PBKDF2, {args.legacy_iterations:,} iterations     {pbkdf2:>8.2f} /s")
    print(f"  bare Argon2id hash (RFC 9106 low memory)  {argon2:>8.2f} /s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
