"""A private ovsdb-server in a directory of its own, for tests, the demo and the
benchmarks (a Daemon). It listens on a unix socket in that directory and, when
asked, on a loopback TCP port the kernel picks; it is stopped by its pid. It never
touches the system's OVS sockets or databases.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from vucompat.ovsdb.tls import SslOptions
from vucompat.ovsdb.schema import SCHEMA_FILE
from vucompat_testing.daemon import Daemon

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
_PORT = re.compile(r"listening on port (\d+)")


@dataclass
class OvsdbSandbox(Daemon):
    """One ovsdb-server serving the VuCompat database (and, with `vswitch`, an
    Open_vSwitch database too) from `directory`."""

    directory: Path
    vswitch: bool = True
    tcp: bool = False
    #: with tcp: listen with SSL (pssl:) using these files instead of plain TCP
    ssl: SslOptions | None = None
    tcp_port: int | None = field(default=None, init=False)
    stem: ClassVar[str] = "ovsdb-server"

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
        return self.file(".ctl")

    def create(self, schema: Path = SCHEMA_FILE) -> None:
        """Create the database files (the registry from `schema`) if missing."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.registry_db.exists():
            subprocess.run(["ovsdb-tool", "create", str(self.registry_db), str(schema)], check=True)
        if self.vswitch and not self.conf_db.exists():
            subprocess.run(["ovsdb-tool", "create", str(self.conf_db), str(VSWITCH_SCHEMA)], check=True)

    def launch(self, timeout: float) -> None:
        """Start ovsdb-server, creating the databases first if needed (start() then
        waits, with `tcp`, until it has reported its TCP port)."""
        self.create()
        self.log.unlink(missing_ok=True)
        dbs = ([str(self.conf_db)] if self.vswitch else []) + [str(self.registry_db)]
        remotes = [f"--remote=p{self.unix_remote}"]
        if self.tcp:
            remotes.append(f"--remote={'pssl' if self.ssl else 'ptcp'}:0:127.0.0.1")
        if self.ssl:
            remotes += [f"--private-key={self.ssl.private_key}", f"--certificate={self.ssl.certificate}",
                        f"--ca-cert={self.ssl.ca_cert}"]
        self.run_detached(["ovsdb-server", *dbs, *remotes, f"--unixctl={self.ctl}"])

    def ready(self) -> bool:
        if self.tcp and self.tcp_port is None:
            match = _PORT.search(self.log.read_text()) if self.log.exists() else None
            self.tcp_port = int(match.group(1)) if match else None
        return not self.tcp or self.tcp_port is not None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL) and wait until it is gone."""
        super().stop(timeout)
        self.tcp_port = None


def select(remote: str, table: str, columns: list[str] | None = None, database: str = "VuCompat",
           where: list | None = None) -> list[dict]:
    """Return the rows of `table` (that match `where`) straight from the server (one
    raw JSON-RPC select)."""
    from vucompat.ovsdb import rpc

    op: dict = {"op": "select", "table": table, "where": where or []}
    if columns:
        op["columns"] = columns
    return rpc.transact(remote, database, [op])[0]["rows"]
