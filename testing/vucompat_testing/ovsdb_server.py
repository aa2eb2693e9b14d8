"""A private ovsdb-server in a directory of its own: for tests, the demo and the
benchmarks. It listens on a unix socket in that directory and, when asked, on a
loopback TCP port the kernel picks; it is stopped by its pid. It never touches the
system's OVS sockets or databases.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from vucompat_testing.processes import stop_pid
from vucompat.ovsdb.tls import SslOptions
from vucompat.ovsdb.schema import SCHEMA_FILE

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
_PORT = re.compile(r"listening on port (\d+)")


@dataclass
class OvsdbSandbox:
    """One ovsdb-server serving the VuCompat database (and, with `vswitch`, an
    Open_vSwitch database too) from `directory`."""

    directory: Path
    vswitch: bool = True
    tcp: bool = False
    #: with tcp: listen with SSL (pssl:) using these files instead of plain TCP
    ssl: SslOptions | None = None
    pid: int | None = field(default=None, init=False)
    tcp_port: int | None = field(default=None, init=False)

    @property
    def registry_db(self) -> Path:
        return self.directory / "vucompat.db"

    @property
    def conf_db(self) -> Path:
        return self.directory / "conf.db"

    @property
    def unix_remote(self) -> str:
        return f"unix:{self.directory / 'db.sock'}"

    @property
    def tcp_remote(self) -> str:
        """tcp:127.0.0.1:PORT, or ssl:127.0.0.1:PORT when the sandbox has SSL files."""
        if self.tcp_port is None:
            raise RuntimeError("this sandbox does not listen on TCP")
        return f"{'ssl' if self.ssl else 'tcp'}:127.0.0.1:{self.tcp_port}"

    @property
    def ctl(self) -> Path:
        return self.directory / "ovsdb-server.ctl"

    @property
    def log(self) -> Path:
        return self.directory / "ovsdb-server.log"

    def create(self, schema: Path = SCHEMA_FILE) -> None:
        """Create the database files (the registry from `schema`) if missing."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.registry_db.exists():
            subprocess.run(["ovsdb-tool", "create", str(self.registry_db), str(schema)], check=True)
        if self.vswitch and not self.conf_db.exists():
            subprocess.run(["ovsdb-tool", "create", str(self.conf_db), str(VSWITCH_SCHEMA)], check=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start ovsdb-server (creating the databases first if needed); return
        when it answers on its socket."""
        self.create()
        self.log.unlink(missing_ok=True)
        dbs = ([str(self.conf_db)] if self.vswitch else []) + [str(self.registry_db)]
        remotes = [f"--remote=p{self.unix_remote}"]
        if self.tcp:
            remotes.append(f"--remote={'pssl' if self.ssl else 'ptcp'}:0:127.0.0.1")
        if self.ssl:
            remotes += [f"--private-key={self.ssl.private_key}", f"--certificate={self.ssl.certificate}",
                        f"--ca-cert={self.ssl.ca_cert}"]
        pidfile = self.directory / "ovsdb-server.pid"
        # stderr: before detaching it echoes its first log line to the console
        subprocess.run(["ovsdb-server", *dbs, *remotes, f"--unixctl={self.ctl}", f"--pidfile={pidfile}",
                        f"--log-file={self.log}", "--detach", "--no-chdir"], check=True, stderr=subprocess.DEVNULL)
        self.pid = int(pidfile.read_text())
        deadline = time.monotonic() + timeout
        while self.tcp and self.tcp_port is None:
            match = _PORT.search(self.log.read_text()) if self.log.exists() else None
            if match:
                self.tcp_port = int(match.group(1))
            elif time.monotonic() > deadline:
                raise RuntimeError(f"ovsdb-server in {self.directory} did not report its TCP port")
            else:
                time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL) and wait until it is gone."""
        stop_pid(self.pid, timeout)
        self.pid = None
        self.tcp_port = None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the server (SIGKILL: a crash, for the tests)."""
        if self.pid is not None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "OvsdbSandbox":
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def select(remote: str, table: str, columns: list[str] | None = None, database: str = "VuCompat") -> list[dict]:
    """Return the rows of `table` straight from the server (one raw JSON-RPC select)."""
    from vucompat.ovsdb import rpc

    op: dict = {"op": "select", "table": table, "where": []}
    if columns:
        op["columns"] = columns
    return rpc.transact(remote, database, [op])[0]["rows"]
