"""The agent's reads and writes: vhost-user Interfaces of the Open_vSwitch database,
Port rows of the registry, and the external_ids mirror. Values in, values out
(core.portview); the agent sequences them (agent.loop):

- read_interfaces, read_ports: the views a plan is made from;
- commit_registry: the plan's registry actions, one transaction (Port rows, and a
  derived mode's row when a port needs one); a conflict is raised, not retried,
  because only a new plan from fresh views is right;
- commit_interfaces: the plan's Interface actions, one transaction: the mirror in the
  Interfaces' external_ids, written key by key (mutate), since other tools (os-vif:
  iface-id, attached-mac, vm-uuid) share that map, and the first half of redirects;
  finish_redirects: their second half, once ovs-vswitchd has caught up.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from vucompat.core.catalog import bits_of
from vucompat.core.portview import (MOVING, OPTION, SERVER_PATH, CreatePort, InterfaceAction, InterfaceView, Mirror,
                                    PortView, Redirect, RegistryAction, RemovePort, UpdatePort)
from vucompat.core.resolve import FOLLOWS_SOURCE, REJECTED, Resolution
from vucompat.ovsdb.connection import Connection
from vucompat.ovsdb import rpc
from vucompat.ovsdb.codec import decode_row, optional
from vucompat.ovsdb.rows import bits_to_mask, mode_values, row_to_mode
from vucompat.ovsdb.schema import COLUMNS, DB_NAME
from vucompat.ovsdb.tls import configure_ssl

log = logging.getLogger("vucompat.agent")

OVS_DB = "Open_vSwitch"
#: what the agent monitors in the Open_vSwitch database
INTERFACE_COLUMNS: dict[str, tuple[str, ...]] = {
    "Interface": ("name", "type", "options", "external_ids", "status"),
    "Open_vSwitch": ("other_config", "ovs_version", "dpdk_version", "next_cfg", "cur_cfg"),
}


def _views(conn: Connection, table: str, make: Callable[[Any], Any]) -> list[Any]:
    """make(row) for every row of `table`, rebuilt only for rows that changed.

    The IDL converts a set or map column on every attribute read, which made each
    reconcile of a few hundred ports cost tens of milliseconds. The connection's IDL
    records which rows its updates touched (notify()); only those are converted again.
    """
    cache = conn.view_cache.setdefault(table, {})
    for uuid_ in conn.idl.changed.pop(table, ()):
        cache.pop(uuid_, None)
    out, seen = [], set()
    for row in conn.rows(table):
        if row.uuid not in cache:
            cache[row.uuid] = make(row)
        out.append(cache[row.uuid])
        seen.add(row.uuid)
    for gone in set(cache) - seen:
        del cache[gone]
    return out


def read_interfaces(ovs: Connection) -> list[InterfaceView]:
    """Every Interface, as the agent sees it (filtering by type is the planner's)."""
    return _views(ovs, "Interface", lambda row: InterfaceView(
        uuid=str(row.uuid), name=row.name, type=row.type, request=row.options.get(OPTION),
        external_ids=dict(row.external_ids), status=dict(row.status), server_path=row.options.get(SERVER_PATH)))


def read_ports(registry: Connection) -> dict[str, PortView]:
    """Every Port row, with its mode expanded (each mode once, however many ports use it)."""
    modes = dict(_views(registry, "Compat_Mode", lambda row: (row.uuid, row_to_mode(row, registry.remote))))
    # (a Port's mode reference never changes, and modes are never edited: the whole view can be kept)
    ports = _views(registry, "Port", lambda row: _port_view(row, modes[row.mode[0].uuid] if row.mode else None))
    return {port.name: port for port in ports}


def _port_view(row: Any, mode: Any) -> PortView:
    """A PortView from a Port row (an IDL row, or a decoded `select` row) and its expanded mode."""
    return PortView(
        name=row.interface_name, interface_uuid=str(row.interface_uuid), requested=row.requested,
        resolved=optional(row.resolved), state=row.state, error=optional(row.error), mode=mode,
        negotiated_features=bits_to_mask(row.negotiated_features), negotiated=dict(row.negotiated),
        verification=optional(row.verification), frontend_socket=optional(row.frontend_socket),
        relay_socket=optional(row.relay_socket), violation=optional(row.violation),
        interface_type=row.interface_type, rule=optional(row.rule), rule_detail=optional(row.rule_detail),
        iface_id=optional(row.iface_id))


def read_registry_ports(remote: str, timeout: float, ssl: Any = None) -> dict[str, PortView]:
    """Return one host's ports as its registry database at `remote` holds them: every
    Port row, read once (one select, no monitor), with its mode expanded, by interface
    name. Raises OvsdbError within `timeout`, CorruptRowError."""
    configure_ssl(ssl)
    modes, ports = rpc.transact(remote, DB_NAME, [
        {"op": "select", "table": "Compat_Mode", "where": [], "columns": ["_uuid", *COLUMNS["Compat_Mode"]]},
        {"op": "select", "table": "Port", "where": [], "columns": list(COLUMNS["Port"])},
    ], timeout)
    mode_rows = [decode_row(row, "Compat_Mode") for row in modes["rows"]]
    by_uuid = {row._uuid: row_to_mode(row, remote) for row in mode_rows}
    rows = [decode_row(raw, "Port") for raw in ports["rows"]]
    return {row.interface_name: _port_view(row, by_uuid.get(row.mode[0]) if row.mode else None) for row in rows}


@dataclass
class PendingRedirects:
    """Client ports half-way onto their relays: their type was flipped (or, in place,
    their path waits for ovs-vswitchd to apply what came before); the second half
    waits until ovs-vswitchd has applied the first (cur_cfg >= target)."""

    redirects: list[Redirect]
    #: the next_cfg to wait for; None when no ovs-vswitchd runs (finish at once)
    target: int | None
    deadline: float = field(default_factory=lambda: time.monotonic() + 10.0)

    def due(self, ovs: Connection) -> bool:
        if self.target is None or time.monotonic() > self.deadline:
            return True
        return all(row.cur_cfg >= self.target for row in ovs.rows("Open_vSwitch"))


def commit_registry(registry: Connection, actions: Sequence[RegistryAction], deadline: float | None = None) -> bool:
    """Write the registry actions of a plan in one transaction: Port rows, and a
    derived mode's row when a port needs one. Returns whether anything was written
    (nothing to do: no transaction at all). Raises Conflict when a concurrent writer
    changed what the plan was made from (read again and plan again; the connection
    already shows the newer contents), OvsdbError otherwise; nothing is written then."""
    if not actions:
        return False
    _result, written = registry.attempt(lambda txn: _stage_registry(registry, txn, actions), deadline)
    return written


def commit_interfaces(ovs: Connection, actions: Sequence[InterfaceAction]) -> PendingRedirects | None:
    """Write the Interface actions of a plan in one transaction: the external_ids
    mirrors, key by key, and the first half of each redirect onto a relay (which
    must already listen). Returns the redirects to finish with finish_redirects()
    once they are due (the caller keeps serving other ports meanwhile), or None.
    Raises OvsdbError; nothing is written then."""
    mirrors = [a for a in actions if isinstance(a, Mirror)]
    in_place = [a for a in actions if isinstance(a, Redirect) and a.in_place]
    redirects = [a for a in actions if isinstance(a, Redirect) and not a.in_place]
    if not mirrors and not redirects and not in_place:
        return None
    # an in-place path waits while ovs-vswitchd is still applying earlier changes (the
    # add-port that made the port, most often): written now, OVS would register and
    # connect in the same pass, and the add-port would wait for that too
    now, later = ([], in_place) if vswitchd_behind(ovs) else (in_place, [])
    waits, _ = ovs.transact(lambda txn: _stage_interfaces(ovs, txn, mirrors, redirects, now))
    if not redirects and not later:
        return None
    target = max(row.next_cfg for row in ovs.rows("Open_vSwitch")) if waits or later else None
    return PendingRedirects([*redirects, *later], target)


def vswitchd_behind(ovs: Connection) -> bool:
    """Whether a running ovs-vswitchd has not applied the latest configuration yet
    (cur_cfg behind next_cfg; cur_cfg 0: none has run)."""
    rows = ovs.rows("Open_vSwitch")
    return bool(rows) and 0 < rows[0].cur_cfg < rows[0].next_cfg


def finish_redirects(ovs: Connection, pending: PendingRedirects) -> None:
    """The second half: type back to dpdkvhostuserclient, with the relay's path (for an
    in-place redirect that waited, the path alone: its type did not change)."""
    if pending.target is not None and time.monotonic() > pending.deadline:
        log.warning("ovs-vswitchd did not apply the ports' re-creation within 10s; finishing anyway")
    rows = {str(row.uuid): row for row in ovs.rows("Interface")}

    def build(txn: Any) -> None:
        for redirect in pending.redirects:
            row = rows.get(redirect.interface_uuid)
            if row is not None:
                row.type = "dpdkvhostuserclient"
                row.setkey("options", SERVER_PATH, redirect.path)
                row.delkey("external_ids", MOVING)

    ovs.transact(build)


def _stage_registry(registry: Connection, txn: Any, actions: Sequence[RegistryAction]) -> None:
    """The plan's registry actions; an Incoming_Port row is used up by the port it decided."""
    ports = {row.interface_name: row for row in registry.rows("Port")}
    modes = {row.name: row for row in registry.rows("Compat_Mode")}
    incoming = {row.iface_id: row for row in registry.rows("Incoming_Port")}
    for action in actions:
        iface_id = _followed(action, ports)
        if iface_id in incoming:
            incoming.pop(iface_id).delete()
    for action in actions:
        if isinstance(action, RemovePort) and action.name in ports:
            ports.pop(action.name).delete()
        elif isinstance(action, CreatePort):
            row = txn.insert(registry.idl.tables["Port"])
            row.interface_name = action.interface.name
            row.interface_uuid = uuid.UUID(action.interface.uuid)
            row.interface_type = action.interface.type
            row.iface_id = [action.interface.iface_id] if action.interface.iface_id else []
            _set_resolution(row, action.resolution, modes, registry, txn)
            _set_fields(row, action.fields)
            ports[action.interface.name] = row
        elif isinstance(action, UpdatePort) and action.name in ports:
            row = ports[action.name]
            if action.resolution is not None:
                _set_resolution(row, action.resolution, modes, registry, txn)
            _set_fields(row, action.changes)


def _followed(action: RegistryAction, ports: Mapping[str, Any]) -> str | None:
    """The iface-id whose source's mode `action` gives its port, or None."""
    if isinstance(action, CreatePort):
        resolution, iface_id = action.resolution, action.interface.iface_id
    elif isinstance(action, UpdatePort) and action.resolution is not None and action.name in ports:
        resolution, iface_id = action.resolution, optional(ports[action.name].iface_id)
    else:
        return None
    return iface_id if resolution.rule == FOLLOWS_SOURCE and resolution.state != REJECTED else None


def _set_resolution(row: Any, resolution: Resolution, modes: dict[str, Any], registry: Connection,
                    txn: Any) -> None:
    row.requested = resolution.requested
    row.rule = [resolution.rule]
    row.rule_detail = [resolution.rule_detail] if resolution.rule_detail else []
    row.resolved = [resolution.resolved] if resolution.resolved else []
    mode = resolution.mode
    if mode is None:
        row.mode = []
        return
    if mode.name not in modes:  # a derived mode (<mode>+recommended): materialize it for the reference
        mode_row_ = txn.insert(registry.idl.tables["Compat_Mode"])
        for column, value in mode_values(mode).items():
            setattr(mode_row_, column, value)
        modes[mode.name] = mode_row_
    row.mode = [modes[mode.name]]


def _set_fields(row: Any, fields: Any) -> None:
    """Set the state, error and verification columns (optional ones as lists)."""
    for column, value in fields.items():
        if column == "negotiated_features":
            value = bits_of(int(value))
        elif column in ("error", "verification", "frontend_socket", "relay_socket", "violation"):
            value = [str(value)] if value else []
        setattr(row, column, value)


def _stage_interfaces(ovs: Connection, txn: Any, mirrors: Sequence[Mirror], redirects: Sequence[Redirect],
                      in_place: Sequence[Redirect] = ()) -> bool:
    """Key by key (mutate): the external_ids mirrors. The paths of in-place redirects
    (a held port, with no vhost-server-path yet: OVS registers and first connects when
    it gets one; a port OVS still uses the relay of). And the first half of each other
    redirect: OVS registers a dpdkvhostuserclient socket path
    once, so a new vhost-server-path alone is ignored until the netdev is created
    again; changing the type and back (finish_redirects) recreates it, same row, same
    ofport. Returns whether to wait for ovs-vswitchd (one is running) before the second half."""
    rows = {str(row.uuid): row for row in ovs.rows("Interface")}
    for mirror in mirrors:
        row = rows.get(mirror.interface_uuid)
        if row is None:
            continue  # deleted meanwhile: the next reconcile removes its Port
        for key, value in mirror.set.items():
            row.setkey("external_ids", key, value)
        for key in mirror.delete:
            row.delkey("external_ids", key)
    for redirect in in_place:
        if redirect.interface_uuid in rows:
            row = rows[redirect.interface_uuid]
            if redirect.resume:  # the second half of a move an agent stopped half-way
                row.type = "dpdkvhostuserclient"
                row.delkey("external_ids", MOVING)
            row.setkey("options", SERVER_PATH, redirect.path)
    for redirect in redirects:
        if redirect.interface_uuid in rows:
            rows[redirect.interface_uuid].type = "dpdkvhostuser"
            # (in the same transaction: an agent killed before the second half leaves the mark,
            # and the next one finishes the move instead of taking the port for a re-typed one)
            rows[redirect.interface_uuid].setkey("external_ids", MOVING, redirect.path)
    switch = ovs.rows("Open_vSwitch")
    if redirects and switch and switch[0].cur_cfg > 0:  # a vswitchd has applied config: it must see this
        switch[0].increment("next_cfg")
        return True
    return False


def vhost_sock_dir(ovs: Connection, ovs_rundir: Any) -> Any:
    """Where ovs-vswitchd serves dpdkvhostuser sockets: <OVS_RUNDIR>/<other_config:vhost-sock-dir>."""
    rows = ovs.rows("Open_vSwitch")
    return sock_dir_of(ovs_rundir, rows[0].other_config if rows else {})


def sock_dir_of(ovs_rundir: Any, other_config: Mapping[str, str]) -> Any:
    """<OVS_RUNDIR>/<other_config:vhost-sock-dir> (a Path), from the Open_vSwitch row's other_config."""
    from pathlib import Path

    return Path(ovs_rundir) / other_config.get("vhost-sock-dir", "")
