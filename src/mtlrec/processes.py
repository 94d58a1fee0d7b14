"""Child processes that do not outlive their parent: serving workers and data-parallel training ranks.

A process started in its own session (torchrun starts every rank so) or by a parent that is SIGKILLed gets no signal
when the parent dies: it would go on alone (a training rank would finish the run and write it under a later
``--resume``; a serving worker would hold the port). These helpers make it stop instead."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

ORPHAN_CHECK_S = 1.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_when_orphaned(parent: int, signum: int = signal.SIGTERM, interval: float = ORPHAN_CHECK_S) -> None:
    """Send ``signum`` to this process once ``parent`` is no longer its parent (checked every ``interval`` s from a
    daemon thread)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, daemon=True, name="mtlrec-orphan-watch").start()


def dies_with_this_process(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess``: the child gets ``signum`` when this process dies, however it dies
    (Linux's PR_SET_PDEATHSIG). None elsewhere: the child then outlives a SIGKILLed parent."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(int(signum)))  # arg2 is an unsigned long
        if os.getppid() != parent:  # the parent died before the line above: no signal will come
            os.kill(os.getpid(), signum)

    return arm
