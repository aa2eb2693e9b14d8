"""Reading the fleet database (schedulers, `vucompat fleet ...`): one-shot reads
over a session.Session (read_fleet, read_can_run, ...; the server filters where it
can), and FleetView, a warm scheduler's IDL replica that rebuilds only the hosts
that changed. Every mode row's digest is checked against its contents: a forged
row is left out of every answer."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

from vucompat.core.fleet import FleetHost, HostSummary
from vucompat.core.mode import Mode
from vucompat.core.portview import IFACE_ID, PortView
from vucompat.core.modeset import Host, ModeSet
from vucompat.ovsdb.codec import decode_row, optional, shipped_types, to_json, uuid_ref
from vucompat.ovsdb.connection import Connection
from vucompat.ovsdb.fleet_rows import HOST_COLUMNS, MODE_COLUMNS, PORT_COLUMNS, fleet_host, fleet_port
from vucompat.ovsdb.rows import CorruptRowError, row_to_mode
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.ovsdb.rpc import OvsdbError
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions

log = logging.getLogger("vucompat.fleet")

#: what schedulers read of a Host row (its ports are read apart, when needed)
READ_HOST_COLUMNS = (*(c for c in HOST_COLUMNS if c != "ports"), "last_seen")


def checked_mode(row: Any, remote: str) -> Mode | None:
    """The Mode a fleet Compat_Mode row holds, or None (with a warning) when its
    contents do not match its digest: a forged row must not blind the readers, and
    a host that refers to it simply does not offer that mode."""
    try:
        return row_to_mode(row, remote)
    except CorruptRowError as err:
        log.warning("%s (left out of every answer)", err)
        return None


def _in_pool(pool: str) -> list[Any]:
    """The condition: a Host row's pool is `pool` (an optional column: compared as a set)."""
    return ["pool", "==", to_json(pool, shipped_types("Host", "fleet")["pool"])]


def _modes_by_uuid(rows: Iterable[dict[str, Any]], remote: str) -> dict[str, Mode]:
    decoded = (decode_row(row, "Compat_Mode", "fleet") for row in rows)
    modes = {row._uuid: checked_mode(row, remote) for row in decoded}
    return {uuid: mode for uuid, mode in modes.items() if mode is not None}


def port_rows_of(session: Session, host_row: dict[str, Any]) -> list[dict[str, Any]]:
    """The Port rows (raw OVSDB JSON) a Host row (raw, with its `ports` column) refers
    to, read by uuid (no scan of the Port table). Raises OvsdbError."""
    uuids = decode_row({"ports": host_row["ports"]}, "Host", "fleet").ports
    if not uuids:
        return []
    replies = session.transact([{"op": "select", "table": "Port", "where": [["_uuid", "==", uuid_ref(u)]],
                                 "columns": ["_uuid", "host", *PORT_COLUMNS, "mode"]} for u in uuids])
    return [row for reply in replies for row in reply["rows"]]


def read_fleet(session: Session, names: Sequence[str] | None = None, pool: str | None = None,
               modes: dict[str, Mode] | None = None) -> list[FleetHost]:
    """Hosts of the fleet, read once: all of them, the hosts `names`, or the hosts of
    `pool` (the server filters). `modes`: read_fleet_modes() if the caller has read them
    already. Raises OvsdbError."""
    by_uuid = modes if modes is not None else read_fleet_modes(session)
    wheres = [[["name", "==", n]] for n in names] if names is not None else \
        [[_in_pool(pool)] if pool is not None else []]
    if not wheres:
        return []
    replies = session.transact([{"op": "select", "table": "Host", "where": w, "columns": list(READ_HOST_COLUMNS)}
                                for w in wheres])
    return [fleet_host(decode_row(r, "Host", "fleet"), by_uuid, session.remote or "")
            for reply in replies for r in reply["rows"]]


#: what a whole-fleet listing reads of a Host row: no references (a host's 100 mode references
#: made `fleet hosts` over 10,000 hosts move ~1M uuids and take 7 s)
SUMMARY_COLUMNS = ("_uuid", "name", "pool", "ovs_version", "dpdk_version", "last_seen", "heartbeat_interval",
                   "mode_count", "runnable_count")


def read_host_summaries(session: Session, pool: str | None = None) -> list[HostSummary]:
    """Every host of the fleet (or of `pool`: the server filters), as a listing shows
    it, from the counts hosts publish. A host published by a vucompat from before
    the counts (schema 1.1) has its references read instead, by uuid. Raises OvsdbError."""
    where = [_in_pool(pool)] if pool else []
    try:
        (reply,) = session.transact([{"op": "select", "table": "Host", "where": where,
                                      "columns": list(SUMMARY_COLUMNS)}])
    except OvsdbError as err:
        if "mode_count is not a valid column name" not in str(err):
            raise
        # a fleet still on schema 1.1 (`vucompat fleet upgrade` converts it): no counts at all
        (reply,) = session.transact([{"op": "select", "table": "Host", "where": where,
                                      "columns": list(SUMMARY_COLUMNS[:-2])}])
    rows = [decode_row({"mode_count": ["set", []], "runnable_count": ["set", []], **r}, "Host", "fleet")
            for r in reply["rows"]]
    missing = [row._uuid for row in rows if optional(row.mode_count) is None or optional(row.runnable_count) is None]
    counts: dict[str, tuple[int, int]] = {}
    if missing:
        replies = session.transact([{"op": "select", "table": "Host", "where": [["_uuid", "==", uuid_ref(u)]],
                                     "columns": ["_uuid", "modes", "runnable"]} for u in missing])
        for found in (decode_row(r, "Host", "fleet") for reply in replies for r in reply["rows"]):
            counts[found._uuid] = (len(found.modes), len(found.runnable))
    return [HostSummary(row.name, optional(row.pool), optional(row.ovs_version), optional(row.dpdk_version),
                        int(row.last_seen), int(row.heartbeat_interval),
                        *counts.get(row._uuid, (optional(row.mode_count), optional(row.runnable_count))))
            for row in rows]


def read_can_run(session: Session, mode: str) -> list[FleetHost]:
    """The hosts that define `mode` ("NAME" or "NAME@DIGEST"), read once, the server
    filtering (`includes` on Host.modes and Host.runnable) and sending only what
    hosts_that_can_run needs. The hosts are partial: their registries hold only that
    mode; use them for hosts_that_can_run alone. Raises OvsdbError."""
    name, _, digest = mode.partition("@")
    matching = {u: m for u, m in read_fleet_modes(session).items()
                if m.name == name and (not digest or m.digest == digest)}
    light = ["name", "pool", "ovs_version", "dpdk_version", "last_seen", "heartbeat_interval"]
    ops = []
    for uuid in matching:
        ref = uuid_ref(uuid)
        ops += [{"op": "select", "table": "Host", "columns": light,
                 "where": [["modes", "includes", ref], ["runnable", "includes", ref]]},
                {"op": "select", "table": "Host", "columns": [*light, "unavailable"],
                 "where": [["modes", "includes", ref], ["runnable", "excludes", ref]]}]
    replies = session.transact(ops) if ops else []
    out = []
    for i, (uuid, found) in enumerate(matching.items()):
        for can, reply in ((True, replies[2 * i]), (False, replies[2 * i + 1])):
            for raw in reply["rows"]:
                row = decode_row(raw, "Host", "fleet")
                out.append(FleetHost(Host(row.name, ModeSet({found.name: found})), optional(row.pool),
                                     optional(row.ovs_version), optional(row.dpdk_version), int(row.last_seen),
                                     int(row.heartbeat_interval), frozenset([found.name] if can else []),
                                     {} if can else dict(row.unavailable)))
    return out


def read_fleet_modes(session: Session) -> dict[str, Mode]:
    """Every Compat_Mode row of the fleet by uuid (digests checked; forged rows left out)."""
    rows = session.transact([{"op": "select", "table": "Compat_Mode", "where": [],
                              "columns": ["_uuid", *MODE_COLUMNS]}])[0]["rows"]
    return _modes_by_uuid(rows, session.remote or "")


def read_fleet_ports(session: Session, host: str | None = None, interface: str | None = None,
                     modes: dict[str, Mode] | None = None) -> list[tuple[str, PortView]]:
    """Ports of the fleet (all, one host's, or one port of one host), read once, as
    (host name, port). `modes`: as for read_fleet(). Raises OvsdbError."""
    by_uuid = modes if modes is not None else read_fleet_modes(session)
    if host is not None:  # by the host's references: no scan of the Port table
        (hosts,) = session.transact([{"op": "select", "table": "Host", "where": [["name", "==", host]],
                                      "columns": ["ports"]}])
        rows = [r for h in hosts["rows"] for r in port_rows_of(session, h)]
    else:
        (reply,) = session.transact([{"op": "select", "table": "Port", "where": [],
                                      "columns": ["host", *PORT_COLUMNS, "mode"]}])
        rows = reply["rows"]
    return [fleet_port(decode_row(r, "Port", "fleet"), by_uuid) for r in rows
            if interface is None or r["interface_name"] == interface]


def read_iface_ports(session: Session, iface_ids: Sequence[str], modes: dict[str, Mode] | None = None
                     ) -> dict[str, list[tuple[str, PortView]]]:
    """iface-id -> (host name, port) of every fleet port of that Neutron port, for each
    of `iface_ids`, read once (one select per id, in one transaction). `modes`: as for
    read_fleet(). Raises OvsdbError."""
    ids = sorted(set(iface_ids))
    if not ids:
        return {}
    by_uuid = modes if modes is not None else read_fleet_modes(session)
    replies = session.transact([{"op": "select", "table": "Port", "columns": ["host", *PORT_COLUMNS, "mode"],
                                 "where": [["external_ids", "includes", ["map", [[IFACE_ID, i]]]]]} for i in ids])
    return {i: [fleet_port(decode_row(r, "Port", "fleet"), by_uuid) for r in reply["rows"]]
            for i, reply in zip(ids, replies)}


def read_pools(session: Session, pool: str | None = None) -> dict[str, str | None]:
    """Host name -> pool, for every host (or those of `pool`). Raises OvsdbError."""
    where = [_in_pool(pool)] if pool is not None else []
    (reply,) = session.transact([{"op": "select", "table": "Host", "where": where, "columns": ["name", "pool"]}])
    rows = (decode_row(r, "Host", "fleet") for r in reply["rows"])
    return {row.name: optional(row.pool) for row in rows}


def read_port_modes(session: Session) -> list[tuple[str, Mode | None]]:
    """(host name, mode) of every port: the two columns a report needs, in one scan."""
    by_uuid = read_fleet_modes(session)
    (reply,) = session.transact([{"op": "select", "table": "Port", "where": [], "columns": ["host", "mode"]}])
    rows = (decode_row(r, "Port", "fleet") for r in reply["rows"])
    return [(row.host, by_uuid.get(row.mode[0]) if row.mode else None) for row in rows]


class FleetView:
    """A warm scheduler's replica of the fleet's hosts (an IDL monitor on any
    cluster member; it fails over along the remotes), indexed by pool and by mode
    name. Each call rebuilds only the hosts that changed since the last one.
    Not thread-safe."""

    TABLES = {"Compat_Mode": MODE_COLUMNS, "Host": READ_HOST_COLUMNS}

    def __init__(self, remotes: str, timeout: float = 60.0, ssl: SslOptions | None = None) -> None:
        self.connection = Connection(remotes, timeout, ssl, tables=self.TABLES, database=FLEET_DB)
        self._modes: dict[str, Mode] = {}
        self._hosts: dict[Any, FleetHost] = {}
        self._by_pool: dict[str | None, dict[Any, FleetHost]] = {}
        self._by_mode: dict[str, dict[Any, FleetHost]] = {}

    def hosts(self, pool: str | None = None, defining: str | None = None) -> list[FleetHost]:
        """The hosts as the replica holds them now: all, those of `pool`, and/or
        those that define mode `defining` ("NAME" or "NAME@DIGEST": by name here;
        hosts_that_can_run checks the digest)."""
        self._update()
        if defining is not None:
            found = self._by_mode.get(defining.partition("@")[0], {}).values()
            return [h for h in found if pool is None or h.pool == pool]
        if pool is not None:
            return list(self._by_pool.get(pool, {}).values())
        return list(self._hosts.values())

    def _update(self) -> None:
        self.connection.refresh()
        idl = self.connection.idl
        changed, idl.changed = idl.changed, {}
        if not changed:
            return
        remote = self.connection.remote
        mode_table = idl.tables["Compat_Mode"].rows
        for uuid in changed.get("Compat_Mode", ()):
            row = mode_table.get(uuid)
            mode = checked_mode(row, remote) if row is not None else None
            if mode is None:
                self._modes.pop(str(uuid), None)
            else:
                self._modes[str(uuid)] = mode
        host_table = idl.tables["Host"].rows
        # a new mode can make a host's reference resolvable: then look at every host again
        rebuild = set(changed.get("Host", ())) if not changed.get("Compat_Mode") else set(host_table)
        for uuid in rebuild | (set(self._hosts) - set(host_table)):
            self._drop(uuid)
            row = host_table.get(uuid)
            if row is not None:
                self._add(uuid, fleet_host(row, self._modes, remote))

    def _add(self, uuid: Any, host: FleetHost) -> None:
        self._hosts[uuid] = host
        self._by_pool.setdefault(host.pool, {})[uuid] = host
        for name in host.host.modeset.modes:
            self._by_mode.setdefault(name, {})[uuid] = host

    def _drop(self, uuid: Any) -> None:
        old = self._hosts.pop(uuid, None)
        if old is not None:
            self._by_pool[old.pool].pop(uuid, None)
            for name in old.host.modeset.modes:
                self._by_mode[name].pop(uuid, None)

    def close(self) -> None:
        self.connection.close()
