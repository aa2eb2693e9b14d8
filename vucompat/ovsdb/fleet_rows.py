"""Fleet rows <-> fleet values: what one host's publish writes into the fleet
database, as OVSDB operations (HostRecord -> Host, Port and Compat_Mode rows), and
what readers make of those rows (FleetHost, PortView). Pure (no I/O): the
publisher, the load generator and the tests build the same transaction from the
same record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from vucompat.core import catalog
from vucompat.core.fleet import FleetHost, HostRecord, needed_modes, unavailable_features
from vucompat.core.mode import LIMITS, Mode
from vucompat.core.portview import IFACE_ID, PortView
from vucompat.core.modeset import Host, ModeSet
from vucompat.ovsdb.codec import canonical, encode_row, named_ref, optional, uuid_of, uuid_ref
from vucompat.ovsdb.rows import bits_to_mask, host_capabilities, mode_row, offer_text


#: Port columns the fleet copies from a host's registry (plus host and mode); external_ids
#: holds the port's iface-id (its Neutron port), as OVS's Interface external_ids do
PORT_COLUMNS = ("interface_name", "interface_type", "requested", "resolved", "state", "error",
                "negotiated_features", "verification", "violation", "external_ids")
#: Compat_Mode columns readers read (the fleet's and the registry's are the same; external_ids
#: holds a mode's version scheme, which orders it)
MODE_COLUMNS = ("name", "lineage", "version", "released", "digest", "virtio_features", "protocol_features",
                "max_queue_pairs", "max_rx_queue_size", "max_tx_queue_size", "deprecated_features",
                "derived_from", "provenance", "note", "external_ids")
#: Host columns a publish writes (last_seen apart)
HOST_COLUMNS = ("name", "pool", "capabilities_source", "virtio_features", "protocol_features", *LIMITS,
                "type_offers", "ovs_version", "dpdk_version", "default_policy", "modes", "runnable", "mode_count",
                "runnable_count", "unavailable", "heartbeat_interval", "agent_version", "ports")


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, as last_seen holds them."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Published:
    """What the fleet database holds for one host now (raw OVSDB JSON rows)."""

    host: Mapping[str, Any] | None = None
    ports: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: (name, digest) -> uuid of the fleet's Compat_Mode rows this host needs
    modes: Mapping[tuple[str, str], str] = field(default_factory=dict)


def host_row(record: HostRecord, mode_refs: Mapping[tuple[str, str], list[str]],
             port_refs: Mapping[str, list[str]]) -> dict[str, Any]:
    """The Host row of `record` (without last_seen) in OVSDB JSON, with references
    to its modes and its ports (a Port row lives as long as its host refers to it)."""
    caps = record.host.capabilities
    unavailable = unavailable_features(record)
    own = [(m.name, m.digest) for m in record.host.modeset.modes.values()]
    runnable = [mode_refs[key] for key in own if key[0] not in unavailable]
    return encode_row({
        "name": record.name,
        "pool": record.pool,
        "capabilities_source": record.capabilities_source if caps else "none",
        "virtio_features": catalog.bits_of(caps.abi.virtio) if caps else [],
        "protocol_features": catalog.bits_of(caps.abi.protocol) if caps else [],
        **{name: caps.abi.limit(name) if caps else None for name in LIMITS},
        "type_offers": sorted((t, offer_text(a)) for t, a in caps.by_type.items()) if caps else [],
        "ovs_version": record.ovs_version,
        "dpdk_version": record.dpdk_version,
        "default_policy": record.default_policy,
        "modes": [mode_refs[key] for key in own],
        "runnable": runnable,
        # the sizes of modes and runnable: a whole-fleet listing reads these, not 100 references a host
        "mode_count": len(own),
        "runnable_count": len(runnable),
        "unavailable": sorted(unavailable.items()),
        "heartbeat_interval": record.heartbeat_interval,
        "agent_version": record.agent_version,
        "ports": [port_refs[name] for name in sorted(record.ports)],
    }, "Host", "fleet")


def port_row(host: str, port: PortView, mode_ref: list[str] | None) -> dict[str, Any]:
    """The fleet Port row of one of `host`'s ports, in OVSDB JSON."""
    return encode_row({
        "host": host, "interface_name": port.name, "interface_type": port.interface_type,
        "requested": port.requested, "resolved": port.resolved, "state": port.state, "error": port.error,
        "negotiated_features": catalog.bits_of(port.negotiated_features),
        "verification": port.verification, "violation": port.violation,
        "external_ids": {IFACE_ID: port.iface_id} if port.iface_id else {},
        "mode": [mode_ref] if mode_ref else [],
    }, "Port", "fleet")


def _same(column: str, desired: Any, current: Mapping[str, Any]) -> bool:
    """Whether `current` (as the server sent it: a one-element set comes back bare)
    already holds `desired` in `column`."""
    if column not in current:
        return False
    want, have = canonical(desired), canonical(current[column])
    if isinstance(want, frozenset) and not isinstance(have, frozenset):
        have = frozenset([have])
    return want == have


def publish_operations(record: HostRecord, current: Published, now_ms: int,
                       heartbeat: bool = False) -> list[dict[str, Any]]:
    """The one transaction that makes the fleet hold `record` for its host, given
    what it holds now: inserts of modes it lacks, and the host's Host and Port rows
    inserted, updated (changed columns only) or dropped. A stale `current` fails the
    whole transaction (a unique index on the natural keys, or the `wait` that the
    Host row read is still there) rather than writes twice or half. Empty when
    nothing changed and no `heartbeat` is due."""
    ops: list[dict[str, Any]] = []
    refs: dict[tuple[str, str], list[str]] = {}
    for i, (key, mode) in enumerate(sorted(needed_modes(record).items())):
        if key in current.modes:
            refs[key] = uuid_ref(current.modes[key])
        else:
            refs[key] = named_ref(f"mode{i}")
            ops.append({"op": "insert", "table": "Compat_Mode", "row": mode_row(mode), "uuid-name": f"mode{i}"})
    # rows already there are addressed by their uuid (the server finds those at once; a
    # condition on another column scans the table), guarded by the `wait` below
    port_refs: dict[str, list[str]] = {}
    updates = []
    for i, (name, port) in enumerate(sorted(record.ports.items())):
        ref = refs[(port.mode.name, port.mode.digest)] if port.mode is not None else None
        row = port_row(record.name, port, ref)
        have = current.ports.get(name)
        if have is None:
            port_refs[name] = named_ref(f"port{i}")
            ops.append({"op": "insert", "table": "Port", "row": row, "uuid-name": f"port{i}"})
            continue
        port_refs[name] = have["_uuid"]
        changed = {c: v for c, v in row.items() if not _same(c, v, have)}
        if changed:
            updates.append({"op": "update", "table": "Port", "row": changed, "where": [["_uuid", "==", have["_uuid"]]]})
    # a removed port is dropped from Host.ports, and the server deletes its row
    where_host = [["_uuid", "==", current.host["_uuid"]]] if current.host is not None else []
    desired = host_row(record, refs, port_refs)
    if current.host is None:
        ops.append({"op": "insert", "table": "Host", "row": {**desired, "last_seen": now_ms}})
    else:
        changed = {c: v for c, v in desired.items() if not _same(c, v, current.host)}
        if changed or heartbeat:
            ops.append({"op": "update", "table": "Host", "where": where_host, "row": {**changed, "last_seen": now_ms}})
    ops += updates
    if ops and not any(op["table"] == "Host" for op in ops):
        ops.append({"op": "update", "table": "Host", "where": where_host, "row": {"last_seen": now_ms}})
    if ops and current.host is not None:
        ops.insert(0, host_still_there(record.name, current.host["_uuid"]))
    return ops


def without_columns(ops: list[dict[str, Any]], lacking: Mapping[str, frozenset[str]]) -> list[dict[str, Any]]:
    """`ops` with no mention of the columns the server's schema lacks (`lacking`:
    table -> columns; a fleet not yet upgraded to this vucompat's schema): they are
    left out of rows written and columns read. Conditions on them are not expected
    (a publish selects and waits on columns every fleet schema has)."""
    if not lacking:
        return ops
    out = []
    for op in ops:
        gone = lacking.get(op.get("table", ""), frozenset())
        if gone:
            op = dict(op)
            if "row" in op:
                op["row"] = {c: v for c, v in op["row"].items() if c not in gone}
            if "columns" in op:
                op["columns"] = [c for c in op["columns"] if c not in gone]
        out.append(op)
    return out


def host_still_there(name: str, uuid: list[str]) -> dict[str, Any]:
    """A `wait` that fails the transaction unless the Host row read earlier (`uuid`)
    is still there and still `name`'s: only the host itself writes its rows (RBAC),
    so its Port rows read with it are then still there too."""
    return {"op": "wait", "table": "Host", "where": [["_uuid", "==", uuid]], "columns": ["name"], "until": "==",
            "rows": [{"name": name}], "timeout": 0}


def heartbeat_operations(name: str, uuid: list[str], now_ms: int) -> list[dict[str, Any]]:
    """Refresh last_seen of host `name` whose Host row is `uuid` (nothing to read first)."""
    return [host_still_there(name, uuid),
            {"op": "update", "table": "Host", "where": [["_uuid", "==", uuid]], "row": {"last_seen": now_ms}}]


def published_after(record: HostRecord, current: Published, ops: list[dict[str, Any]],
                    results: list[dict[str, Any]]) -> Published:
    """What the fleet holds for the host once `ops` (publish_operations(record,
    current, ...)) committed with `results`: the next publish can diff against it
    without reading anything."""
    named: dict[str, str] = {}
    inserted_ports: dict[str, str] = {}
    host_uuid = uuid_of(current.host["_uuid"]) if current.host is not None else None
    for op, result in zip(ops, results):
        if op["op"] != "insert":
            continue
        if "uuid-name" in op:
            named[op["uuid-name"]] = uuid_of(result["uuid"])
        if op["table"] == "Host":
            host_uuid = uuid_of(result["uuid"])
        elif op["table"] == "Port":
            inserted_ports[op["row"]["interface_name"]] = uuid_of(result["uuid"])
    modes = dict(current.modes)
    for op in ops:
        if op["op"] == "insert" and op["table"] == "Compat_Mode":
            modes[(op["row"]["name"], op["row"]["digest"])] = named[op["uuid-name"]]
    refs = {key: uuid_ref(modes[key]) for key in needed_modes(record)}
    ports = {}
    for name, port in record.ports.items():
        uuid = inserted_ports.get(name) or uuid_of(current.ports[name]["_uuid"])
        ref = refs[(port.mode.name, port.mode.digest)] if port.mode is not None else None
        ports[name] = {**port_row(record.name, port, ref), "_uuid": uuid_ref(uuid)}
    assert host_uuid is not None
    host = host_row(record, refs, {name: row["_uuid"] for name, row in ports.items()})
    return Published(host={**host, "_uuid": uuid_ref(host_uuid)}, ports=ports, modes=modes)


# ---- rows -> values (readers) ------------------------------------------------------------------


def fleet_host(row: Any, modes: dict[str, Mode], remote: str) -> FleetHost:
    """A FleetHost from a Host row (an IDL row, or a decoded `select` row) and the fleet's modes by uuid."""
    own = {modes[u].name: modes[u] for u in map(uuid_of, row.modes) if u in modes}
    runnable = frozenset(modes[u].name for u in map(uuid_of, row.runnable) if u in modes)
    host = Host(name=row.name, modeset=ModeSet(own, where=f"the fleet's copy of {row.name}"),
                capabilities=host_capabilities(row, remote))
    return FleetHost(host=host, pool=optional(row.pool), ovs_version=optional(row.ovs_version),
                     dpdk_version=optional(row.dpdk_version), last_seen=int(row.last_seen),
                     heartbeat_interval=int(row.heartbeat_interval), runnable=runnable,
                     unavailable=dict(row.unavailable))


def fleet_port(row: Any, modes: dict[str, Mode]) -> tuple[str, PortView]:
    """(host name, PortView) from a fleet Port row (an IDL row, or a decoded `select` row)."""
    mode = modes.get(uuid_of(row.mode[0])) if row.mode else None
    return row.host, PortView(name=row.interface_name, interface_uuid="", requested=row.requested,
                              resolved=optional(row.resolved), state=row.state, error=optional(row.error),
                              mode=mode, negotiated_features=bits_to_mask(row.negotiated_features),
                              verification=optional(row.verification), violation=optional(row.violation),
                              interface_type=row.interface_type, iface_id=dict(row.external_ids).get(IFACE_ID))
