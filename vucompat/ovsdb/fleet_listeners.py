"""Each fleet server's own listeners (`vucompat fleet start --host-listener/
--reader-listener`), and the listeners a server really has, with the ports it bound
(`vucompat fleet status`).

Why a database of its own: ovsdb-server gives an RBAC role only to a listener it
reads from a database (the Connection rows of a `db:DB,TABLE,COLUMN` remote; a
`--remote` target on its command line has no role, which is every right), and the
fleet's own Connection rows (`vucompat fleet configure`) are replicated, so every
server of the cluster binds the same targets: three servers on one machine cannot
each have their own fixed ports. So each server may also serve a small standalone
database, VuCompat_Fleet_Server, written from its command line at every start (in
its run directory): its Connection rows carry the roles, whose permissions are the
fleet's own RBAC rows (`vucompat fleet configure`). It has an RBAC_Role table and
no role in it, so no listener's client may write it (only the admin socket can).
And because it is a standalone database, ovsdb-server writes each listener's status
into it (every 2.5 s), `bound_port` included: the port a `pssl:0` listener got.
ovsdb-server reports the status of no listener of a clustered database, and no
unixctl command (3.1: `ovsdb-server/list-remotes` lists the targets as given) says
what a port-0 listener bound; its log says it once ("listening on port N").
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from vucompat.ovsdb import rpc
from vucompat.ovsdb.admin import _tool
from vucompat.ovsdb.fleet_config import HOST_ROLE, READER_ROLE, check_listeners, listener_rows
from vucompat.ovsdb.schema import FLEET_DB, FLEET_SCHEMA_FILE

SERVER_DB = "VuCompat_Fleet_Server"
SERVER_SCHEMA_FILE = FLEET_SCHEMA_FILE.with_name("vucompat-fleet-server.ovsschema")
#: the file, in the server's run directory (written anew at every start)
SERVER_DB_FILE = "fleet-server.db"
#: where a server finds its own listeners
SERVER_REMOTES = f"db:{SERVER_DB},Server,connections"

#: where a listener was configured, as `fleet status` says it
SERVER, CLUSTER, COMMAND_LINE = "server", "cluster", "command-line"


def write_server_db(path: Path, host_targets: Sequence[str], reader_targets: Sequence[str],
                    external_ids: dict[str, str] | None = None) -> None:
    """(Re)write the server's own listener database at `path` (ovsdb-tool, while
    the server is stopped): agents on `host_targets` (role vucompat-host), schedulers
    on `reader_targets` (read-only, role vucompat-reader); `external_ids` on its
    Server row (a relay records its source there). Raises UsageError."""
    check_listeners([*host_targets, *reader_targets], "--host-listener/--reader-listener")
    ops: list[dict[str, Any]] = []
    for i, row in enumerate(listener_rows(host_targets, reader_targets)):
        ops.append({"op": "insert", "table": "Connection", "uuid-name": f"c{i}", "row": row})
    ops.append({"op": "insert", "table": "Server",
                "row": {"connections": ["set", [["named-uuid", f"c{i}"] for i in range(len(ops))]],
                        "external_ids": ["map", sorted((external_ids or {}).items())]}})
    path.unlink(missing_ok=True)
    _tool("ovsdb-tool", "create", str(path), str(SERVER_SCHEMA_FILE))
    _tool("ovsdb-tool", "transact", str(path), json.dumps([SERVER_DB, *ops]))


def listeners(ctl: Path, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The listeners of the server whose control socket is `ctl`, as it has them:
    `ovsdb-server/list-remotes`, each `db:` remote read through the server's admin
    socket (its first punix: remote). Each is {"target", "configured": server |
    cluster | command-line, and as known: "role", "read_only", "bound_port" (the
    port ovsdb-server reports it bound: listeners of its own database only),
    "inactivity_probe_ms" (when set), "connections", "error"}. Raises UsageError when the server does not answer."""
    remotes = _tool("ovs-appctl", "-t", str(ctl), "ovsdb-server/list-remotes", timeout=timeout).splitlines()
    admin = next((f"unix:{r.split(':', 1)[1]}" for r in remotes if r.startswith("punix:")), None)
    found: list[dict[str, Any]] = []
    for remote in (r.strip() for r in remotes if r.strip()):
        if not remote.startswith("db:"):
            found.append({"target": remote, "configured": COMMAND_LINE, **({"role": ""} if remote.startswith(
                "punix:") else {})})
            continue
        database = remote[3:].split(",")[0]
        configured = SERVER if database == SERVER_DB else CLUSTER
        if admin is None:
            found.append({"target": remote, "configured": configured,
                          "error": "not readable: the server has no admin (punix:) socket"})
            continue
        try:
            found += _connection_rows(admin, remote, configured, timeout)
        except rpc.OvsdbError as err:
            found.append({"target": remote, "configured": configured, "error": err.reason})
    return found


def _connection_rows(admin: str, remote: str, configured: str, timeout: float) -> list[dict[str, Any]]:
    """The Connection rows a `db:DB,TABLE,COLUMN` remote names, as listeners."""
    database, table, column = remote[3:].split(",")
    schema = rpc.get_schema(admin, database, timeout)
    ref = schema["tables"][table]["columns"][column]["type"]["key"]["refTable"]
    holders, rows = rpc.transact(admin, database, [
        {"op": "select", "table": table, "where": [], "columns": [column]},
        {"op": "select", "table": ref, "where": [],
         "columns": ["_uuid", "target", "role", "read_only", "inactivity_probe", "is_connected", "status"]}], timeout)
    named = {uuid for holder in holders["rows"] for uuid in _uuids(holder[column])}
    out = []
    for row in sorted((r for r in rows["rows"] if r["_uuid"][1] in named), key=lambda r: r["target"]):
        listener: dict[str, Any] = {"target": row["target"], "configured": configured, "role": row["role"],
                                    "read_only": row["read_only"]}
        probe = row["inactivity_probe"]  # an optional integer: a bare atom, or an empty set
        if isinstance(probe, int):
            listener["inactivity_probe_ms"] = probe
        if database != FLEET_DB:  # a standalone database: ovsdb-server keeps each listener's status there
            status = dict(row["status"][1])
            if "bound_port" in status:
                listener["bound_port"] = int(status["bound_port"])
            listener["connections"] = int(status.get("n_connections", 1 if row["is_connected"] is True else 0))
        out.append(listener)
    return out


def _uuids(value: Any) -> list[str]:
    if value[0] == "uuid":
        return [value[1]]
    return [v[1] for v in value[1]]


def wait_for_bound_ports(ctl: Path, timeout: float = 10.0) -> list[dict[str, Any]]:
    """listeners(ctl), once every listener of the server's own database that is
    not a unix socket reports its bound port (ovsdb-server writes the status every
    2.5 s), or at `timeout`. Raises UsageError."""
    deadline = time.monotonic() + timeout
    while True:
        found = listeners(ctl)
        pending = [f for f in found if f["configured"] == SERVER and "bound_port" not in f
                   and not f["target"].startswith("punix:")]
        if not pending or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def describe(listener: dict[str, Any]) -> str:
    """One listener in words, for `fleet status`."""
    target, configured = listener["target"], listener["configured"]
    if "error" in listener:
        return f"{target}: {listener['error']}"
    role = listener.get("role") or ""
    if not role:
        who = "admin (no role: every right; keep it on the machine)" if target.startswith("punix:") \
            else "no role: every right"
    else:
        who = {HOST_ROLE: "agents", READER_ROLE: "schedulers"}.get(role, "clients") + f" (role {role}" + \
            (", read-only" if listener.get("read_only") else "") + \
            (f", inactivity probe {listener['inactivity_probe_ms'] / 1000:g} s)" if "inactivity_probe_ms" in listener
             else ")")
    where = {SERVER: "this server's own", CLUSTER: "the cluster's, on every server",
             COMMAND_LINE: "command line"}[configured]
    if "bound_port" in listener:
        bound = f"; bound to port {listener['bound_port']}, {listener.get('connections', 0)} connection(s)"
    elif configured == SERVER and not target.startswith("punix:"):
        bound = "; NOT LISTENING (see the server's log: the address may be in use, or not this machine's)"
    elif configured == CLUSTER:
        bound = "; bound port not reported (ovsdb-server reports none for a clustered database's listeners)"
    else:
        bound = ""
    return f"{target}: {who}; {where}{bound}"
