"""When the service signs a checkpoint of the audit chain's head: at least every N entries and
every M seconds, from a thread of its own (never on a login's path), and never for a chain that
does not extend the last checkpoint."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from server.services.audit import verify_segment
from server.services.audit_chain import GENESIS
from server.services.audit_checkpoints import (
    Checkpoint,
    CheckpointFile,
    CheckpointKey,
    CheckpointRejected,
    verify_all,
    verify_checkpoint,
)
from server.services.errors import AuditChainBroken, Breakage
from server.storage.repositories import AuditRepository

log = logging.getLogger(__name__)

# How often the thread looks whether a checkpoint is due; it reads the database only when one
# is (or once every ``every_s``, for entries other processes wrote).
POLL_S = 1.0


@dataclass(frozen=True)
class CheckpointPolicy:
    """A checkpoint is due once ``every_entries`` entries or ``every_s`` seconds have passed
    since the last one (and the chain has grown)."""

    every_entries: int = 1000
    every_s: float = 300.0


class Checkpointer:
    """Signs the chain's head into the checkpoint file when due.

    The append path only calls ``noticed(seq)``: a comparison in memory, no I/O. The thread
    (``start``/``stop``, from the app's lifespan) wakes when enough entries were noticed, or
    every ``POLL_S`` to look at the clock, and then ``checkpoint_if_due`` decides under the
    file's lock, from the last checkpoint in the file and the committed head, so several
    worker processes sign each head once. Before signing, the entries since the last checkpoint
    are verified against it: a rewritten or cut chain is reported, never signed.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        key: CheckpointKey,
        file: CheckpointFile,
        policy: CheckpointPolicy,
        *,
        clock: Callable[[], float] = time.time,
        poll_s: float = POLL_S,
    ) -> None:
        self._sessions = sessions
        self.key = key
        self.file = file
        self._policy = policy
        self._clock = clock
        self._poll_s = poll_s
        self._noticed = 0  # the highest seq this process appended
        self._covered = 0  # the seq of the last checkpoint seen in the file
        self._covered_at = -math.inf  # and when it was signed (``clock`` seconds)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def noticed(self, seq: int) -> None:
        """An entry ``seq`` was appended (not necessarily committed yet)."""
        if seq > self._noticed:
            self._noticed = seq
        if seq - self._covered >= self._policy.every_entries:
            self._wake.set()

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint in the file, each verified; ``CheckpointRejected`` if one fails."""
        return verify_all(self.file.tokens(), {self.key.key_id: self.key.public_key()})

    def checkpoint_if_due(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the committed head if a checkpoint is due (with ``force``: if the head moved).

        Raises ``AuditChainBroken`` when the chain does not extend the last checkpoint (nothing
        is signed), ``CheckpointRejected`` when the file's last line is not the service's."""
        with self.file.locked() as file:
            token = file.last_token()
            last = None if token is None else self._own(token)
            start = (0, GENESIS) if last is None else last.anchor
            with self._sessions() as session:
                head = AuditRepository(session).head(lock=False)
                if head[0] < start[0]:
                    raise AuditChainBroken(head[0] + 1, Breakage.REMOVED)
                if head[0] == start[0]:
                    if head[1] != start[1]:
                        raise AuditChainBroken(head[0], Breakage.ALTERED)
                    self._remember(last)
                    return None
                now = self._clock()
                if not force and not self._due(last, head[0], now):
                    self._remember(last)
                    return None
                verify_segment(session, start, head)
            checkpoint = self.key.sign(*head, dt.datetime.fromtimestamp(now, dt.UTC))
            file.append(checkpoint)
        self._remember(checkpoint)
        log.info("audit checkpoint signed at entry %d", checkpoint.seq)
        return checkpoint

    def _own(self, token: str) -> Checkpoint:
        return verify_checkpoint(token, {self.key.key_id: self.key.public_key()}, line=0)

    def _due(self, last: Checkpoint | None, head_seq: int, now: float) -> bool:
        if last is None:
            return True
        # The noticed seq counts entries not committed yet: the entry that made a checkpoint
        # due may still be in its transaction, and the head before it is signed then.
        grown = max(self._noticed, head_seq) - last.seq
        since = now - dt.datetime.fromisoformat(last.at).timestamp()
        return grown >= self._policy.every_entries or since >= self._policy.every_s

    def _remember(self, checkpoint: Checkpoint | None) -> None:
        if checkpoint is not None:
            self._covered = checkpoint.seq
            self._covered_at = dt.datetime.fromisoformat(checkpoint.at).timestamp()

    def _looks_due(self) -> bool:
        if self._noticed <= self._covered:
            return False
        return (
            self._noticed - self._covered >= self._policy.every_entries
            or self._clock() - self._covered_at >= self._policy.every_s
        )

    # --- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Sign the head as found at start (entries written while the service was down), then
        run the thread. A checkpoint folder that cannot be written stops the start here."""
        self._attempt(force=True, fail_on_io=True)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and sign the head as left."""
        if self._thread is not None:
            self._stopping.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        self._attempt(force=True, fail_on_io=False)

    def _run(self) -> None:
        next_sweep = time.monotonic() + self._policy.every_s
        while not self._stopping.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            if self._looks_due() or time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self._policy.every_s
                if not self._attempt(force=False, fail_on_io=False):
                    # Broken or failing: try again at the next sweep, not every second.
                    self._covered = self._noticed
                    self._covered_at = self._clock()

    def _attempt(self, *, force: bool, fail_on_io: bool) -> bool:
        try:
            self.checkpoint_if_due(force=force)
        except (AuditChainBroken, CheckpointRejected) as exc:
            log.error("audit checkpoint refused: %s", exc)
            return False
        except OSError:
            if fail_on_io:
                raise
            log.exception("audit checkpoint not written")
            return False
        except Exception:  # the thread must outlive a database that is down for a while
            log.exception("audit checkpoint failed")
            return False
        return True
