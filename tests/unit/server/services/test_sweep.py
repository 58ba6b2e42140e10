"""The sweep removes what expired and nothing else, on both databases: logins and ceremonies
past their time and the grace, ended browser sessions, drained throttles, console sign-in
limits whose window passed; never an audit entry, nor what is still live. One process at a
time sweeps (a lease), and the service sweeps by itself."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from akkreditiv.cli import app as cli
from server.app import create_app
from server.domain.model import CeremonyKind, Level
from server.services.audit import AuditLog
from server.services.sweep import Sweep, SweepPolicy, Swept
from server.settings import Settings
from server.storage.tables import AuditEntry, AuthTransaction, RateLimit, Throttle
from server.storage.web_tables import BrowserKind, WebSession

# The sweeps here run at NOW, set when a test seeds its rows; the command at the real now,
# moments later: every row lies a minute or more from any limit, so both find the same.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
GRACE = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
K = CeremonyKind


def _clock() -> float:
    return NOW.timestamp()


def _ceremony(kind: CeremonyKind, expires: dt.datetime, state: str = "started") -> AuthTransaction:
    return AuthTransaction(
        kind=kind,
        service_provider="https://sp.example",
        min_level=Level.SUBSTANTIAL,
        state=state,
        factors=[],
        created_at=expires - dt.timedelta(minutes=10),
        expires_at=expires,
    )


def _session(name: str, expires: dt.datetime) -> WebSession:
    return WebSession(
        token_digest=name.ljust(64, "0"),
        kind=BrowserKind.ANONYMOUS,
        csrf_token="x",  # noqa: S106 - not a secret
        lang="da",
        data={},
        created_at=expires - HOUR,
        last_seen=expires - HOUR,
        expires_at=expires,
    )


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def seeds() -> list[tuple[str, bool, object]]:
    """Each row to seed: its name, whether the sweep removes it, and the row."""
    return [
        ("login past its time and the grace", True, _ceremony(K.LOGIN, NOW - GRACE - HOUR)),
        (
            "completed login past its time and the grace",
            True,
            _ceremony(K.LOGIN, NOW - GRACE - HOUR, "completed"),
        ),
        ("legacy login past the grace", True, _ceremony(K.LEGACY_LOGIN, NOW - 3 * GRACE)),
        ("login expired within the grace", False, _ceremony(K.LOGIN, NOW - HOUR)),
        ("login still open", False, _ceremony(K.LOGIN, NOW + HOUR)),
        ("registration past the grace", True, _ceremony(K.FIDO_REGISTRATION, NOW - 2 * GRACE)),
        ("enrolment past the grace", True, _ceremony(K.PIV_ENROLMENT, NOW - 2 * GRACE, "failed")),
        (
            "enrolment finished, not expired",
            False,
            _ceremony(K.PIV_ENROLMENT, NOW + HOUR, "completed"),
        ),
        ("session that ended", True, _session("a", NOW - dt.timedelta(minutes=1))),
        ("session that ended a week ago", True, _session("b", NOW - 7 * GRACE)),
        ("live session", False, _session("c", NOW + HOUR)),
        (
            "drained throttle",
            True,
            Throttle(key="net:10.0.0.1", tat_ms=_ms(NOW - HOUR), failures=3),
        ),
        (
            "throttle still draining",
            False,
            Throttle(key="net:10.0.0.2", tat_ms=_ms(NOW + HOUR), failures=9),
        ),
        (
            "familiar network remembered",
            False,
            Throttle(key="seen:x", tat_ms=_ms(NOW + 100 * GRACE), failures=0),
        ),
        (
            "familiar network forgotten",
            True,
            Throttle(key="seen:y", tat_ms=_ms(NOW - HOUR), failures=0),
        ),
        (
            "sign-in limit whose window passed",
            True,
            RateLimit(key="console-key:a", failures=3, window_start=NOW - HOUR, locked_until=None),
        ),
        (
            "sign-in limit whose lock passed",
            True,
            RateLimit(
                key="console-key:b",
                failures=10,
                window_start=NOW - HOUR,
                locked_until=NOW - HOUR / 2,
            ),
        ),
        (
            "sign-in limit still locked",
            False,
            RateLimit(
                key="console-key:c", failures=10, window_start=NOW - HOUR, locked_until=NOW + HOUR
            ),
        ),
        (
            "sign-in limit in its window",
            False,
            RateLimit(key="console-key:d", failures=2, window_start=NOW - dt.timedelta(minutes=5)),
        ),
    ]


def _key(row: object) -> object:
    for name in ("id", "token_digest", "key"):
        if hasattr(row, name):
            return getattr(row, name)
    raise AssertionError(row)


def _present(sessions: sessionmaker[Session]) -> set[object]:
    with sessions() as session:
        found: set[object] = set()
        found.update(session.scalars(select(AuthTransaction.id)))
        found.update(session.scalars(select(WebSession.token_digest)))
        found.update(session.scalars(select(Throttle.key)))
        found.update(session.scalars(select(RateLimit.key)))
        return found


def _gone(sessions: sessionmaker[Session]) -> set[str]:
    """The seeded rows no longer there, by name."""
    left = _present(sessions)
    return {name for name, (_, key) in SEEDED.items() if key not in left}


def _audit(sessions: sessionmaker[Session]) -> list[AuditEntry]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))


SEEDED: dict[str, tuple[bool, object]] = {}
EXPIRED = {name for name, removed, _ in seeds() if removed}


@pytest.fixture
def seeded(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """The rows of ``seeds`` as of now (their names and keys in ``SEEDED``), and an audit
    entry."""
    global NOW  # the time the rows are seeded around
    NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
    SEEDED.clear()
    with sessions.begin() as session:
        for name, removed, row in seeds():
            session.add(row)
            session.flush()
            SEEDED[name] = (removed, _key(row))
        # An audit entry from long ago: the audit log is never swept.
        AuditLog(session, lambda: (NOW - 400 * GRACE).timestamp()).append(
            "identity.created", actor="test", subject="-", details={}
        )
    return sessions


def _sweep(sessions: sessionmaker[Session], batch: int = 2, actor: str = "test") -> Sweep:
    return Sweep(sessions, SweepPolicy(grace=GRACE, batch=batch), actor=actor, clock=_clock)


def test_the_sweep_removes_what_expired_and_nothing_else(seeded: sessionmaker[Session]) -> None:
    assert {key for _, key in SEEDED.values()} == _present(seeded)

    swept = _sweep(seeded).run()  # two rows per transaction: every kind takes several

    assert _gone(seeded) == EXPIRED
    assert swept == Swept(logins=3, ceremonies=2, sessions=2, throttles=2, rate_limits=2)
    entries = _audit(seeded)
    assert [entry.event for entry in entries] == ["identity.created", "maintenance.swept"]
    assert entries[1].details == {**swept.as_dict(), "grace_s": 86400}
    assert entries[1].actor == "test"


def test_a_second_sweep_finds_nothing_and_audits_nothing(seeded: sessionmaker[Session]) -> None:
    _sweep(seeded, batch=100).run()
    left = _present(seeded)
    entries = len(_audit(seeded))

    assert _sweep(seeded).run() == Swept()

    assert _present(seeded) == left
    assert len(_audit(seeded)) == entries


def test_one_process_at_a_time_sweeps(seeded: sessionmaker[Session]) -> None:
    """Processes sharing the database take the sweep's lease in turn: of two asking, one
    sweeps; the other only once the lease's time has passed."""
    every = dt.timedelta(minutes=10)
    first, second = _sweep(seeded), _sweep(seeded)
    assert first.run_if_due("worker-1", every) is not None
    assert second.run_if_due("worker-2", every) is None
    assert first.run_if_due("worker-1", every) is None  # not due again yet, for anyone
    later = Sweep(
        seeded,
        SweepPolicy(grace=GRACE),
        actor="test",
        clock=lambda: (NOW + every).timestamp(),
    )
    assert later.run_if_due("worker-2", every) is not None


def test_the_command_sweeps_and_prints_what_went(
    seeded: sessionmaker[Session], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``akkreditiv maintenance sweep``: the same rows go, and it says how many."""
    monkeypatch.setenv("AKKREDITIV_SWEEP_GRACE_S", str(int(GRACE.total_seconds())))
    runner = CliRunner()
    command = ["maintenance", "sweep", "--database-url", database_url]
    first = runner.invoke(cli, [*command, "--json"])
    assert first.exit_code == 0, first.output
    assert Swept(**json.loads(first.output)) == Swept(
        logins=3, ceremonies=2, sessions=2, throttles=2, rate_limits=2
    )
    assert _gone(seeded) == EXPIRED
    again = runner.invoke(cli, command)
    assert again.exit_code == 0, again.output
    assert again.output.splitlines() == [
        "logins: 0",
        "ceremonies: 0",
        "sessions: 0",
        "throttles: 0",
        "rate limits: 0",
        "oidc: 0",
    ]
    assert _audit(seeded)[-1].actor.startswith("cli")


@pytest.fixture
def service(settings: Settings) -> Iterator[TestClient]:
    """The service, sweeping every second."""
    every_second = settings.model_copy(update={"sweep_every_s": 1})
    with TestClient(create_app(every_second), raise_server_exceptions=False) as client:
        yield client


def test_the_service_sweeps_by_itself(service: TestClient) -> None:
    services = service.app.state.services  # type: ignore[attr-defined]
    ended = _session(uuid.uuid4().hex, dt.datetime.now(dt.UTC) - HOUR)
    with services.sessions.begin() as session:
        session.add(ended)
    assert services.background_sweep is not None

    swept = services.background_sweep.wait_for_sweep(timeout=30)

    assert swept is not None
    assert swept.sessions >= 1
    with services.sessions() as session:
        assert session.get(WebSession, ended.token_digest) is None
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0
