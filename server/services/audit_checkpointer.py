"""When the service signs a checkpoint of the audit chains' heads: at least every N entries and
every M seconds, from a thread of its own (never on a login's path), and never for chains that
do not extend the last checkpoint."""

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
from server.services.audit_chain import Anchor, genesis
from server.services.audit_checkpoints import (
    Checkpoint,
    CheckpointFile,
    CheckpointKey,
    CheckpointRejected,
    verify_all,
    verify_checkpoint,
)
from server.services.errors import AuditChainBroken, Breakage
from server.storage.audit_repositories import AuditRepository, ChainHead

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
    """Signs the chains' heads into the checkpoint file when due.

    The append path only calls ``noticed(chain, seq)``: a comparison in memory, no I/O. The
    thread (``start``/``stop``, from the app's lifespan) wakes when enough entries were
    noticed, or every ``POLL_S`` to look at the clock, and then ``checkpoint_if_due`` decides
    under the file's lock, from the last checkpoint in the file and the committed heads (all
    read in one statement), so several worker processes sign each state of the log once.
    Before signing, the entries each chain gained since the last checkpoint are verified
    against it: a rewritten or cut chain is reported, never signed.
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
        self._noticed: dict[int, int] = {}  # by chain, the highest seq this process appended
        self._covered: dict[int, int] = {}  # by chain, the seq the last checkpoint seen names
        self._covered_at = -math.inf  # and when it was signed (``clock`` seconds)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def noticed(self, chain: int, seq: int) -> None:
        """Entry ``seq`` of chain ``chain`` was appended (not necessarily committed yet)."""
        if seq > self._noticed.get(chain, 0):
            self._noticed[chain] = seq
        if seq - self._covered.get(chain, 0) >= self._policy.every_entries:
            self._wake.set()

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint in the file, each verified; ``CheckpointRejected`` if one fails."""
        return verify_all(self.file.tokens(), {self.key.key_id: self.key.public_key()})

    def checkpoint_if_due(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the committed heads if a checkpoint is due (with ``force``: if a head moved).

        Raises ``AuditChainBroken`` when a chain does not extend the last checkpoint (nothing
        is signed), ``CheckpointRejected`` when the file's last line is not the service's."""
        with self.file.locked() as file:
            token = file.last_token()
            last = None if token is None else self._own(token)
            signed = {} if last is None else {head.chain: head for head in last.heads}
            with self._sessions() as session:
                heads = [head for head in AuditRepository(session).heads() if head.seq > 0]
                grown = _grown(signed, heads)
                if not grown:
                    self._remember(last)
                    return None
                now = self._clock()
                if not force and not self._due(last, heads, now):
                    self._remember(last)
                    return None
                for head in grown:
                    start = signed.get(head.chain, Anchor(head.chain, 0, genesis(head.chain)))
                    verify_segment(session, head.chain, start[1:], (head.seq, head.hash))
            checkpoint = self.key.sign(
                [Anchor(*head) for head in heads], dt.datetime.fromtimestamp(now, dt.UTC)
            )
            file.append(checkpoint)
        self._remember(checkpoint)
        log.info("audit checkpoint signed at %d entries", checkpoint.entries)
        return checkpoint

    def _own(self, token: str) -> Checkpoint:
        return verify_checkpoint(token, {self.key.key_id: self.key.public_key()}, line=0)

    def _due(self, last: Checkpoint | None, heads: list[ChainHead], now: float) -> bool:
        if last is None:
            return True
        # The noticed seqs count entries not committed yet: the entry that made a checkpoint
        # due may still be in its transaction, and the heads before it are signed then.
        covered = {head.chain: head.seq for head in last.heads}
        seqs = {head.chain: head.seq for head in heads}
        for chain, seq in self._noticed.items():
            seqs[chain] = max(seq, seqs.get(chain, 0))
        grown = sum(seq - covered.get(chain, 0) for chain, seq in seqs.items())
        since = now - dt.datetime.fromisoformat(last.at).timestamp()
        return grown >= self._policy.every_entries or since >= self._policy.every_s

    def _remember(self, checkpoint: Checkpoint | None) -> None:
        if checkpoint is not None:
            self._covered = {head.chain: head.seq for head in checkpoint.heads}
            self._covered_at = dt.datetime.fromisoformat(checkpoint.at).timestamp()

    def _uncovered(self) -> int:
        return sum(
            max(0, seq - self._covered.get(chain, 0)) for chain, seq in self._noticed.items()
        )

    def _looks_due(self) -> bool:
        uncovered = self._uncovered()
        if uncovered == 0:
            return False
        return (
            uncovered >= self._policy.every_entries
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
                    self._covered = dict(self._noticed)
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


def _grown(signed: dict[int, Anchor], heads: list[ChainHead]) -> list[ChainHead]:
    """The chains that grew since the checkpoint ``signed``; ``AuditChainBroken`` when one of
    them does not reach it (cut: REMOVED) or ends elsewhere at its length (ALTERED)."""
    now = {head.chain: head for head in heads}
    for chain, anchor in signed.items():
        head = now.get(chain, ChainHead(chain, 0, genesis(chain)))
        if head.seq < anchor.seq:
            raise AuditChainBroken(head.seq + 1, Breakage.REMOVED, chain=chain)
        if head.seq == anchor.seq and head.hash != anchor.hash:
            raise AuditChainBroken(head.seq, Breakage.ALTERED, chain=chain)
    return [head for head in heads if head.seq > signed.get(head.chain, Anchor(0, 0, "")).seq]
