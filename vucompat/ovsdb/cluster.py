"""The fleet database on OVSDB's clustered (Raft) service model: creating and
joining a cluster, starting its servers, reading a server's cluster status.

All consensus and replication is ovsdb-server's own; this module only wraps
`ovsdb-tool create-cluster` / `join-cluster`, the ovsdb-server command line, and
`ovs-appctl cluster/status`, so that every step is written down once. (A whole
cluster on loopback, for tests, the demo and benchmarks, is
vucompat_testing.fleet_cluster.FleetCluster.)
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Sequence

from vucompat.core.errors import UsageError
from vucompat.ovsdb.admin import _tool
from vucompat.ovsdb.tls import SslOptions
from vucompat.ovsdb.schema import FLEET_DB, FLEET_SCHEMA_FILE

#: where the servers find their listening remotes (rows written by `vucompat fleet configure`)
DB_REMOTES = f"db:{FLEET_DB},Fleet,connections"


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


def server_command(db_file: Path, rundir: Path, ssl: SslOptions | None, own_listeners: Path | None = None,
                   log_file: Path | None = None) -> list[str]:
    """The ovsdb-server command line of one fleet server: its database file, an
    admin unix socket in `rundir` (no RBAC role: full rights; keep it local), the
    listeners configured in the database itself (`vucompat fleet configure`), with
    `own_listeners` also this server's own listener database (fleet_listeners), the
    SSL files used by both the listeners and the raft links, and its log (default
    <rundir>/fleet.log)."""
    from vucompat.ovsdb.fleet_listeners import SERVER_REMOTES

    own = [str(own_listeners), f"--remote={SERVER_REMOTES}"] if own_listeners is not None else []
    command = ["ovsdb-server", str(db_file), *own[:1], f"--remote=punix:{rundir / 'fleet.sock'}",
               f"--remote={DB_REMOTES}", *own[1:], f"--unixctl={rundir / 'fleet.ctl'}",
               f"--pidfile={rundir / 'fleet.pid'}", f"--log-file={log_file or rundir / 'fleet.log'}", "--detach", "--no-chdir"]
    if ssl is not None:
        command += [f"--private-key={ssl.private_key}", f"--certificate={ssl.certificate}",
                    f"--ca-cert={ssl.ca_cert}"]
    return command


def cluster_status(ctl: Path, timeout: float = 10) -> dict[str, Any]:
    """Parse `ovs-appctl cluster/status VuCompat_Fleet` of the server whose control
    socket is `ctl`: {"server", "address", "status", "role", "term", "leader",
    "election_timer" (ms), "servers": [...]}. Raises UsageError when it does not answer."""
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
        if key in ("name", "cluster id", "server id", "address", "status", "role", "term", "leader", "vote",
                   "election timer"):
            fields[key.replace(" ", "_")] = int(value) if key in ("term", "election timer") and value.isdigit() else value
    return fields


def change_election_timer(ctl: Path, target_ms: int, timeout: float = 30) -> list[int]:
    """Set the cluster's election timer to `target_ms` through its leader (the server
    whose control socket is `ctl`): raft raises it at most twofold per change, so it
    goes up in committed steps. Returns the values set, in order ([] when it already
    is `target_ms`). Raises UsageError: `ctl` is not the leader's, a value out of
    OVS's range (100-600,000 ms), or a step not committed within `timeout` s."""
    status = cluster_status(ctl)
    if status.get("role") != "leader":
        raise UsageError(message=f"{ctl} is a {status.get('role', '?')}, and only the leader changes the election "
                         f"timer: give the leader's control socket (its server id begins {status.get('leader', '?')}; "
                         "`vucompat fleet status --ctl` on each server says which)")
    current, steps = int(status["election_timer"]), []
    while current != target_ms:
        step = target_ms if target_ms < current else min(target_ms, current * 2)
        _tool("ovs-appctl", "-t", str(ctl), "cluster/change-election-timer", FLEET_DB, str(step), timeout=timeout)
        deadline = time.monotonic() + timeout
        while cluster_status(ctl).get("election_timer") != step:
            if time.monotonic() > deadline:
                raise UsageError(message=f"the election timer change to {step} ms was not committed within "
                                 f"{timeout:g} s: is a majority of the cluster up? (vucompat fleet status --ctl {ctl})")
            time.sleep(0.05)
        current = step
        steps.append(step)
    return steps
