"""Processes that run a script at the same moment, as the workers of ``akkreditiv serve`` do
when they start: each gets ready (imports done, engine made) and prints ``ready``, then all are
told to go together."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
# The script's first lines up to ``READY`` run before the start; the rest after it.
READY = "print('ready', flush=True)\nsys.stdin.readline()\n"


def run_together(script: str, argvs: Sequence[Sequence[str]], timeout: float = 120) -> list[str]:
    """Run ``script`` (which prints ``ready`` and reads a line before its work, see ``READY``)
    in one process per argument list, all started at once; every process's stderr once all
    ended. Asserts that each exited 0."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for argv in argvs
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "ready\n", worker.communicate(timeout=timeout)[1]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    errors = [worker.communicate(timeout=timeout)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * len(workers), errors
    return errors
