"""Fault injection from outside the simulator process.

A test rig writes a fault plan next to a token's state file (``STATE.faults``); the running
simulator reads it before and after every command, so faults can be armed while the token is
attached, exactly when a rig wants them. A fault fires once and is then removed from the plan.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from firmware_sim.state import write_atomic


class Action(StrEnum):
    PULL = "pull"  # the token is pulled out: the connection drops, no answer is sent
    DELAY = "delay"  # the token is slow: it works ``seconds`` longer on the command
    CORRUPT = "corrupt"  # the answer's data arrives cut in half (the status word intact)


class Phase(StrEnum):
    BEFORE = "before"  # the command is never executed
    AFTER = "after"  # the command is executed (state saved), the answer is lost


@dataclass(frozen=True)
class Fault:
    action: Action
    phase: Phase = Phase.BEFORE
    # The command to act on: an APDU's INS byte, or on USB the CTAP2 command byte of a CBOR
    # message (the CTAPHID command for other messages). None matches any command.
    ins: int | None = None
    seconds: float = 0.0

    def matches(self, code: int, phase: Phase) -> bool:
        return phase is self.phase and (self.ins is None or code == self.ins)


def plan_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".faults")


def arm(state_path: Path, fault: Fault) -> None:
    faults = [*FaultPlan(state_path).faults(), fault]
    write_atomic(
        plan_path(state_path),
        json.dumps([asdict(f) for f in faults]).encode("utf-8"),
    )


def clear(state_path: Path) -> None:
    plan_path(state_path).unlink(missing_ok=True)


class FaultPlan:
    """The plan for one token; re-read only when the file changes."""

    def __init__(self, state_path: Path) -> None:
        self.path = plan_path(state_path)
        self._stamp: tuple[int, int] | None = None
        self._faults: list[Fault] = []

    def faults(self) -> list[Fault]:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._faults = None, []
            return []
        stamp = (info.st_mtime_ns, info.st_ino)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                raw = json.loads(self.path.read_text("utf-8"))
                self._faults = [
                    Fault(
                        Action(item["action"]),
                        Phase(item["phase"]),
                        item.get("ins"),
                        float(item.get("seconds", 0.0)),
                    )
                    for item in raw
                ]
            except (OSError, ValueError, KeyError, TypeError):
                self._faults = []
        return list(self._faults)

    def take(self, code: int, phase: Phase, action: Action | None = None) -> Fault | None:
        """The first armed fault for this command and phase (and action, if given), removed
        from the plan."""
        faults = self.faults()
        for index, fault in enumerate(faults):
            if fault.matches(code, phase) and (action is None or fault.action is action):
                rest = faults[:index] + faults[index + 1 :]
                if rest:
                    write_atomic(self.path, json.dumps([asdict(f) for f in rest]).encode())
                else:
                    self.path.unlink(missing_ok=True)
                return fault
        return None
