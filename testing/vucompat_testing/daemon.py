"""One base for the daemons the tests, the demo and the benchmarks start:
ovsdb-server (OvsdbSandbox), a fleet cluster's servers (Member), ovs-vswitchd-dpdk
(Vswitchd), dpdk-testpmd (Testpmd), QEMU (Guest) and `vucompat agent` (AgentProcess).

Each runs from a directory of its own, where its files are named after its `stem`
(<stem>.log, <stem>.pid; OVS daemons add <stem>.ctl). start() launches it and waits
until it is ready; stop() asks it to quit, then stops it by its pid (SIGTERM, then
SIGKILL) and removes its pid file, so that no one stops a reused pid later. Nothing
here touches the system's own daemons: every process is one this code started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar, Self, Sequence

from vucompat_testing.processes import alive, stop_pid


class Daemon:
    """A process started from `directory` and stopped by its pid; a context manager
    (start, then stop).

    A subclass (a dataclass) gives `directory`, its `stem`, and launch(): the command
    started either detached (run_detached: an OVS daemon writes its pid file) or as
    our child (spawn). ready() says when it can be used; quit() is the polite request
    stop() makes before the signals."""

    #: the name of its files in `directory` (a class attribute, or a property)
    stem: ClassVar[str] = "daemon"
    directory: Path
    #: the pid while it runs (None before start and after stop)
    pid: int | None = None
    #: the process when it is our child (spawn), else None
    process: subprocess.Popen | None = None

    def file(self, suffix: str) -> Path:
        """Return <directory>/<stem><suffix>."""
        return self.directory / f"{self.stem}{suffix}"

    @property
    def log(self) -> Path:
        return self.file(".log")

    @property
    def pidfile(self) -> Path:
        return self.file(".pid")

    # ---- what a subclass gives --------------------------------------------------------------

    def launch(self, timeout: float) -> None:
        """Start the process (without waiting for it to be ready); set `pid`."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Return True once the daemon can be used (its socket exists, its port is known)."""
        return True

    def quit(self) -> None:
        """Ask the daemon to exit by itself (ovs-appctl exit, QMP quit); stop() sends
        the signals after it, to what is left."""

    def error(self, message: str) -> Exception:
        """Return the exception start() raises when the daemon dies or is not ready in time."""
        return RuntimeError(f"{message}: see {self.log}")

    # ---- the life cycle ---------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Launch the daemon and return once it is ready. Raises error(...) when it
        exits first or is not ready within `timeout` seconds, and what launch() raises;
        whatever started is stopped then."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.launch(timeout)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        """Poll ready() until it says yes; raises error(...) when the daemon exits or
        `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.running():
                raise self.error(f"{self.stem} in {self.directory} exited at start")
            if time.monotonic() > deadline:
                raise self.error(f"{self.stem} in {self.directory} was not ready in {timeout:g} s")
            time.sleep(0.02)

    def running(self) -> bool:
        """Return True while the process lives."""
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """quit(), then SIGTERM and SIGKILL by pid to what is left; wait until it is
        gone and remove its pid file. Does nothing when it does not run."""
        if self.pid is not None and self.running():
            try:
                self.quit()
            except Exception:  # noqa: BLE001 - a failed polite request: the signals follow
                pass
            if self.running():
                stop_pid(self.pid, timeout)
        if self.process is not None:
            self.process.poll()  # it was reaped by pid: let Popen know
        self.pid = None
        self.process = None
        self.pidfile.unlink(missing_ok=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (SIGKILL: a crash, for the tests); stop() cleans up after."""
        if self.pid is not None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---- helpers for launch() ---------------------------------------------------------------

    def run_detached(self, command: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None,
                     prefix: Sequence[str] = (), umask: int = -1) -> None:
        """Run an OVS daemon that detaches, with its pid file and log here (--pidfile,
        --log-file, --detach, --no-chdir added), under `prefix` (e.g. unshare -n), with
        `umask` (-1: ours); set `pid` from its pid file. Raises
        subprocess.CalledProcessError when it fails."""
        self.pidfile.unlink(missing_ok=True)
        # stderr: before detaching, OVS daemons echo their first log line to the console
        subprocess.run([*prefix, *command, f"--pidfile={self.pidfile}", f"--log-file={self.log}", "--detach",
                        "--no-chdir"], check=True, env=env, stderr=subprocess.DEVNULL, timeout=timeout, umask=umask)
        self.pid = self.read_pidfile()

    def read_pidfile(self) -> int:
        """Return the pid in the pid file."""
        return int(self.pidfile.read_text())

    def spawn(self, command: Sequence[str], write_pidfile: bool = True, **popen: Any) -> subprocess.Popen:
        """Start `command` as our child (Popen with `popen`); set `pid` and `process`;
        record the pid in the pid file unless the program writes it itself."""
        self.process = subprocess.Popen(list(command), **popen)
        self.pid = self.process.pid
        if write_pidfile:
            self.pidfile.write_text(f"{self.pid}\n")
        return self.process
