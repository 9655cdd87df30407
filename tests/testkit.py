"""Helpers several test files share (importable as ``testkit``, like ``tiny_arch``).

A plain module rather than conftest.py: pytest imports every folder's conftest.py under
the one module name ``conftest``, so ``from conftest import ...`` can pick up another
folder's."""
from __future__ import annotations

import contextlib
import signal

#: far above the milliseconds a guarded call takes: a hang, never a slow run
HANG_GUARD_S = 30


@contextlib.contextmanager
def hang_guard(seconds: int = HANG_GUARD_S):
    """Fail the guarded block if it runs for ``seconds`` (a hang, not a slow run): SIGALRM
    interrupts even a blocking system call, so the test fails instead of hanging the suite."""
    def _raise(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")
    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
