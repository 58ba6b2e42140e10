"""User presence for the simulated FIDO2 key: the touch the authenticator core waits for,
and the CTAPHID keepalive status codes sent while it waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

STATUS_PROCESSING = 1
STATUS_UP_NEEDED = 2


class UserPresence(Protocol):
    def wait(self, timeout: float, keepalive: Callable[[int], None]) -> bool:
        """Block until the user touches the key (True) or timeout/cancel (False), calling
        ``keepalive(2)`` about every 100 ms meanwhile."""
        ...


@runtime_checkable
class CancellablePresence(UserPresence, Protocol):
    def take_cancel(self) -> bool:
        """Whether the host cancelled since the last call; clears the flag."""
        ...


class AlwaysPresent:
    """NFC: holding the key to the reader is the presence."""

    def wait(self, timeout: float, keepalive: Callable[[int], None]) -> bool:
        return True

    def take_cancel(self) -> bool:
        return False


class ButtonPresence:
    """A touch button another thread presses. A press before anyone waits is remembered
    and consumed by the next wait; ``cancel`` ends a pending wait (CTAPHID_CANCEL)."""

    keepalive_interval = 0.1

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._pressed = False
        self._cancelled = False

    def press(self) -> None:
        with self._condition:
            self._pressed = True
            self._condition.notify_all()

    def cancel(self) -> None:
        with self._condition:
            self._cancelled = True
            self._condition.notify_all()

    def take_cancel(self) -> bool:
        with self._condition:
            cancelled, self._cancelled = self._cancelled, False
            return cancelled

    @property
    def pending_press(self) -> bool:
        return self._pressed

    def wait(self, timeout: float, keepalive: Callable[[int], None]) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            with self._condition:
                if self._cancelled:
                    return False
                if self._pressed:
                    self._pressed = False
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
            keepalive(STATUS_UP_NEEDED)  # outside the lock: it may press from this thread
            with self._condition:
                if not (self._pressed or self._cancelled):
                    self._condition.wait(min(self.keepalive_interval, remaining))
