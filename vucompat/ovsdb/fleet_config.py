"""The fleet database's configuration (an admin's job): its listeners and RBAC roles,
written through an admin remote (`vucompat fleet configure`)."""

from __future__ import annotations

from typing import Any, Sequence

from vucompat.ovsdb.codec import encode_row, named_ref
from vucompat.ovsdb.fleet_rows import HOST_COLUMNS, PORT_COLUMNS
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions

HOST_ROLE = "vucompat-host"
READER_ROLE = "vucompat-reader"
#: the inactivity probe of a reader listener (ms; ovsdb-server's default is 5,000): a
#: client whose first copy of a large fleet takes longer than the default's two probes
#: to read (a relay or a whole-fleet replica: 17-35 s at 30,000 hosts, bench/README.md)
#: is otherwise dropped mid-read and starts again, for ever. Agents' listeners keep the
#: default: what they read and write is small
READER_PROBE_MS = 60_000


def listener_rows(host_targets: Sequence[str], reader_targets: Sequence[str]) -> list[dict[str, Any]]:
    """The Connection rows of these listeners (fleet's or a server's own): agents on
    `host_targets` (role vucompat-host), schedulers and relays on `reader_targets`
    (role vucompat-reader, read_only, inactivity probe READER_PROBE_MS)."""
    return [{"target": t, "role": HOST_ROLE, "read_only": False} for t in host_targets] + \
        [{"target": t, "role": READER_ROLE, "read_only": True, "inactivity_probe": READER_PROBE_MS}
         for t in reader_targets]


def configuration_operations(host_targets: Sequence[str], reader_targets: Sequence[str]) -> list[dict[str, Any]]:
    """One transaction that replaces the fleet's listeners and roles:
    - `host_targets` (e.g. pssl:6650) take agents, with role vucompat-host: a host
      may insert, update and delete only the Host row whose name is its certificate's
      CN and the Port rows whose host is; it may add Compat_Mode rows (content-
      addressed: readers check every digest) but never change one;
    - `reader_targets` take schedulers, read-only (role vucompat-reader has no
      permission at all, and the listener is read_only too), with a longer
      inactivity probe (listener_rows)."""
    def perm(name: str, table: str, authorization: list[str], update: Sequence[str]) -> dict[str, Any]:
        return {"op": "insert", "table": "RBAC_Permission", "uuid-name": name,
                "row": encode_row({"table": table, "authorization": authorization, "insert_delete": True,
                                   "update": list(update)}, "RBAC_Permission", "fleet")}

    ops: list[dict[str, Any]] = [{"op": "delete", "table": t, "where": []}
                                 for t in ("Fleet", "RBAC_Role", "RBAC_Permission")]
    ops += [perm("p_host", "Host", ["name"], [c for c in (*HOST_COLUMNS, "last_seen") if c != "name"]),
            perm("p_port", "Port", ["host"], [*PORT_COLUMNS, "mode"]),
            perm("p_mode", "Compat_Mode", [""], [])]
    host_permissions = {"Host": named_ref("p_host"), "Port": named_ref("p_port"), "Compat_Mode": named_ref("p_mode")}
    for role, permissions in ((HOST_ROLE, host_permissions), (READER_ROLE, {})):
        ops.append({"op": "insert", "table": "RBAC_Role",
                    "row": encode_row({"name": role, "permissions": permissions}, "RBAC_Role", "fleet")})
    connections = []
    for i, row in enumerate(listener_rows(host_targets, reader_targets)):
        ops.append({"op": "insert", "table": "Connection", "uuid-name": f"c{i}",
                    "row": encode_row(row, "Connection", "fleet")})
        connections.append(named_ref(f"c{i}"))
    ops.append({"op": "insert", "table": "Fleet", "row": encode_row({"connections": connections}, "Fleet", "fleet")})
    return ops


def check_listeners(targets: Sequence[str], where: str) -> None:
    """Raise OvsdbError (naming `where`) for a target that is not a passive remote."""
    for target in targets:
        if not target.startswith(("pssl:", "ptcp:", "punix:")):
            raise OvsdbError(remote=where, reason=f"listener {target!r} is not a passive remote: "
                             "write pssl:PORT[:IP] (ptcp: only for tests; RBAC needs SSL to know who connects)")


def configure(admin_remote: str, host_targets: Sequence[str], reader_targets: Sequence[str],
              timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None) -> None:
    """Write the fleet's listeners and roles (configuration_operations) through an
    admin remote (one without a role, e.g. a server's unix socket). Raises OvsdbError."""
    check_listeners([*host_targets, *reader_targets], admin_remote)
    session = Session(admin_remote, FLEET_DB, timeout, ssl)
    try:
        session.transact(configuration_operations(host_targets, reader_targets))
    finally:
        session.close()


def listeners(admin_remote: str, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None
              ) -> tuple[list[str], list[str]]:
    """The fleet's configured listeners: (agents' targets, schedulers' targets). Raises OvsdbError."""
    session = Session(admin_remote, FLEET_DB, timeout, ssl)
    try:
        (reply,) = session.transact([{"op": "select", "table": "Connection", "where": [],
                                      "columns": ["target", "role"]}])
    finally:
        session.close()
    rows = sorted(reply["rows"], key=lambda r: r["target"])
    agents = [r["target"] for r in rows if r["role"] == HOST_ROLE]
    return agents, [r["target"] for r in rows if r["role"] != HOST_ROLE]
