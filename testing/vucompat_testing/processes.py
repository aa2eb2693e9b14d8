"""Processes the tests, the demo and the benchmarks start: the vucompat command of
this venv, and stopping a process we started, by its pid."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

#: the `vucompat` command of the venv this Python runs in
VUCOMPAT = str(Path(sys.executable).parent / "vucompat")
#: the environment to run it in: tables never come from the machine's VUCOMPAT_TABLES
ENV = {k: v for k, v in os.environ.items() if k != "VUCOMPAT_TABLES"}


def alive(pid: int) -> bool:
    """Return True while process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return True
        except ChildProcessError:  # not our child: look at /proc
            status = Path(f"/proc/{pid}/status")
            if not status.exists() or "zombie" in status.read_text():
                return True
        time.sleep(0.02)
    return False


def stop_pid(pid: int | None, timeout: float = 10.0) -> None:
    """Stop a process by pid: SIGTERM, then SIGKILL; wait until it is gone."""
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, timeout):
            return
