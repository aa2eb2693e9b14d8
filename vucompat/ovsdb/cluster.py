"""The fleet database on OVSDB's clustered (Raft) service model: creating and
joining a cluster, starting its servers, reading a server's cluster status.

All consensus and replication is ovsdb-server's own; this module only wraps
`ovsdb-tool create-cluster` / `join-cluster`, the ovsdb-server command line, and
`ovs-appctl cluster/status`, so that every step is written down once.
`FleetCluster` runs a whole cluster on loopback, for tests, the demo and benchmarks.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vucompat.core.errors import UsageError
from vucompat_testing.processes import stop_pid
from vucompat.ovsdb.admin import _tool
from vucompat.ovsdb.tls import SslOptions
from vucompat.ovsdb.schema import FLEET_DB, FLEET_SCHEMA_FILE

#: where the servers find their listening remotes (rows written by `vucompat fleet configure`)
DB_REMOTES = f"db:{FLEET_DB},Fleet,connections"
_LISTENING = re.compile(r"\|([^|\s]+): listening on port (\d+)")


def create_cluster(db_file: Path, local: str, schema: Path = FLEET_SCHEMA_FILE) -> None:
    """Create the first server's database file of a new cluster (ovsdb-tool
    create-cluster). `local` is the address this server's peers reach it at, e.g.
    ssl:10.0.0.1:6644. Raises UsageError when the file exists or the tool fails."""
    if db_file.exists():
        raise UsageError(message=f"{db_file} already exists: it belongs to a server already; remove it only "
                         "if that server has left its cluster (ovs-appctl cluster/leave)")
    _check_address(local, "--local")
    _tool("ovsdb-tool", "create-cluster", str(db_file), str(schema), local)


def join_cluster(db_file: Path, local: str, remotes: Sequence[str]) -> None:
    """Create a database file that joins an existing cluster (ovsdb-tool
    join-cluster) through any of its members' `remotes` (their raft addresses).
    The server joins when it first starts. Raises UsageError."""
    if db_file.exists():
        raise UsageError(message=f"{db_file} already exists: this server joined already")
    if not remotes:
        raise UsageError(message="join-cluster needs the raft address of at least one member (--remote)")
    for address in (local, *remotes):
        _check_address(address, "an address")
    _tool("ovsdb-tool", "join-cluster", str(db_file), FLEET_DB, local, *remotes)


def _check_address(address: str, what: str) -> None:
    if not re.fullmatch(r"(tcp|ssl):[^:]+:\d+", address):
        raise UsageError(message=f"{what} {address!r} is not a raft address: write tcp:IP:PORT or ssl:IP:PORT "
                         "(the port peers connect to, e.g. 6644)")


def server_command(db_file: Path, rundir: Path, ssl: SslOptions | None) -> list[str]:
    """The ovsdb-server command line of one fleet server: its database file, an
    admin unix socket in `rundir` (no RBAC role: full rights; keep it local), the
    listeners configured in the database itself (`vucompat fleet configure`), and
    the SSL files used by both the listeners and the raft links."""
    command = ["ovsdb-server", str(db_file), f"--remote=punix:{rundir / 'fleet.sock'}", f"--remote={DB_REMOTES}",
               f"--unixctl={rundir / 'fleet.ctl'}", f"--pidfile={rundir / 'fleet.pid'}",
               f"--log-file={rundir / 'fleet.log'}", "--detach", "--no-chdir"]
    if ssl is not None:
        command += [f"--private-key={ssl.private_key}", f"--certificate={ssl.certificate}",
                    f"--ca-cert={ssl.ca_cert}"]
    return command


def cluster_status(ctl: Path, timeout: float = 10) -> dict[str, Any]:
    """Parse `ovs-appctl cluster/status VuCompat_Fleet` of the server whose control
    socket is `ctl`: {"server", "address", "status", "role", "term", "leader",
    "servers": [...]}. Raises UsageError when it does not answer."""
    text = _tool("ovs-appctl", "-t", str(ctl), "cluster/status", FLEET_DB, timeout=timeout)
    fields: dict[str, Any] = {"servers": []}
    in_servers = False
    for line in text.splitlines():
        if line.startswith("Servers:"):
            in_servers = True
            continue
        if in_servers and line.startswith(" "):
            fields["servers"].append(line.strip())
            continue
        in_servers = False
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("name", "cluster id", "server id", "address", "status", "role", "term", "leader", "vote"):
            fields[key.replace(" ", "_")] = int(value) if key == "term" and value.isdigit() else value
    return fields


def free_port() -> int:
    """A TCP port on 127.0.0.1 the kernel says is free now (for raft addresses in tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pki:
    """A certificate authority made with ovs-pki in `directory` (tests, the demo,
    the benchmarks): identity(name) signs a certificate whose CN is exactly `name`
    (`-u`), as RBAC compares it with a host's name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        _tool("ovs-pki", f"--dir={directory / 'ca'}", "init")

    def identity(self, name: str) -> SslOptions:
        """The key, certificate and CA files of `name`, made on first use."""
        key = self.directory / f"{name}-privkey.pem"
        if not key.exists():
            subprocess.run(["ovs-pki", f"--dir={self.directory / 'ca'}", "-u", "req+sign", name, "switch"],
                           cwd=self.directory, check=True, capture_output=True)
        return SslOptions(str(key), str(self.directory / f"{name}-cert.pem"),
                          str(self.directory / "ca" / "switchca" / "cacert.pem"))


@dataclass
class Member:
    """One server of a FleetCluster."""

    rundir: Path
    raft: str
    pid: int | None = None
    #: listener target (as configured) -> the port it is bound to, read from the log
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def db_file(self) -> Path:
        return self.rundir / "fleet.db"

    @property
    def admin_remote(self) -> str:
        return f"unix:{self.rundir / 'fleet.sock'}"

    @property
    def ctl(self) -> Path:
        return self.rundir / "fleet.ctl"

    @property
    def log(self) -> Path:
        return self.rundir / "fleet.log"

    def status(self) -> dict[str, Any]:
        return cluster_status(self.ctl)


@dataclass
class FleetCluster:
    """A fleet cluster of `size` ovsdb-servers on loopback, each in its own
    directory under `directory`, with raft links over SSL when `ssl` is given."""

    directory: Path
    size: int = 3
    ssl: SslOptions | None = None
    members: list[Member] = field(default_factory=list, init=False)

    def start(self, timeout: float = 30) -> None:
        """Create (first start only), start every server and wait for a leader."""
        scheme = "ssl" if self.ssl else "tcp"
        if not self.members:
            self.members = [Member(self.directory / f"s{i + 1}", f"{scheme}:127.0.0.1:{free_port()}")
                            for i in range(self.size)]
            for i, member in enumerate(self.members):
                member.rundir.mkdir(parents=True, exist_ok=True)
                if i == 0:
                    create_cluster(member.db_file, member.raft)
                else:
                    join_cluster(member.db_file, member.raft, [self.members[0].raft])
        for member in self.members:
            if member.pid is None:
                self.start_member(member, wait=False)
        self.wait_for_leader(timeout)

    def start_member(self, member: Member, wait: bool = True, timeout: float = 30) -> None:
        """(Re)start one server; with `wait`, until it is back in the cluster."""
        member.log.unlink(missing_ok=True)
        member.ports.clear()
        subprocess.run(server_command(member.db_file, member.rundir, self.ssl), check=True,
                       stderr=subprocess.DEVNULL)
        member.pid = int((member.rundir / "fleet.pid").read_text())
        if wait:
            deadline = time.monotonic() + timeout
            while member.status().get("status") != "cluster member":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{member.rundir} did not rejoin its cluster")
                time.sleep(0.05)

    def leader(self) -> Member | None:
        """The member that says it is the leader now, or None."""
        for member in self.members:
            if member.pid is None:
                continue
            try:
                if member.status().get("role") == "leader":
                    return member
            except UsageError:
                continue
        return None

    def wait_for_leader(self, timeout: float = 30) -> Member:
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader()
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                raise RuntimeError("the fleet cluster elected no leader")
            time.sleep(0.05)

    def listener_ports(self, member: Member, targets: Sequence[str], timeout: float = 10) -> dict[str, int]:
        """The ports `member` bound for `targets` (configured with port 0: the
        kernel picks one per server, so three servers share one machine)."""
        deadline = time.monotonic() + timeout
        while True:
            text = member.log.read_text() if member.log.exists() else ""
            for suffix, port in _LISTENING.findall(text):  # logged without the scheme: "0:127.0.0.2"
                member.ports.update({t: int(port) for t in targets if t.split(":", 1)[1] == suffix})
            if all(t in member.ports for t in targets):
                return {t: member.ports[t] for t in targets}
            if time.monotonic() > deadline:
                raise RuntimeError(f"{member.rundir}: no listener for {targets} in its log")
            time.sleep(0.05)

    def remotes(self, target: str) -> str:
        """The comma-separated client remotes of `target` across the running members."""
        scheme = "ssl" if target.startswith("pssl:") else "tcp"
        address = target.split(":")[2] if target.count(":") >= 2 else "127.0.0.1"
        return ",".join(f"{scheme}:{address}:{self.listener_ports(m, [target])[target]}"
                        for m in self.members if m.pid is not None)

    def kill(self, member: Member, sig: int = signal.SIGKILL) -> None:
        """Stop one server with `sig` (SIGKILL: a crash) and wait until it is gone."""
        if member.pid is not None:
            try:
                os.kill(member.pid, sig)
            except ProcessLookupError:
                pass
            self._stopped(member)

    def stop(self) -> None:
        for member in self.members:
            self._stopped(member)

    @staticmethod
    def _stopped(member: Member) -> None:
        """Stop `member` if it runs; remove its pid file, so no one stops a reused pid later."""
        stop_pid(member.pid, 10)
        member.pid = None
        (member.rundir / "fleet.pid").unlink(missing_ok=True)

    def __enter__(self) -> "FleetCluster":
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
