"""The sweep of what expired: logins and ceremonies (FIDO2 registrations, PIV enrolments) a
while after their time ran out, browser sessions that ended, throttles that drained and
fixed-window limits whose window passed, and the OpenID Provider's requests, codes, tokens and
assertion ids once expired. Nothing else: the audit log, identities, credentials
and migration flows stay. ``akkreditiv maintenance sweep`` runs it; the service runs it too,
in the background (``BackgroundSweep``), one process at a time."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sqlalchemy.orm import Session, sessionmaker

from server.domain.model import CeremonyKind
from server.services.audit import append_with_retry
from server.services.throttles import KEY_ENTRY_WINDOW
from server.storage.sweep_repositories import SweepRepository

log = logging.getLogger(__name__)

LOGINS = (CeremonyKind.LOGIN, CeremonyKind.LEGACY_LOGIN)
CEREMONIES = (CeremonyKind.FIDO_REGISTRATION, CeremonyKind.PIV_ENROLMENT)
LEASE = "sweep"


@dataclass(frozen=True)
class SweepPolicy:
    """``grace``: how long a login or ceremony is kept after it expired (its pages can still
    say what happened to it, and send the person back to the provider). ``batch``: rows
    removed per transaction."""

    grace: dt.timedelta = dt.timedelta(days=1)
    batch: int = 1000


@dataclass(frozen=True)
class Swept:
    """How many of each were removed."""

    logins: int = 0
    ceremonies: int = 0
    sessions: int = 0
    throttles: int = 0
    rate_limits: int = 0
    oidc: int = 0  # the OpenID Provider's requests, codes, tokens and assertion ids

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


Step = Callable[[SweepRepository, int], int]


class Sweep:
    """Removes what expired by the clock's now, a batch per transaction. ``actor`` is who the
    audit entry of a sweep that removed anything names."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: SweepPolicy,
        *,
        actor: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._actor = actor
        self._clock = clock

    def run(self) -> Swept:
        """Sweep everything that expired; how many of each went."""
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        expired = now - self._policy.grace
        steps: dict[str, Step] = {
            "logins": lambda sweep, n: sweep.transactions(LOGINS, expired, limit=n),
            "ceremonies": lambda sweep, n: sweep.transactions(CEREMONIES, expired, limit=n),
            "sessions": lambda sweep, n: sweep.sessions(now, limit=n),
            "throttles": lambda sweep, n: sweep.throttles(int(now.timestamp() * 1000), limit=n),
            "rate_limits": lambda sweep, n: sweep.rate_limits(now - KEY_ENTRY_WINDOW, now, limit=n),
            "oidc": lambda sweep, n: sweep.oidc(now, limit=n),
        }
        swept = Swept(**{name: self._all(step) for name, step in steps.items()})
        if swept.total:
            append_with_retry(
                self._sessions,
                "maintenance.swept",
                actor=self._actor,
                subject="-",
                details={**swept.as_dict(), "grace_s": int(self._policy.grace.total_seconds())},
                clock=self._clock,
            )
        return swept

    def run_if_due(self, holder: str, every: dt.timedelta) -> Swept | None:
        """Sweep if no process swept within ``every``: ``holder`` takes the sweep's lease for
        that long first (None when another process holds it)."""
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        with self._sessions.begin() as session:
            if not SweepRepository(session).take_lease(LEASE, holder, now, now + every):
                return None
        return self.run()

    def _all(self, step: Step) -> int:
        batch, removed = self._policy.batch, 0
        while True:
            with self._sessions.begin() as session:
                count = step(SweepRepository(session), batch)
            removed += count
            if count < batch:
                return removed


class BackgroundSweep:
    """The service's own sweep: a thread of each worker looks every quarter of ``every_s``
    whether a sweep is due, and sweeps when it gets the lease, so the processes sharing a
    database sweep once per ``every_s`` between them."""

    def __init__(self, sweep: Sweep, every_s: float) -> None:
        self._sweep = sweep
        self._every = dt.timedelta(seconds=every_s)
        self._holder = f"{socket.gethostname()}:{os.getpid()}"[:128]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ran = threading.Condition()
        self._last: Swept | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None

    def wait_for_sweep(self, timeout: float) -> Swept | None:
        """The next sweep this process makes (None if none within ``timeout`` seconds)."""
        with self._ran:
            self._last = None
            self._ran.wait_for(lambda: self._last is not None, timeout)
            return self._last

    def _run(self) -> None:
        poll = self._every.total_seconds() / 4
        while not self._stopping.wait(poll):
            try:
                swept = self._sweep.run_if_due(self._holder, self._every)
            except Exception:  # the thread must outlive a database that is busy or down
                log.exception("sweep failed")
                continue
            if swept is None:
                continue
            log.info("swept %s", swept.as_dict())
            with self._ran:
                self._last = swept
                self._ran.notify_all()
