"""Reading the fleet database (schedulers, `vucompat fleet ...`): one-shot reads
over a session.Session (read_fleet, read_can_run, ...; the server filters where it
can), and FleetView, a warm scheduler's IDL replica that rebuilds only the hosts
that changed. Every mode row's digest is checked against its contents: a forged
row is left out of every answer."""

from __future__ import annotations

import errno
import logging
import os
import time
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

import ovs.jsonrpc

from vucompat.core.fleet import FleetHost, HostSummary
from vucompat.core.mode import Mode
from vucompat.core.portview import IFACE_ID, PortView
from vucompat.core.modeset import Host, ModeSet
from vucompat.ovsdb.codec import (column_kind, decode_row, default_json, optional, shipped_types, to_json, to_python,
                                  uuid_ref)
from vucompat.ovsdb.freshness import SERVER_STATUS_DB, Freshness, SourceState, replica_freshness
from vucompat.ovsdb.fleet_rows import HOST_COLUMNS, LIMITS, MODE_COLUMNS, PORT_COLUMNS, fleet_host, fleet_port
from vucompat.ovsdb.rows import CorruptRowError, host_capabilities, row_to_mode
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.ovsdb.rpc import OvsdbError, connect, receive
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions, configure_ssl

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
    """A warm scheduler's replica of the fleet's hosts: all of them, or only those of
    `pools` (conditional monitoring: the server sends nothing of the others), and of
    each host only the columns the scheduler's questions need (no ports, no counts,
    no policy). It monitors any member and fails over along the remotes, and it
    keeps itself small: a host's mode references are held as small integers, and
    hosts that define the same modes share one dict of them (most hosts of a pool
    run the same tables). Indexed by pool and by mode name; each call rebuilds only
    the hosts that changed since the last one. Not thread-safe.

    It also monitors its server's _Server row for the fleet, and monitors only a
    server whose copy is current (a member connected to its cluster, a relay to its
    source, not older than one it had before); when its server loses that, it looks
    for another (at most every TOUR_INTERVAL s) and keeps its copy meanwhile. Each
    hosts() sets `freshness`: how fresh the answer is (docs/fleet.md, "Honest
    reads"). With no current copy anywhere, it keeps the one it holds (or, holding
    none, loads the freshest there is), marked stale."""

    #: the Host columns a can-run or select-mode answer needs
    HOST_COLUMNS = ("name", "pool", "capabilities_source", "virtio_features", "protocol_features", *LIMITS,
                    "type_offers", "ovs_version", "dpdk_version", "modes", "runnable", "unavailable", "last_seen",
                    "heartbeat_interval")
    #: a monitor's id in the JSON-RPC notifications
    MONITOR = "vucompat-fleet-view"
    #: the monitor of the server's _Server row for the fleet
    SERVER_MONITOR = "vucompat-fleet-view-server"
    #: how often a replica whose copy may be stale looks for a server with a current one (seconds)
    TOUR_INTERVAL = 1.0

    def __init__(self, remotes: str, timeout: float = 60.0, ssl: SslOptions | None = None,
                 pools: Sequence[str] | None = None) -> None:
        self.remotes = [r.strip() for r in remotes.split(",") if r.strip()]
        self.timeout = timeout
        self.pools = tuple(pools) if pools is not None else None
        configure_ssl(ssl)
        self.remote: str | None = None
        self._rpc: Any = None
        self._next = 0
        self._ids: dict[str, int] = {}  # a mode's uuid -> its small integer
        self._modes: dict[int, Mode] = {}
        self._rows: dict[str, dict[str, Any]] = {}  # host uuid -> its columns, decoded; references as ints
        self._dirty: set[str] = set()
        self._modes_changed = False
        self._shared: dict[tuple[int, ...], dict[str, Mode]] = {}
        self._shared_runnable: dict[tuple[int, ...], frozenset[str]] = {}
        self._hosts: dict[str, FleetHost] = {}
        self._by_pool: dict[str | None, dict[str, FleetHost]] = {}
        self._by_mode: dict[str, dict[str, FleetHost]] = {}
        self._types = shipped_types("Host", "fleet")
        self._host_defaults = {c: default_json(self._types[c]) for c in self.HOST_COLUMNS}
        modes = shipped_types("Compat_Mode", "fleet")
        self._mode_defaults = {c: default_json(modes[c]) for c in MODE_COLUMNS}
        #: what the server monitored says of its copy (its _Server row), the highest raft index seen,
        #: whether a copy is held, when the remotes were last toured
        self.source: SourceState | None = None
        self._server_row: tuple[str, dict[str, Any]] | None = None
        self._min_index = 0
        self._loaded = False
        self._toured = 0.0
        self._fresh_at: int | None = None
        self._monitor()
        #: how fresh the answer of the last hosts() call was (at first: the copy just loaded)
        self.freshness: Freshness = self._judge()

    def hosts(self, pool: str | None = None, defining: str | None = None) -> list[FleetHost]:
        """The hosts as the replica holds them now: all, those of `pool`, and/or
        those that define mode `defining` ("NAME" or "NAME@DIGEST": by name here;
        hosts_that_can_run checks the digest). Sets `freshness`. Raises OvsdbError when
        no server answers and no copy is held (a copy held is answered, marked stale)."""
        self._update()
        if defining is not None:
            found = self._by_mode.get(defining.partition("@")[0], {}).values()
            return [h for h in found if pool is None or h.pool == pool]
        if pool is not None:
            return list(self._by_pool.get(pool, {}).values())
        return list(self._hosts.values())

    def close(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
        self._rpc = self.remote = None

    # -- the monitor -------------------------------------------------------------
    def _request(self) -> list[Any]:
        host: dict[str, Any] = {"columns": list(self.HOST_COLUMNS)}
        if self.pools is not None:  # the clauses of a monitor condition are ORed
            host["where"] = [_in_pool(p) for p in self.pools] or [False]
        tables = {"Compat_Mode": [{"columns": list(MODE_COLUMNS)}], "Host": [host]}
        return [FLEET_DB, self.MONITOR, tables]

    def _server_state(self, rpc: Any, remote: str, deadline: float) -> SourceState | None:
        """Monitor the server's _Server row for the fleet (its updates arrive with the
        fleet's); return what it says now, or None when it does not answer."""
        request = ovs.jsonrpc.Message.create_request("monitor", [SERVER_STATUS_DB, self.SERVER_MONITOR, {"Database": {
            "columns": ["name", "model", "connected", "leader", "index"]}}])
        error = rpc.send(request)
        while not error:
            error, reply = receive(rpc, deadline)
            if not error and reply.id == request.id:
                if reply.type != ovs.jsonrpc.Message.T_REPLY:  # no _Server (before OVS 2.9): nothing is known
                    return SourceState(remote, "unknown", True, False, None)
                return self._state_of(remote, reply.result)
        return None

    def _state_of(self, remote: str, updates: dict[str, Any]) -> SourceState | None:
        """The SourceState after a _Server monitor's update (None: it is not about the
        fleet's row). The row is kept whole: an update may carry only what changed."""
        for uuid, change in updates.get("Database", {}).items():
            new = change.get("new")
            if new is None:
                continue
            if new.get("name") == FLEET_DB:
                self._server_row = (uuid, dict(new))
            elif self._server_row is not None and self._server_row[0] == uuid:
                self._server_row[1].update(new)
            else:
                continue
            return SourceState.from_rows(remote, [self._server_row[1]])
        return None

    def _monitor(self) -> None:
        """Connect to the next remote whose copy is current and load the whole replica
        again from it. With none: keep the copy held, stale; holding none, load the
        freshest copy there is, stale. Raises OvsdbError when no server answers."""
        self.close()
        self._toured = time.monotonic()
        errors: list[str] = []
        stale: list[SourceState] = []
        # holding a copy, a tour is short (the copy is kept, marked, and the next call tours again); loading one
        # waits for as long as the caller said
        deadline = time.monotonic() + (min(self.timeout, 2.0) if self._loaded else self.timeout)
        for attempt in range(len(self.remotes) + 1):
            if attempt == len(self.remotes):  # every server that answers has a copy that may be stale
                if not stale or self._loaded:
                    break
                remote = max(stale, key=lambda state: state.index or 0).remote
            else:
                remote = self.remotes[self._next % len(self.remotes)]
                self._next += 1
            try:
                rpc = connect(remote, deadline, self.timeout)
            except OvsdbError as err:
                errors.append(err.reason)
                continue
            state = self._server_state(rpc, remote, deadline)
            if state is None:
                rpc.close()
                errors.append(f"{remote}: no answer")
                continue
            if state.problem(self._min_index) is not None and attempt < len(self.remotes):
                stale.append(state)
                rpc.close()
                continue
            self.source = state
            deadline = time.monotonic() + self.timeout  # the whole replica may take a while
            request = ovs.jsonrpc.Message.create_request("monitor_cond", self._request())
            error = rpc.send(request)
            while not error:
                error, reply = receive(rpc, deadline)
                if not error and reply.type == ovs.jsonrpc.Message.T_REPLY and reply.id == request.id:
                    self._rpc, self.remote = rpc, remote
                    self._load(reply.result)
                    self._loaded = True
                    return
                if not error and reply.type == ovs.jsonrpc.Message.T_ERROR and reply.id == request.id:
                    error = -1
                    errors.append(f"{remote}: {reply.error}")
            rpc.close()
            errors.append(f"{remote}: {os.strerror(error) if error > 0 else 'no monitor'}")
        if self._loaded:  # keep the copy held: hosts() says it may be stale, and the next call looks again
            self.source = None
            return
        raise OvsdbError(remote=",".join(self.remotes), reason="no server answers: " + " | ".join(errors))

    def _load(self, updates: dict[str, Any]) -> None:
        self._rows.clear()
        self._hosts.clear()
        self._by_pool.clear()
        self._by_mode.clear()
        self._modes.clear()
        self._shared.clear()
        self._shared_runnable.clear()
        self._apply(updates)

    def _poll(self) -> None:
        """Apply every notification that has arrived; on a lost connection, monitor again."""
        while self._rpc is not None:
            self._rpc.run()
            error, message = self._rpc.recv()
            if error == errno.EAGAIN:
                return
            if error:
                log.warning("lost the fleet replica's server %s (%s): monitoring another", self.remote,
                            os.strerror(error) if error > 0 else "end of stream")
                self._monitor()
                return
            if message.type == ovs.jsonrpc.Message.T_NOTIFY and message.method == "update2":
                self._apply(message.params[1])
            elif message.type == ovs.jsonrpc.Message.T_NOTIFY and message.method == "update" and \
                    message.params[0] == self.SERVER_MONITOR:
                self.source = self._state_of(self.remote or "", message.params[1]) or self.source
            elif message.type == ovs.jsonrpc.Message.T_REQUEST and message.method == "echo":
                self._rpc.send(ovs.jsonrpc.Message.create_reply(message.params, message.id))

    def _apply(self, updates: dict[str, Any]) -> None:
        for uuid, change in updates.get("Compat_Mode", {}).items():
            ident = self._ids.setdefault(uuid, len(self._ids))
            row = change.get("initial") or change.get("insert")
            if row is not None:
                row = {**self._mode_defaults, **row}  # (a monitor leaves out columns at their default)
                mode = checked_mode(decode_row(row, "Compat_Mode", "fleet"), self.remote or "")
                if mode is not None:
                    self._modes[ident] = mode
                self._modes_changed = True
            elif "delete" in change:
                self._modes.pop(ident, None)
                self._modes_changed = True
            # (a mode is never updated: its rows are content-addressed)
        for uuid, change in updates.get("Host", {}).items():
            row = change.get("initial") or change.get("insert")
            if row is not None:
                self._rows[uuid] = self._compact(row)
            elif "modify" in change and uuid in self._rows:
                self._modify(self._rows[uuid], change["modify"])
            elif "delete" in change:
                self._rows.pop(uuid, None)
            self._dirty.add(uuid)

    def _compact(self, row: dict[str, Any]) -> dict[str, Any]:
        """A Host row as the replica keeps it: decoded, its references as small integers."""
        row = {**self._host_defaults, **row}  # (a monitor leaves out columns at their default)
        out = vars(decode_row({c: v for c, v in row.items() if c not in ("modes", "runnable")}, "Host", "fleet"))
        for column in ("modes", "runnable"):
            refs = to_python(row.get(column, ["set", []]), self._types[column])
            out[column] = tuple(sorted(self._ids.setdefault(u, len(self._ids)) for u in refs))
        return out

    def _modify(self, held: dict[str, Any], diff: dict[str, Any]) -> None:
        """Apply an update2 "modify": a set's diff holds the elements that come or go
        (an optional column that had a value: its new value), a map's the pairs that
        come, change or go (same pair: it goes); other columns get their new value."""
        for column, value in diff.items():
            if column in ("modes", "runnable"):
                toggled = {self._ids.setdefault(u, len(self._ids)) for u in to_python(value, self._types[column])}
                held[column] = tuple(sorted(set(held[column]) ^ toggled))
                continue
            column_type = self._types[column]
            kind = column_kind(column_type)
            new = to_python(value, column_type)
            if kind == "set" and column_type.get("max", 1) == 1 and held[column]:
                held[column] = new  # an optional value that was set: the diff is the new value (as the IDL reads it)
            elif kind == "set":
                held[column] = list(set(held[column]) ^ set(new))
            elif kind == "map":
                current = dict(held[column])
                for key, item in new.items():
                    if current.get(key) == item:
                        del current[key]
                    else:
                        current[key] = item
                held[column] = current
            else:
                held[column] = new

    # -- the hosts, rebuilt when they changed ---------------------------------------
    def _update(self) -> None:
        if self._rpc is None and (not self._loaded or time.monotonic() - self._toured >= self.TOUR_INTERVAL):
            self._monitor()
        self._poll()
        if self._rpc is not None and self.source is not None and self.source.problem(self._min_index) and \
                time.monotonic() - self._toured >= self.TOUR_INTERVAL:
            if not self.freshness.stale_source:
                log.warning("the fleet replica's server: %s; looking for another", self.source.problem(self._min_index))
            self._monitor()  # a server with a current copy, if any (else this one again, or the copy held)
            self._poll()
        self.freshness = self._judge()
        if self._modes_changed:  # a mode that arrives can make a reference resolvable
            self._dirty |= set(self._rows) | set(self._hosts)
            self._shared.clear()
            self._shared_runnable.clear()
            self._modes_changed = False
        for uuid in self._dirty:
            self._drop(uuid)
            held = self._rows.get(uuid)
            if held is not None:
                self._add(uuid, self._build(held))
        self._dirty.clear()

    def _judge(self) -> Freshness:
        """How fresh the copy held is now (and remember the raft index it reached)."""
        freshness = replica_freshness(self.source if self._rpc is not None else None, self._min_index,
                                      self._fresh_at)
        self._fresh_at = freshness.fresh_at
        if not freshness.stale_source and freshness.index is not None:
            self._min_index = max(self._min_index, freshness.index)
        return freshness

    def _build(self, held: dict[str, Any]) -> FleetHost:
        own = self._shared.get(held["modes"])
        if own is None:
            found = (self._modes[i] for i in held["modes"] if i in self._modes)
            own = self._shared[held["modes"]] = {m.name: m for m in found}
        runnable = self._shared_runnable.get(held["runnable"])
        if runnable is None:
            runnable = self._shared_runnable[held["runnable"]] = frozenset(
                self._modes[i].name for i in held["runnable"] if i in self._modes)
        row = SimpleNamespace(**held)
        host = Host(name=row.name, modeset=ModeSet(own, where=f"the fleet's copy of {row.name}"),
                    capabilities=host_capabilities(row, self.remote or ""))
        return FleetHost(host=host, pool=optional(row.pool), ovs_version=optional(row.ovs_version),
                         dpdk_version=optional(row.dpdk_version), last_seen=int(row.last_seen),
                         heartbeat_interval=int(row.heartbeat_interval), runnable=runnable,
                         unavailable=dict(row.unavailable))

    def _add(self, uuid: str, host: FleetHost) -> None:
        self._hosts[uuid] = host
        self._by_pool.setdefault(host.pool, {})[uuid] = host
        for name in host.host.modeset.modes:
            self._by_mode.setdefault(name, {})[uuid] = host

    def _drop(self, uuid: str) -> None:
        old = self._hosts.pop(uuid, None)
        if old is not None:
            self._by_pool[old.pool].pop(uuid, None)
            for name in old.host.modeset.modes:
                self._by_mode[name].pop(uuid, None)
