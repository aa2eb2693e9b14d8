"""Stopping processes we started (test, demo and benchmark sandboxes), by pid."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


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
