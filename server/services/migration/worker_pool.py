"""Worker processes for CPU-bound work beside this process: the importer's parsing, the
generator's rows."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """``workers`` forked processes, each running ``initializer(*initargs)`` first.

    Forked: "spawn" and "forkserver" run the main module again in each worker, and
    ``python -m akkreditiv`` as a main module runs the command. The workers compute only;
    they touch no connection, lock or thread of the parent. Each dies with the parent: a
    forked worker holds both ends of its task pipe, so it would otherwise wait for work
    forever after a kill of the parent, holding the parent's output pipes open. Forking also
    hands ``initargs`` over as they are, unpickled: they may hold keys and ciphers.
    """
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


def _start_worker(
    parent: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]
) -> None:
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:  # pragma: no cover - Linux only
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
