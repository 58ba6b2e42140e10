"""What the benchmarks share: a rate measurement, a free vpcd reader, a simulated token
attached to it in its own process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from akkreditiv.cli.pcscd import VpcdReader, ensure_pcscd
from devices.transports.pcsc import PcscContext


def rate(operation: Callable[[], object], seconds: float, minimum: int) -> tuple[float, int]:
    """Operations per second over at least ``seconds`` and ``minimum`` operations."""
    operation()  # warm up: first-use costs are not the rate
    count = 0
    start = time.perf_counter()
    while True:
        operation()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= minimum:
            return count / elapsed, count


def free_reader() -> VpcdReader | None:
    """The first vpcd reader with no card (pcscd is started if needed)."""
    readers = ensure_pcscd()
    with PcscContext() as context:
        free = [r for r in readers if context.card_present(r.name) is None]
    if not free:
        print("every vpcd reader holds a card; stop other simulators first", file=sys.stderr)
        return None
    return free[0]


@contextmanager
def attached(kind: str, state: Path, reader: VpcdReader) -> Iterator[None]:
    """The token from ``state`` on ``reader``, in its own process, present when entered."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "akkreditiv",
            "sim",
            "attach",
            kind,
            "--state",
            str(state),
            "--vpcd",
            f"127.0.0.1:{reader.port}",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        with PcscContext() as context:
            context.wait_for(reader.name, present=True, timeout=15)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
