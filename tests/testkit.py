"""Helpers several test files share (importable as ``testkit``, like ``tiny_arch``).

A plain module rather than conftest.py: pytest imports every folder's conftest.py under
the one module name ``conftest``, so ``from conftest import ...`` can pick up another
folder's."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def current_umask() -> int:
    """The process umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def wait_for_file(path: Path, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Wait until ``proc`` creates ``path``: fails at once if it exits first (with its
    output), and after ``timeout`` seconds if it never gets there (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never got to {what} within {timeout} s"
        time.sleep(0.05)


# Holds an output the way a running command does, until told to stop: "lock" takes the
# output's lock and waits for a line on stdin; "dir" stages a 1 MiB file inside atomic_dir
# and sleeps (for a test to kill it mid-write).
_HOLDER = textwrap.dedent("""
    import sys, time
    from e3d_runtime.atomic import atomic_dir, output_lock
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "lock":
        with output_lock(path):
            print("held", flush=True)
            sys.stdin.readline()
    else:
        with atomic_dir(path) as d:
            (d / "big.bin").write_bytes(b"x" * (1 << 20))
            print("staged", flush=True)
            time.sleep(600)
""")


def start_holder(mode: str, path) -> subprocess.Popen:
    """A process holding ``path`` (see ``_HOLDER``), returned once it holds it. Release a
    "lock" holder with ``communicate("\\n")``; kill a "dir" holder."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, mode, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == {"lock": "held", "dir": "staged"}[mode]
    except BaseException:
        proc.kill()
        proc.wait(timeout=60)
        raise
    return proc
