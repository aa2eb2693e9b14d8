"""A fleet cluster of ovsdb-servers on loopback (Raft, optionally over SSL), each
in a directory of its own, and read relays of it, for tests, the demo and the
benchmarks. Every step is the product's own (vucompat.ovsdb.cluster: create_cluster,
join_cluster, server_command, cluster_status; vucompat.ovsdb.fleet_relay:
write_listeners, relay_command, relay_status); this only runs them, and stops the servers and
relays (Daemons) by pid.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from vucompat.core.errors import UsageError
from vucompat.ovsdb.cluster import cluster_status, create_cluster, join_cluster, server_command
from vucompat.ovsdb.fleet_relay import relay_command, relay_file, relay_status, set_source_probe, write_listeners
from vucompat.ovsdb.rpc import OvsdbError
from vucompat.ovsdb.tls import SslOptions
from vucompat_testing.daemon import Daemon
from vucompat_testing.net import free_port

_LISTENING = re.compile(r"\|([^|\s]+): listening on port (\d+)")


@dataclass
class Member(Daemon):
    """One server of a FleetCluster, run from `directory` (its database file, admin
    and control sockets, log and pid file), with raft address `raft`."""

    directory: Path
    raft: str
    #: the SSL files of its listeners and raft links
    ssl: SslOptions | None = None
    #: listener target (as configured) -> the port it is bound to, read from the log
    ports: dict[str, int] = field(default_factory=dict, init=False)
    stem: ClassVar[str] = "fleet"

    @property
    def db_file(self) -> Path:
        return self.file(".db")

    @property
    def admin_remote(self) -> str:
        return f"unix:{self.file('.sock')}"

    @property
    def ctl(self) -> Path:
        return self.file(".ctl")

    def launch(self, timeout: float) -> None:
        """Start the server with the product's command line (server_command)."""
        self.log.unlink(missing_ok=True)
        self.ports.clear()
        subprocess.run(server_command(self.db_file, self.directory, self.ssl), check=True, stderr=subprocess.DEVNULL,
                       timeout=timeout)
        self.pid = self.read_pidfile()

    def status(self) -> dict[str, Any]:
        """Its cluster/status (cluster_status). Raises UsageError when it does not answer."""
        return cluster_status(self.ctl)


@dataclass
class Relay(Daemon):
    """A read relay of a fleet cluster (ovsdb-server with a relay:VuCompat_Fleet
    database), run from `directory` with the product's steps (write_listeners, relay_command):
    its source is `cluster` (comma-separated remotes: the members' reader listener),
    its own listeners `targets` (port 0 on loopback: the kernel picks; ports() reads
    them back from the relay's listeners database)."""

    directory: Path
    cluster: str
    targets: Sequence[str] = ("ptcp:0:127.0.0.3",)
    ssl: SslOptions | None = None
    stem: ClassVar[str] = "relay"

    @property
    def admin_remote(self) -> str:
        return f"unix:{relay_file(self.directory, '.sock')}"

    @property
    def ctl(self) -> Path:
        return self.file(".ctl")

    def launch(self, timeout: float) -> None:
        self.log.unlink(missing_ok=True)
        write_listeners(self.directory, self.cluster.split(","), self.targets)
        subprocess.run(relay_command(self.directory, self.cluster.split(","), self.ssl), check=True,
                       capture_output=True, timeout=timeout)
        self.pid = self.read_pidfile()
        set_source_probe(self.directory)

    def ready(self) -> bool:
        """Connected to its source, every listener bound."""
        try:
            found = self.status()
        except OvsdbError:
            return False
        bound = all(listener["bound_port"] for listener in found["listeners"])
        return found["connected"] and found["source_answers"] and bound

    def status(self) -> dict[str, Any]:
        """relay_status() of this relay. Raises OvsdbError when it does not answer."""
        return relay_status(self.directory, 5)

    def remotes(self) -> str:
        """The comma-separated client remotes of its listeners (tcp:IP:PORT or ssl:IP:PORT)."""
        out = []
        for listener in self.status()["listeners"]:
            scheme, _, rest = listener["target"].partition(":")
            address = rest.split(":")[1] if rest.count(":") >= 1 else "127.0.0.1"
            out.append(f"{scheme.removeprefix('p')}:{address}:{listener['bound_port']}")
        return ",".join(out)

    def source(self) -> str | None:
        """The remote of the cluster it is connected to now, from its log (OVS's
        reconnect module logs '<remote>: connected'), or None."""
        text = self.log.read_text() if self.log.exists() else ""
        found = re.findall(r"\|reconnect\|INFO\|([^|\s]+): connected$", text, re.MULTILINE)
        return found[-1] if found else None

    def quit(self) -> None:
        subprocess.run(["ovs-appctl", "-t", str(self.ctl), "exit"], capture_output=True, timeout=10)


@dataclass
class FleetCluster:
    """A fleet cluster of `size` ovsdb-servers on loopback, each in its own
    directory under `directory`, with raft links over SSL when `ssl` is given."""

    directory: Path
    size: int = 3
    ssl: SslOptions | None = None
    #: the schema the cluster is created with (default: the shipped one)
    schema: Path | None = None
    members: list[Member] = field(default_factory=list, init=False)

    def start(self, timeout: float = 30) -> None:
        """Create (first start only), start every server and wait for a leader."""
        scheme = "ssl" if self.ssl else "tcp"
        if not self.members:
            self.members = [Member(self.directory / f"s{i + 1}", f"{scheme}:127.0.0.1:{free_port()}", self.ssl)
                            for i in range(self.size)]
            for i, member in enumerate(self.members):
                member.directory.mkdir(parents=True, exist_ok=True)
                if i == 0:
                    create_cluster(member.db_file, member.raft, *([self.schema] if self.schema else []))
                else:
                    join_cluster(member.db_file, member.raft, [self.members[0].raft])
        for member in self.members:
            if member.pid is None:
                self.start_member(member, wait=False)
        self.wait_for_leader(timeout)

    def start_member(self, member: Member, wait: bool = True, timeout: float = 30) -> None:
        """(Re)start one server; with `wait`, until it is back in the cluster."""
        member.start(timeout)
        if wait:
            deadline = time.monotonic() + timeout
            while member.status().get("status") != "cluster member":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{member.directory} did not rejoin its cluster")
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
                raise RuntimeError(f"{member.directory}: no listener for {targets} in its log")
            time.sleep(0.05)

    def remotes(self, target: str) -> str:
        """The comma-separated client remotes of `target` across the running members."""
        scheme = "ssl" if target.startswith("pssl:") else "tcp"
        address = target.split(":")[2] if target.count(":") >= 2 else "127.0.0.1"
        return ",".join(f"{scheme}:{address}:{self.listener_ports(m, [target])[target]}"
                        for m in self.members if m.pid is not None)

    def kill(self, member: Member, sig: int = signal.SIGKILL) -> None:
        """Stop one server with `sig` (SIGKILL: a crash) and wait until it is gone."""
        member.kill(sig)
        member.stop()

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def __enter__(self) -> "FleetCluster":
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
