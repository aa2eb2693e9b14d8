"""The fleet database (VuCompat_Fleet): configuring its listeners and RBAC roles,
publishing one host into it, and reading it for schedulers.

Writers and one-shot readers use session.Session (one persistent connection to any
member of the cluster, failing over along the comma-separated remotes); a warm
scheduler uses FleetView, an IDL replica that rebuilds only the hosts that changed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from vucompat.core.fleet import FleetHost, HostRecord, needed_modes
from vucompat.core.mode import Mode
from vucompat.core.portview import PortView
from vucompat.core.modeset import Host, ModeSet
from vucompat.ovsdb.connection import Connection
from vucompat.ovsdb.fleetrows import HOST_COLUMNS, PORT_COLUMNS, Published, published_after, publish_operations
from vucompat.ovsdb.codec import decode_row, encode_row, named_ref, optional, shipped_types, to_json, uuid_of, uuid_ref
from vucompat.ovsdb.rows import CorruptRowError, bits_to_mask, host_capabilities, row_to_mode
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions
from vucompat.ovsdb.schema import FLEET_DB

log = logging.getLogger("vucompat.fleet")

HOST_ROLE = "vucompat-host"
READER_ROLE = "vucompat-reader"
#: a publisher diffs against what it last wrote, and reads the fleet's rows again
#: after this many publishes (heartbeats included: about daily with the default heartbeat), after a
#: failure, and at start. Only admins can write a host's rows besides the host (RBAC), so this is a
#: safety net (bench/README.md has what a read costs)
REREAD_EVERY = 1440
MODE_COLUMNS = ("name", "lineage", "version", "released", "digest", "virtio_features", "protocol_features",
                "max_queue_pairs", "max_rx_queue_size", "max_tx_queue_size", "deprecated_features",
                "derived_from", "provenance", "note")
#: what schedulers read of a Host row (its ports are read apart, when needed)
READ_HOST_COLUMNS = (*(c for c in HOST_COLUMNS if c != "ports"), "last_seen")


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, as last_seen holds them."""
    return int(time.time() * 1000)


# ---- configuration (admin) ---------------------------------------------------------------------


def configuration_operations(host_targets: Sequence[str], reader_targets: Sequence[str]) -> list[dict[str, Any]]:
    """One transaction that replaces the fleet's listeners and roles:
    - `host_targets` (e.g. pssl:6650) take agents, with role vucompat-host: a host
      may insert, update and delete only the Host row whose name is its certificate's
      CN and the Port rows whose host is; it may add Compat_Mode rows (content-
      addressed: readers check every digest) but never change one;
    - `reader_targets` take schedulers, read-only (role vucompat-reader has no
      permission at all, and the listener is read_only too)."""
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
    for i, (target, role, read_only) in enumerate([*((t, HOST_ROLE, False) for t in host_targets),
                                                   *((t, READER_ROLE, True) for t in reader_targets)]):
        ops.append({"op": "insert", "table": "Connection", "uuid-name": f"c{i}",
                    "row": {"target": target, "role": role, "read_only": read_only}})
        connections.append(named_ref(f"c{i}"))
    ops.append({"op": "insert", "table": "Fleet", "row": encode_row({"connections": connections}, "Fleet", "fleet")})
    return ops


def configure(admin_remote: str, host_targets: Sequence[str], reader_targets: Sequence[str],
              timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None) -> None:
    """Write the fleet's listeners and roles (configuration_operations) through an
    admin remote (one without a role, e.g. a server's unix socket). Raises OvsdbError."""
    for target in (*host_targets, *reader_targets):
        if not target.startswith(("pssl:", "ptcp:", "punix:")):
            raise OvsdbError(remote=admin_remote, reason=f"listener {target!r} is not a passive remote: "
                             "write pssl:PORT[:IP] (ptcp: only for tests; RBAC needs SSL to know who connects)")
    session = Session(admin_remote, FLEET_DB, timeout, ssl)
    try:
        session.transact(configuration_operations(host_targets, reader_targets))
    finally:
        session.close()


# ---- publishing (a host's agent, the load generator) --------------------------------------------


def read_published(session: Session, record: HostRecord) -> Published:
    """What the fleet holds for `record`'s host: its Host row (found by name), its
    Port rows (by the uuids the Host row refers to: found at once) and the modes it
    needs. Raises OvsdbError, CorruptRowError for a forged mode row."""
    ops: list[dict[str, Any]] = [{"op": "select", "table": "Host", "where": [["name", "==", record.name]],
                                  "columns": ["_uuid", *HOST_COLUMNS]}]
    for name, digest in sorted(needed_modes(record)):
        ops.append({"op": "select", "table": "Compat_Mode", "where": [["name", "==", name], ["digest", "==", digest]],
                    "columns": ["_uuid", *MODE_COLUMNS]})
    hosts, *modes = (r["rows"] for r in session.transact(ops))
    remote = session.remote or ""
    known = {}
    for rows in modes:
        for row in (decode_row(raw, "Compat_Mode", "fleet") for raw in rows):
            mode = row_to_mode(row, remote)
            known[(mode.name, mode.digest)] = row._uuid
    host = hosts[0] if hosts else None
    ports = _ports_of(session, host) if host is not None else []
    return Published(host=host, ports={p["interface_name"]: p for p in ports}, modes=known)


def _ports_of(session: Session, host_row: dict[str, Any]) -> list[dict[str, Any]]:
    """The Port rows (raw) a Host row (raw, with its `ports` column) refers to."""
    uuids = decode_row({"ports": host_row["ports"]}, "Host", "fleet").ports
    if not uuids:
        return []
    replies = session.transact([{"op": "select", "table": "Port", "where": [["_uuid", "==", uuid_ref(u)]],
                                 "columns": ["_uuid", "host", *PORT_COLUMNS, "mode"]} for u in uuids])
    return [row for reply in replies for row in reply["rows"]]


@dataclass(frozen=True)
class PublishResult:
    """What publish() did."""

    #: operations that changed rows (0: the fleet was up to date)
    written: int
    #: what the fleet holds for the host now: the next publish needs no read
    state: Published


def publish(session: Session, record: HostRecord, heartbeat: bool = False, attempts: int = 3,
            known: Published | None = None) -> PublishResult:
    """Make the fleet hold `record` in one transaction that writes only the
    difference from what it holds: `known` (a previous result's state), or else
    what it reads first. A write built on a stale picture (the row was deleted
    meanwhile; another host added the same mode first) reads and tries again.
    Raises OvsdbError (nothing half-written: one transaction), CorruptRowError."""
    for attempt in range(attempts):
        current = known or read_published(session, record)
        known = None
        ops = publish_operations(record, current, now_ms(), heartbeat)
        written = sum(1 for op in ops if op["op"] != "wait")
        try:
            results = session.transact(ops) if ops else []
        except OvsdbError as err:
            stale_read = "constraint violation" in err.reason or "timed out" in err.reason  # index or wait
            if not stale_read or attempt == attempts - 1:
                raise
            continue
        return PublishResult(written, published_after(record, current, ops, results) if ops else current)
    raise AssertionError("unreachable")


class FleetPublisher:
    """Publishes one host into the fleet from a thread of its own, so the agent
    never waits for the fleet: offer() the newest record; it is published in one
    transaction, again whenever it changes, and its last_seen refreshed every
    heartbeat interval. Each publish diffs against what the last one wrote (no
    read), and every REREAD_EVERY publishes against what the fleet holds. While the fleet is
    unreachable it warns once, retries with backoff and, when the fleet returns,
    publishes what changed meanwhile."""

    def __init__(self, remotes: str, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None,
                 backoff_max: float = 8.0) -> None:
        self.session = Session(remotes, FLEET_DB, timeout, ssl)
        self.backoff_max = backoff_max
        self._record: HostRecord | None = None
        #: what the fleet holds for this host after the last successful publish (None: read first)
        self._state: Published | None = None
        self._since_read = 0
        self._wake = threading.Condition()
        self._stop = False
        self._dirty = False
        #: for status and tests: successful publishes, and the error of the last failure (None once it works)
        self.published = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="vucompat-fleet", daemon=True)
        self._thread.start()

    def offer(self, record: HostRecord) -> None:
        """Publish `record` (asynchronously) if it differs from the last one offered."""
        with self._wake:
            if record != self._record:
                self._record, self._dirty = record, True
                self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=10)
        self.session.close()

    def _run(self) -> None:
        backoff = 0.25
        next_heartbeat = 0.0
        while True:
            with self._wake:
                if self.last_error is not None:  # failing: wait out the backoff (an offer or stop() cuts it short)
                    self._wake.wait(backoff)
                elif not self._dirty:
                    self._wake.wait(None if self._record is None else max(0.0, next_heartbeat - time.monotonic()))
                if self._stop:
                    return
                record, dirty, self._dirty = self._record, self._dirty, False
            if record is None:
                continue
            heartbeat = time.monotonic() >= next_heartbeat
            if not (dirty or heartbeat or self.last_error):
                continue
            known = self._state if self.last_error is None and self._since_read < REREAD_EVERY else None
            self._state = None
            try:
                self._state = publish(self.session, record, heartbeat=heartbeat, known=known).state
                self._since_read = self._since_read + 1 if known is not None else 0
            except Exception as err:  # noqa: BLE001 - unreachable, refused, a forged mode row: keep the agent up
                if "permission error" in str(err):
                    err = OvsdbError(remote=self.session.remote, reason=f"{err}; this host publishes as "
                                     f"{record.name!r}: its certificate's CN must be that name (or give the CN "
                                     "as --fleet-name)")
                if self.last_error is None:  # once per outage; the rest at debug level
                    log.warning("fleet database unreachable or refusing (%s); this host keeps working and "
                                "publishes when it answers again", err)
                else:
                    log.debug("fleet publish failed again: %s", err)
                self.last_error = str(err)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            if self.last_error is not None:
                log.warning("fleet database reachable again: %s is published", record.name)
            self.last_error = None
            backoff = 0.25
            self.published += 1
            next_heartbeat = time.monotonic() + record.heartbeat_interval


# ---- reading (schedulers) -----------------------------------------------------------------------


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
                              interface_type=row.interface_type)


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


def load_fleet(session: Session, names: Sequence[str] | None = None, pool: str | None = None,
               modes: dict[str, Mode] | None = None) -> list[FleetHost]:
    """Hosts of the fleet, read once: all of them, the hosts `names`, or the hosts of
    `pool` (the server filters). `modes`: load_modes() if the caller has read them
    already. Raises OvsdbError."""
    by_uuid = modes if modes is not None else load_modes(session)
    wheres = [[["name", "==", n]] for n in names] if names is not None else \
        [[_in_pool(pool)] if pool is not None else []]
    if not wheres:
        return []
    replies = session.transact([{"op": "select", "table": "Host", "where": w, "columns": list(READ_HOST_COLUMNS)}
                                for w in wheres])
    return [fleet_host(decode_row(r, "Host", "fleet"), by_uuid, session.remote or "")
            for reply in replies for r in reply["rows"]]


def load_can_run(session: Session, mode: str) -> list[FleetHost]:
    """The hosts that define `mode` ("NAME" or "NAME@DIGEST"), read once, the server
    filtering (`includes` on Host.modes and Host.runnable) and sending only what
    hosts_that_can_run needs. The hosts are partial: their registries hold only that
    mode; use them for hosts_that_can_run alone. Raises OvsdbError."""
    name, _, digest = mode.partition("@")
    matching = {u: m for u, m in load_modes(session).items()
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


def load_modes(session: Session) -> dict[str, Mode]:
    """Every Compat_Mode row of the fleet by uuid (digests checked; forged rows left out)."""
    rows = session.transact([{"op": "select", "table": "Compat_Mode", "where": [],
                              "columns": ["_uuid", *MODE_COLUMNS]}])[0]["rows"]
    return _modes_by_uuid(rows, session.remote or "")


def load_ports(session: Session, host: str | None = None, interface: str | None = None,
               modes: dict[str, Mode] | None = None) -> list[tuple[str, PortView]]:
    """Ports of the fleet (all, one host's, or one port of one host), read once, as
    (host name, port). `modes`: as for load_fleet(). Raises OvsdbError."""
    by_uuid = modes if modes is not None else load_modes(session)
    if host is not None:  # by the host's references: no scan of the Port table
        (hosts,) = session.transact([{"op": "select", "table": "Host", "where": [["name", "==", host]],
                                      "columns": ["ports"]}])
        rows = [r for h in hosts["rows"] for r in _ports_of(session, h)]
    else:
        (reply,) = session.transact([{"op": "select", "table": "Port", "where": [],
                                      "columns": ["host", *PORT_COLUMNS, "mode"]}])
        rows = reply["rows"]
    return [fleet_port(decode_row(r, "Port", "fleet"), by_uuid) for r in rows
            if interface is None or r["interface_name"] == interface]


def load_pools(session: Session, pool: str | None = None) -> dict[str, str | None]:
    """Host name -> pool, for every host (or those of `pool`). Raises OvsdbError."""
    where = [_in_pool(pool)] if pool is not None else []
    (reply,) = session.transact([{"op": "select", "table": "Host", "where": where, "columns": ["name", "pool"]}])
    rows = (decode_row(r, "Host", "fleet") for r in reply["rows"])
    return {row.name: optional(row.pool) for row in rows}


def load_port_modes(session: Session) -> list[tuple[str, Mode | None]]:
    """(host name, mode) of every port: the two columns a report needs, in one scan."""
    by_uuid = load_modes(session)
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
