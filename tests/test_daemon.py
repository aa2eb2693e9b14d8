"""The one base of the daemons the tests, the demo and the benchmarks start
(vucompat_testing.daemon): a started daemon has its pid file; stop() asks it to quit,
stops what is left by pid and removes the file; a daemon that dies at start, or is
not ready in time, is reported with its log and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from vucompat_testing.daemon import Daemon
from vucompat_testing.processes import alive


@dataclass
class Sleeper(Daemon):
    """A Python process that says "up" on its log, then sleeps."""

    directory: Path
    script: str = "import time; print('up', flush=True); time.sleep(60)"
    refuse_quit: bool = False
    stem: ClassVar[str] = "sleeper"

    def launch(self, timeout: float) -> None:
        with open(self.log, "w") as log:
            self.spawn([sys.executable, "-c", self.script], stdout=log, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        return "up" in self.log.read_text()

    def quit(self) -> None:
        if self.refuse_quit:
            raise OSError("no control socket")


def test_a_daemon_runs_with_its_pid_file_and_stops_by_pid(tmp_path: Path):
    with Sleeper(tmp_path) as daemon:
        pid = daemon.pid
        assert pid is not None and alive(pid) and daemon.running()
        assert int(daemon.pidfile.read_text()) == pid and daemon.pidfile == tmp_path / "sleeper.pid"
    assert not alive(pid) and daemon.pid is None and not daemon.pidfile.exists()
    daemon.stop()  # once more: nothing to do


def test_a_failed_quit_falls_back_to_the_signals(tmp_path: Path):
    daemon = Sleeper(tmp_path, refuse_quit=True)
    daemon.start()
    pid = daemon.pid
    daemon.stop()
    assert pid is not None and not alive(pid)


def test_a_daemon_that_dies_at_start_is_reported_with_its_log(tmp_path: Path):
    daemon = Sleeper(tmp_path, script="import sys; print('no configuration'); sys.exit(3)")
    with pytest.raises(RuntimeError, match=r"sleeper in .* exited at start: see .*sleeper\.log"):
        daemon.start()
    assert "no configuration" in daemon.log.read_text()
    assert daemon.pid is None and not daemon.pidfile.exists()


def test_a_daemon_not_ready_in_time_is_stopped(tmp_path: Path):
    daemon = Sleeper(tmp_path, script="import time; time.sleep(60)")
    with pytest.raises(RuntimeError, match="was not ready in 0.5 s"):
        daemon.start(timeout=0.5)
    assert daemon.pid is None and daemon.process is None
