"""Child processes that do not outlive their parent (mtlrec/processes.py); end to end in test_distributed.py (ranks
under a SIGKILLed launcher) and test_serve_workers.py (workers under a SIGKILLed supervisor)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from mtlrec.processes import dies_with_this_process

READ_DEATH_SIGNAL = (
    "import ctypes; libc = ctypes.CDLL(None); got = ctypes.c_int(); libc.prctl(2, ctypes.byref(got)); print(got.value)"
)  # PR_GET_PDEATHSIG


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_is_armed_with_the_parent_death_signal() -> None:
    for signum in (signal.SIGTERM, signal.SIGKILL):
        armed = subprocess.run([sys.executable, "-c", READ_DEATH_SIGNAL], preexec_fn=dies_with_this_process(signum),
                               capture_output=True, text=True, check=True)  # fmt: skip
        assert int(armed.stdout) == signum
    plain = subprocess.run([sys.executable, "-c", READ_DEATH_SIGNAL], capture_output=True, text=True, check=True)
    assert int(plain.stdout) == 0  # the check above can fail
