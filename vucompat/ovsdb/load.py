"""`vucompat load`: validated tables into the registry database, in one transaction.

Concurrency comes from OVSDB itself: the rows left alone are verified (a concurrent
change of their digest makes the server answer "try again"), inserts clash on the
unique name index if another loader got there first, and a Port's strong reference
makes the server refuse to prune a mode in use. On any such refusal the IDL gets the
new contents and the plan is made again, so two loaders never duplicate a mode and a
load is applied whole or not at all.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from ..loadplan import LoadPlan, RedefinitionError, plan_load
from ..mode import Capabilities
from ..registry import Registry
from . import rpc
from .connection import Connection
from .rows import capabilities_columns, mode_columns, row_to_mode
from .schema import OPEN_VSWITCH_COLUMNS

#: capabilities_source when the capabilities come from a file
DECLARED = "declared"


@dataclass(frozen=True)
class LoadResult:
    remote: str
    plan: LoadPlan
    #: whether the transaction changed anything (modes or the Host row)
    written: bool

    def summary(self) -> str:
        plan = self.plan
        if not self.written:
            return f"{self.remote}: nothing to do: all {len(plan.unchanged)} mode(s) already loaded, identical"
        parts = [f"added {len(plan.insert)}", f"left {len(plan.unchanged)} identical"]
        if plan.prune:
            parts.append(f"pruned {len(plan.prune)} ({', '.join(plan.prune)})")
        return f"{self.remote}: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "written": self.written, **self.plan.as_dict()}


def load(conn: Connection, tables: Registry, prune: bool = False, capabilities: Capabilities | None = None,
         host_name: str | None = None, ovs_remote: str | None = None) -> LoadResult:
    """Load `tables` (already validated) through `conn` in one transaction.

    Also makes sure the Host row exists: named `host_name` (default: this machine's
    hostname), with the capabilities of a file when given, and the OVS/DPDK versions
    of the Open_vSwitch database at `ovs_remote` when it serves one. Raises
    RedefinitionError (nothing written) when a loaded name would change meaning, and
    OvsdbError when the server refuses or does not answer.
    """
    versions = read_ovs_versions(ovs_remote, conn.timeout) if ovs_remote else {}

    def build(txn: Any) -> LoadPlan:
        rows = {row.name: row for row in conn.rows("Compat_Mode")}
        loaded = {name: row_to_mode(row, conn.remote) for name, row in rows.items()}
        by_uuid = {row.uuid: row.name for row in rows.values()}
        ports: dict[str, list[str]] = {}
        for port in conn.rows("Port"):
            for mode_row in port.mode:
                ports.setdefault(by_uuid.get(mode_row.uuid, ""), []).append(port.interface_name)
        plan = plan_load(tables.modes, loaded, ports, prune)
        if plan.redefinitions:
            raise RedefinitionError(remote=conn.remote, redefinitions=plan.redefinitions)
        for name in plan.unchanged:
            rows[name].verify("digest")
        for mode in plan.insert:
            row = txn.insert(conn.idl.tables["Compat_Mode"])
            for column, value in mode_columns(mode).items():
                setattr(row, column, value)
        for name in plan.prune:
            rows[name].delete()
        _stage_host(conn, txn, capabilities, host_name, versions)
        return plan

    plan, written = conn.transact(build)
    return LoadResult(conn.remote, plan, written)


def _stage_host(conn: Connection, txn: Any, capabilities: Capabilities | None, host_name: str | None,
                versions: dict[str, str]) -> None:
    """Stage the Host row: created when missing, updated only where it differs
    (so a load that changes nothing writes nothing)."""
    hosts = conn.rows("Host")
    fresh = not hosts
    if fresh:
        row = txn.insert(conn.idl.tables["Host"])
        changes: dict[str, Any] = {"name": host_name or socket.gethostname(), "default_policy": "latest",
                                   **capabilities_columns(None, "none")}
    else:
        row = hosts[0]
        row.verify("name")
        changes = {"name": host_name} if host_name else {}
    if capabilities is not None:
        changes.update(capabilities_columns(capabilities, DECLARED))
    changes.update({column: [value] for column, value in versions.items()})
    for column, value in changes.items():
        if fresh or getattr(row, column) != value:
            setattr(row, column, value)


def read_ovs_versions(remote: str, timeout: float) -> dict[str, str]:
    """Return the OVS and DPDK versions the Open_vSwitch database at `remote`
    records ({} when it serves none, or they are not set). Columns an older
    schema lacks are skipped."""
    try:
        schema = rpc.get_schema(remote, "Open_vSwitch", timeout)
    except rpc.OvsdbError as err:
        if "does not serve" in err.reason:
            return {}
        raise
    have = schema["tables"]["Open_vSwitch"]["columns"]
    columns = [c for c in OPEN_VSWITCH_COLUMNS if c in have]
    (result,) = rpc.transact(remote, "Open_vSwitch", [{"op": "select", "table": "Open_vSwitch", "where": [],
                                                         "columns": columns}], timeout)
    rows = result.get("rows", [])
    if not rows:
        return {}
    out = {}
    for column in columns:
        value = rows[0].get(column)
        # an optional string is ["set", []] when empty, or the bare string
        if isinstance(value, str) and value:
            out[column] = value
    return out
