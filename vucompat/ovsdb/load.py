"""`vucompat load`: validated tables into the registry database, in one transaction.

Concurrency comes from OVSDB itself: the transaction starts with a `wait` that the
Compat_Mode table still holds exactly the names and digests the plan was made from
(any concurrent load or edit fails it), inserts would clash on the unique name index
anyway, the Host row is verified, and a Port's strong reference makes the server
refuse to prune a mode in use. On any such refusal the plan is made again from fresh
reads, so two loaders never duplicate a mode and a load is applied whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vucompat.core.loadplan import LoadPlan, RedefinitionError, plan_load, redefinitions
from vucompat.core.mode import Capabilities
from vucompat.core.modeset import ModeSet
from vucompat.ovsdb import rpc
from vucompat.ovsdb.codec import decode_row, set_of, shipped_types, to_json
from vucompat.ovsdb.connection import Connection
from vucompat.ovsdb.registry import read_host, stage_host
from vucompat.ovsdb.rows import ERRATUM_REASON, SUPERSEDED_BY, mode_row
from vucompat.ovsdb.schema import COLUMNS, DB_NAME
from vucompat.ovsdb.vswitch import read_ovs_versions

#: what a load monitors: the Host row only. Modes and ports are read with one select
#: (so its own 1,000 inserts do not come back as 1,000 row updates to parse) and
#: guarded by a `wait` in the transaction.
LOAD_COLUMNS: dict[str, tuple[str, ...]] = {"Host": COLUMNS["Host"]}


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
        if plan.correct:
            parts.append(f"corrected {len(plan.correct)} by erratum ("
                         + "; ".join(f"{m.name}: {', '.join(e.changes)}" for m, e in plan.correct) + ")")
        if plan.prune:
            parts.append(f"pruned {len(plan.prune)} ({', '.join(plan.prune)})")
        lines = [f"{self.remote}: " + ", ".join(parts)]
        lines += [f"  {name}: kept the definition an erratum corrects ({', '.join(e.changes)}) for the port(s) "
                  f"that use it ({', '.join(ports)}): their contract is not rewritten; it is marked superseded, "
                  "and the next load replaces it once no port uses it" for name, (e, ports) in
                  sorted(self.plan.superseded_in_use.items())]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "written": self.written, **self.plan.as_dict()}


def load(conn: Connection, tables: ModeSet, prune: bool = False, capabilities: Capabilities | None = None,
         host_name: str | None = None, ovs_remote: str | None = None) -> LoadResult:
    """Load `tables` (already validated) through `conn` in one transaction. `conn`
    needs only LOAD_COLUMNS: a load compares digests, not features.

    Also makes sure the Host row exists: named `host_name` (default: this machine's
    hostname), with the capabilities of a file when given, and the OVS/DPDK versions
    of the Open_vSwitch database at `ovs_remote` when it serves one. Raises
    RedefinitionError (nothing written) when a loaded name would change meaning, and
    OvsdbError when the server refuses or does not answer.
    """
    versions = read_ovs_versions(ovs_remote, conn.timeout) if ovs_remote else {}

    def build(txn: Any) -> LoadPlan:
        digests, ports, marked = read_modes_and_ports(conn)
        plan = plan_load(tables.modes, digests, ports, prune, tables.errata)
        if plan.redefined:
            loaded = _read_modes(conn, plan.redefined)
            raise RedefinitionError(remote=conn.remote, redefinitions=redefinitions(tables.modes, loaded))
        _row, host_changed = stage_host(conn, txn, capabilities, host_name, versions)
        to_mark = {name: erratum for name, (erratum, _ports) in plan.superseded_in_use.items()
                   if marked.get(name) != erratum.digest}
        if not (plan.insert or plan.prune or plan.correct or to_mark or host_changed):
            return plan  # nothing to write: the transaction stays empty
        # the precondition: the table still holds exactly the names and digests read above
        txn.add_op({"op": "wait", "table": "Compat_Mode", "timeout": 0, "where": [], "columns": ["name", "digest"],
                    "until": "==", "rows": [{"name": n, "digest": d} for n, d in digests.items()]})
        for name in plan.prune + tuple(m.name for m, _ in plan.correct):
            txn.add_op({"op": "delete", "table": "Compat_Mode", "where": [["name", "==", name]]})
        for mode in plan.insert + tuple(m for m, _ in plan.correct):  # raw inserts: the IDL's checks cost 10x more
            txn.add_op({"op": "insert", "table": "Compat_Mode", "row": mode_row(mode)})
        external_ids = shipped_types("Compat_Mode")["external_ids"]
        for name, erratum in to_mark.items():
            marks = {SUPERSEDED_BY: erratum.digest, ERRATUM_REASON: erratum.reason}
            txn.add_op({"op": "mutate", "table": "Compat_Mode", "where": [["name", "==", name]],
                        "mutations": [["external_ids", "delete", set_of(marks)],
                                      ["external_ids", "insert", to_json(marks, external_ids)]]})
        return plan

    plan, written = conn.transact(build, reads_fresh=True)
    return LoadResult(conn.remote, plan, written)


def read_modes_and_ports(conn: Connection) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    """Return ({mode name: digest}, {mode name: names of the ports using it}, {mode
    name: the corrected digest it is marked superseded by}) as the database holds
    them now, in one read."""
    modes, ports = rpc.transact(conn.remote, DB_NAME, [
        {"op": "select", "table": "Compat_Mode", "where": [], "columns": ["_uuid", "name", "digest", "external_ids"]},
        {"op": "select", "table": "Port", "where": [], "columns": ["interface_name", "mode"]},
    ], conn.timeout)
    mode_rows = [decode_row(row, "Compat_Mode") for row in modes["rows"]]
    names = {row._uuid: row.name for row in mode_rows}
    users: dict[str, list[str]] = {}
    for port in (decode_row(row, "Port") for row in ports["rows"]):
        for mode in port.mode:  # an optional reference: [] or [uuid]
            if mode in names:
                users.setdefault(names[mode], []).append(port.interface_name)
    marked = {row.name: row.external_ids.get(SUPERSEDED_BY) for row in mode_rows}
    return ({row.name: row.digest for row in mode_rows}, users,
            {name: digest for name, digest in marked.items() if digest})


def _read_modes(conn: Connection, names: tuple[str, ...]) -> dict[str, Any]:
    """The full modes `names` as the database holds them (to describe a refusal)."""
    with Connection(conn.remote, conn.timeout) as full:
        modes = read_host(full).modeset.modes
    return {name: modes[name] for name in names if name in modes}
