"""The migration plan: waves (a cohort of legacy users, a start, a quota and a deadline), the
invitations that go out per wave, and the reminders for people who were invited and have not
started, or whose flow stopped. Five million people move in waves so the assisted channels are
not overrun; the operators' mailing system sends the letters from the lists made here.

Every step is set-based SQL (``storage.wave_repositories``), never a Python loop over people.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping

from sqlalchemy.orm import Session

from server.services.identities import AuditHook, no_audit
from server.services.migration.wave_values import (
    MAX_QUOTA,
    NAME_LENGTH,
    PLAN_ZONE,
    Cohort,
    InvalidWave,
    InvitationRun,
    Reminder,
    ReminderPolicy,
    ReminderRun,
    WaveExists,
    WaveNotFound,
    WaveNotStarted,
    WaveSummary,
)
from server.storage.migration_tables import MigrationWave
from server.storage.wave_repositories import WaveRepository, cohort_condition

DEFAULT_BATCH = 50_000  # legacy users read per transaction


class MigrationPlan:
    """Waves, invitations and reminders over one session. ``clock`` returns seconds since the
    epoch (``Services.clock``). Creating a wave leaves committing to the caller; ``invite``
    commits after each batch (see there); ``remind`` leaves its one transaction open so the
    caller can write the mailing list first and commit only when it is safely written."""

    def __init__(
        self,
        session: Session,
        clock: Callable[[], float] = time.time,
        audit: AuditHook = no_audit,
    ) -> None:
        self._session = session
        self._waves = WaveRepository(session)
        self._clock = clock
        self._audit = audit

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    # --- waves ---------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        cohort: Cohort | Mapping[str, object],
        starts_on: dt.date,
        deadline: dt.date,
        quota: int,
    ) -> MigrationWave:
        """Plan a wave. Raises ``InvalidWave`` (which field) or ``WaveExists``."""
        name = name.strip()
        if not 0 < len(name) <= NAME_LENGTH or not name.isprintable():
            raise InvalidWave("name", f"1-{NAME_LENGTH} printable characters")
        parsed = cohort if isinstance(cohort, Cohort) else Cohort.from_json(cohort)
        if deadline <= starts_on:
            raise InvalidWave("deadline", "the deadline is after the start date")
        if isinstance(quota, bool) or not 0 < quota <= MAX_QUOTA:
            raise InvalidWave("quota", f"the quota is a number of people, 1-{MAX_QUOTA}")
        wave = MigrationWave(
            name=name,
            cohort=parsed.to_json(),
            starts_on=starts_on,
            deadline=deadline,
            quota=quota,
            created_at=self.now(),
        )
        if not self._waves.add(wave):
            raise WaveExists(f"wave {name!r} exists")
        self._audit(
            "migration.wave_created",
            {
                "wave": name,
                "cohort": parsed.to_json(),
                "starts_on": starts_on.isoformat(),
                "deadline": deadline.isoformat(),
                "quota": quota,
            },
        )
        return wave

    def get(self, name: str) -> MigrationWave:
        wave = self._waves.by_name(name.strip())
        if wave is None:
            raise WaveNotFound(f"no wave {name!r}")
        return wave

    def list(self) -> list[WaveSummary]:
        """Every wave, by start date then name, with the number invited so far."""
        return [
            WaveSummary(
                id=wave.id,
                name=wave.name,
                cohort=Cohort.from_json(wave.cohort),
                starts_on=wave.starts_on,
                deadline=wave.deadline,
                quota=wave.quota,
                invited=count,
            )
            for wave, count in self._waves.with_invited()
        ]

    # --- invitations -----------------------------------------------------------------------------

    def invite(self, name: str, *, batch_size: int = DEFAULT_BATCH) -> InvitationRun:
        """Invite the wave's cohort up to its quota: legacy users who are active (so not
        migrated), have no flow yet and were invited by no wave, in user-id order.

        The legacy users are walked in user-id order, ``batch_size`` of them at a time; each
        batch is an ``INSERT ... SELECT`` over that range of the primary key, committed on its
        own, so a long run holds the write lock only briefly, every batch costs the same however
        far the walk has come, and a killed run keeps whole batches. Running it again walks
        again and invites only those not invited yet (one invitation per person is the primary
        key), so nobody twice.
        The wave's row is locked for each batch, so two runs for one wave cannot pass its
        quota; a person whom another wave's run invited first is skipped.
        """
        if batch_size < 1:
            raise ValueError("batch_size is at least 1")
        wave = self.get(name)
        now = self.now()
        if now.astimezone(PLAN_ZONE).date() < wave.starts_on:
            raise WaveNotStarted(f"wave {wave.name!r} starts on {wave.starts_on.isoformat()}")
        cohort = Cohort.from_json(wave.cohort)
        # Not through the cohort's indexes: a batch must read its range of the primary key,
        # not the whole cohort (a bank's million customers) and sort it.
        condition = cohort_condition(cohort.birth_years, cohort.bank, indexed=False)
        after: str | None = None
        invited = batches = total = 0
        while True:
            total = self._waves.lock_and_count(wave.id)
            room = wave.quota - total
            if room <= 0:
                break
            upto = self._waves.range_end(after, batch_size)
            added = self._waves.invite_range(wave.id, now, condition, after, upto, room)
            invited += added
            total += added
            batches += 1
            self._session.commit()
            if upto is None:
                break
            after = upto
        if invited:
            self._audit(
                "migration.wave_invited",
                {"wave": wave.name, "invited": invited, "total": total, "quota": wave.quota},
            )
        self._session.commit()
        return InvitationRun(wave.name, invited, total, wave.quota, batches)

    # --- reminders -------------------------------------------------------------------------------

    def remind(self, policy: ReminderPolicy) -> ReminderRun:
        """Mark everyone due a reminder, in the session's transaction (not committed):

        * invited at least ``after_invitation`` ago, no flow yet: the invitation's
          ``reminded_at`` and ``reminders`` move on;
        * a flow not completed and untouched for ``idle`` (abandoned ones too): the flow's
          ``reminded_at`` moves on and a ``reminded`` event records the step it stopped at
          (the invitation, if any, counts the reminder too). The event is not activity: the
          report does not take a reminded flow for a resumed one.

        Nobody whose legacy user is no longer active is reminded, nobody twice within
        ``interval``, and nobody more than ``max_reminders`` times to start, or to finish.
        Read the list with ``reminders(run.at)`` before committing.
        """
        now = self.now()
        not_before = now - policy.interval
        most = policy.max_reminders
        not_started = self._waves.remind_not_started(
            now, now - policy.after_invitation, not_before, most
        )
        idle = self._waves.remind_idle(now, now - policy.idle, not_before, most)
        run = ReminderRun(now, not_started, idle)
        if not_started or idle:
            self._audit(
                "migration.reminded",
                {"not_started": not_started, "idle": idle, "at": now.isoformat()},
            )
        return run

    def reminders(self, at: dt.datetime, *, chunk: int = 1000) -> Iterator[Reminder]:
        """The people the run at ``at`` reminded, by user id, read ``chunk`` rows at a time
        (the list can be hundreds of thousands long)."""
        for row in self._waves.reminded(at, chunk=chunk):
            yield Reminder(
                user_id=row[0],
                person_number=row[1],
                name=row[2],
                reason=row[3],
                wave=row[4],
                step=row[5],
                invited_at=row[6],
                count=int(row[7]),
            )
