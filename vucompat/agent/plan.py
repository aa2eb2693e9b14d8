"""What the agent must change so that every vhost-user Interface has its Port row,
with the right state, its relay, and the mirror in its external_ids. Pure: views of
both databases in (core.portview), a Plan out: registry actions, the relays, then
Interface actions, the order in which the agent carries them out.

Invariants:
- a Port row is created only for an Interface (name and uuid) that has none: a port
  is resolved once, whatever restarts happen;
- a new port's request is decided by the first rule that applies (core.rules:
  explicit option, the source's mode for its iface-id, the host's default policy);
- a live port's resolved mode never changes; a changed request is refused
  (change-refused) and the mode stays; a rejected port's changed request is resolved
  again (the operator fixed a typo), and a rejected port no option decided is decided
  again on every plan (the fleet answers again, tables were loaded: it was never live);
- the Interface external_ids mirror the Port row, key by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from vucompat.core import catalog
from vucompat.core.mode import CLIENT_TYPE, PORT_TYPES, PROBE_MARK, SERVER_TYPE, Mode
from vucompat.core.modeset import Host
from vucompat.core.portview import (MOVING, OPTION, Action, CreatePort, InterfaceAction, InterfaceView, Mirror,
                                    PortView, Redirect, RegistryAction, RelaySpec, RemovePort, UpdatePort)
from vucompat.core.resolve import (APPLIED, CHANGE_REFUSED, EXPLICIT, NONCONFORMANT, PASSTHROUGH, REJECTED,
                                   Resolution, parse_status, verify)
from vucompat.core.rules import DefaultPolicy, Source, decide

VHOST_TYPES = PORT_TYPES
MIRROR_MODE, MIRROR_STATE, MIRROR_ERROR = "vhost-compat-mode", "vhost-compat-state", "vhost-compat-error"
MIRROR_RELAY, MIRROR_FRONTEND = "vhost-compat-relay", "vhost-compat-frontend-socket"


@dataclass(frozen=True)
class Enforcement:
    """Where the agent's relays live. None instead of this: enforcement is off."""

    #: the relays' listening sockets: <relay_dir>/<interface>.sock
    relay_dir: Path
    #: where ovs-vswitchd serves dpdkvhostuser sockets (<OVS_RUNDIR>/<vhost-sock-dir>)
    ovs_socket_dir: Path

    def relay_path(self, name: str) -> Path:
        return self.relay_dir / f"{name}.sock"


@dataclass(frozen=True)
class Plan:
    """What one reconcile does, in this order: the registry transaction, the relays
    to serve (all of them: the relay manager starts the new and stops the gone),
    then the Interface transaction. Relays come before the Interfaces: a redirect or
    a mirror names a relay that must already listen."""

    registry: tuple[RegistryAction, ...] = ()
    #: port name -> its relay, for every port that has one once the registry is committed
    relays: Mapping[str, RelaySpec] = field(default_factory=dict)
    interfaces: tuple[InterfaceAction, ...] = ()

    @property
    def actions(self) -> list[Action]:
        """The registry actions, then the Interface ones."""
        return [*self.registry, *self.interfaces]


def plan(interfaces: Sequence[InterfaceView], ports: Mapping[str, PortView], host: Host,
         enforcement: Enforcement | None = None, moving: frozenset[str] = frozenset(),
         violations: Mapping[str, str] | None = None, sources: Mapping[str, Source] | None = None,
         default: DefaultPolicy = DefaultPolicy()) -> Plan:
    """Return the plan that brings the registry, the relays, the redirects and the
    mirrors in line with the Interfaces. `moving`: uuids of Interfaces the agent is
    moving onto their relay (their type is flipped for a moment). `violations`: port
    name -> why its relay closed a connection since the last plan (recorded on the
    port, which becomes nonconformant). `sources`: iface-id -> its mode on another
    host, for the ports to decide (see undecided()); `default`: the host's policy."""
    violations = violations or {}
    registry: list[RegistryAction] = [UpdatePort(name, {"violation": reason}) for name, reason in violations.items()
                                      if name in ports and ports[name].violation != reason]
    if registry:
        ports = {n: replace(p, violation=violations.get(n, p.violation)) for n, p in ports.items()}
    ovs_side: list[InterfaceAction] = []
    relays: dict[str, RelaySpec] = {}
    seen = set()
    sources = sources or {}
    resolutions: dict[tuple[object, ...], Resolution] = {}

    def decided(iface: InterfaceView) -> Resolution:
        source = sources.get(iface.iface_id) if iface.iface_id and iface.explicit_request is None else None
        key = (iface.explicit_request, iface.type, source, source and iface.iface_id)
        if key not in resolutions:
            resolutions[key] = decide(iface, host, source, default)
        return resolutions[key]

    for iface in interfaces:
        if iface.type not in VHOST_TYPES or iface.external_ids.get(PROBE_MARK):
            continue
        seen.add(iface.name)
        port = ports.get(iface.name)
        if port is not None and iface.uuid in moving:
            # half-way through its move onto the relay (the agent flips the type): wait, relay kept
            relay = _relay(port.name, port.interface_type, port.mode, port.state, port.relay_socket,
                           port.frontend_socket, enforcement)
            if relay is not None:
                relays[port.name] = relay
            continue
        if port is not None and port.interface_uuid == iface.uuid and iface.type == SERVER_TYPE \
                and port.interface_type == CLIENT_TYPE and iface.external_ids.get(MOVING) and port.relay_socket:
            # an agent was stopped half-way through moving this client port onto its relay
            # (its type flipped for a moment): finish the move, as that agent would have
            relay = _relay(port.name, port.interface_type, port.mode, port.state, port.relay_socket,
                           port.frontend_socket, enforcement)
            if relay is not None:
                relays[port.name] = relay
            ovs_side.append(Redirect(iface.uuid, iface.name, str(port.relay_socket), True,
                                     "the relay: finishing a move an agent stopped half-way", resume=True))
            continue
        if port is not None and (port.interface_uuid != iface.uuid or iface.type != port.interface_type):
            # deleted and re-added under the same name, or made another type of port by the
            # operator: a new port, resolved anew
            registry.append(RemovePort(port.name))
            port = None
        if port is None:
            resolution = decided(iface)
            fields = _fields(resolution.state, resolution.error, resolution.mode, iface)
            fields.update(_sockets(iface, None, resolution.state, resolution.mode, resolution.resolved, enforcement))
            registry.append(CreatePort(iface, resolution, fields))
            resolved, mode = resolution.resolved, resolution.mode
        elif port.state == REJECTED and _decide_again(port, iface) \
                and _differs(resolution := decided(iface), port):
            fields = _fields(resolution.state, resolution.error, resolution.mode, iface)
            fields.update(_sockets(iface, port, resolution.state, resolution.mode, resolution.resolved, enforcement))
            registry.append(UpdatePort(iface.name, fields, resolution))
            resolved, mode = resolution.resolved, resolution.mode
        else:
            fields = _live_fields(port, iface)
            fields.update(_sockets(iface, port, port.state, port.mode, port.resolved, enforcement))
            changed = {k: v for k, v in fields.items() if _current(port, k) != v}
            if changed:
                registry.append(UpdatePort(iface.name, changed))
            resolved, mode = port.resolved, port.mode
        # the port as the registry holds it once committed: its relay, its redirect, its mirror
        relay_socket = fields.get("relay_socket")
        relay = _relay(iface.name, iface.type, mode, str(fields["state"]), relay_socket, fields.get("frontend_socket"),
                       enforcement)
        if relay is not None:
            relays[iface.name] = relay
        if iface.type == CLIENT_TYPE and relay_socket and iface.server_path != relay_socket:
            ovs_side.append(_redirect(iface, str(relay_socket)))
        elif iface.type == CLIENT_TYPE and not relay_socket and not iface.server_path and iface.declared_frontend \
                and fields["state"] != REJECTED:
            # held, and no relay to put in front (enforcement off, passthrough): release it
            ovs_side.append(Redirect(iface.uuid, iface.name, iface.declared_frontend, True,
                                     "its frontend, held until now: no relay to put in front"))
        mirror = _mirror(iface, resolved, fields)
        if mirror is not None:
            ovs_side.append(mirror)
    registry += [RemovePort(name) for name in sorted(set(ports) - seen)]
    return Plan(tuple(registry), relays, tuple(ovs_side))


def _redirect(iface: InterfaceView, relay: str) -> Redirect:
    """The redirect of a client port to its relay: in place when OVS registers the
    path it first gets (held form) or still uses the relay (OVS 3.1 reports the socket
    of a connected port in its status); by re-creating the netdev otherwise."""
    if not iface.server_path:
        return Redirect(iface.uuid, iface.name, relay, True, "the relay, held until now")
    if iface.status.get("socket") == relay:
        return Redirect(iface.uuid, iface.name, relay, True,
                        f"the relay, in place: ovs-vswitchd still uses it (the path was set to {iface.server_path})")
    return Redirect(iface.uuid, iface.name, relay)


def undecided(interfaces: Sequence[InterfaceView], ports: Mapping[str, PortView]) -> list[InterfaceView]:
    """The vhost-user Interfaces with no option that the next plan decides by the other
    rules: those with no Port row yet, or a rejected one that no option decided. The
    shell looks up their sources (iface-id) and the default policy for them."""
    wanted = []
    for iface in interfaces:
        if iface.type not in VHOST_TYPES or iface.explicit_request is not None or iface.external_ids.get(PROBE_MARK):
            continue
        port = ports.get(iface.name)
        if port is None or port.interface_uuid != iface.uuid or (port.state == REJECTED and _decide_again(port, iface)):
            wanted.append(iface)
    return wanted


def _request_changed(port: PortView, iface: InterfaceView) -> bool:
    """Whether the Interface's option now asks for something other than what decided
    the port (naming the request the port already has is no change)."""
    return iface.explicit_request != port.explicit_request and iface.explicit_request != port.requested


def _decide_again(port: PortView, iface: InterfaceView) -> bool:
    """Whether a rejected port is decided again: its option changed, or no option
    decided it (what the other rules read may have changed)."""
    if _request_changed(port, iface):
        return True
    return port.rule is not None and port.rule != EXPLICIT and iface.explicit_request is None


def _differs(resolution: Resolution, port: PortView) -> bool:
    return (resolution.requested, resolution.resolved, resolution.state, resolution.error, resolution.rule,
            resolution.rule_detail) != (port.requested, port.resolved, port.state, port.error, port.rule,
                                        port.rule_detail)


def _sockets(iface: InterfaceView, port: PortView | None, state: str, mode: Mode | None, resolved: str | None,
             enforcement: Enforcement | None) -> dict[str, object]:
    """Where the port's relay listens and, for client ports, the frontend's own
    socket. A rejected client port is redirected too, to a relay path nobody serves:
    fail closed, it cannot run unmasked by accident."""
    previous_relay = port.relay_socket if port else None
    if enforcement is None or resolved == PASSTHROUGH or (mode is None and state != REJECTED):
        return {"relay_socket": previous_relay, "frontend_socket": port.frontend_socket if port else None}
    relay = str(enforcement.relay_path(iface.name))
    if iface.type != CLIENT_TYPE:
        return {"relay_socket": None if state == REJECTED else relay, "frontend_socket": None}
    frontend = (port.frontend_socket if port else None) or iface.declared_frontend
    if iface.server_path and iface.server_path != relay:
        frontend = iface.server_path  # the original path, or one the operator set since
    return {"relay_socket": relay, "frontend_socket": frontend}


def _relay(name: str, port_type: str, mode: Mode | None, state: str, relay_socket: object, frontend_socket: object,
           enforcement: Enforcement | None) -> RelaySpec | None:
    """The relay of a port that has a mode and a relay socket (rejected ports get
    none: nothing to connect to); a client port's relay connects to its frontend's
    socket, a server port's to the socket ovs-vswitchd serves."""
    if enforcement is None or mode is None or not relay_socket or state == REJECTED:
        return None
    if port_type == CLIENT_TYPE:
        if not frontend_socket:
            return None
        connect, backend_connects = Path(str(frontend_socket)), True
    else:
        connect, backend_connects = enforcement.ovs_socket_dir / name, False
    return RelaySpec(name, Path(str(relay_socket)), connect, backend_connects, mode.abi)


def _live_fields(port: PortView, iface: InterfaceView) -> dict[str, object]:
    if port.state == REJECTED:
        return {"state": REJECTED, "error": port.error, "negotiated_features": 0, "negotiated": {},
                "verification": None}
    state, error = APPLIED, None
    if port.violation:
        state, error = NONCONFORMANT, port.violation
    elif _request_changed(port, iface):
        state = CHANGE_REFUSED
        error = (f"options:{OPTION} changed from {port.explicit_request or 'unset'} to "
                 f"{iface.explicit_request or 'unset'} on a live port: refused, {port.resolved} stays in force; "
                 f"delete and re-add the port to change its mode")
    return _fields(state, error, port.mode, iface)


def _fields(state: str, error: str | None, mode: Mode | None, iface: InterfaceView) -> dict[str, object]:
    """The Port columns that follow from a state and what the frontend negotiated."""
    fields: dict[str, object] = {"state": state, "error": error, "negotiated_features": 0, "negotiated": {},
                                 "verification": None}
    negotiated = parse_status(iface.status)
    if negotiated is None or state == REJECTED:
        return fields
    fields["negotiated_features"] = negotiated.virtio
    fields["negotiated"] = negotiated.as_map()
    if mode is None:
        fields["verification"] = "passthrough: not verified (no mode)"
        return fields
    verdict = verify(mode, negotiated)
    fields["verification"] = verdict.describe()
    if not verdict.conformant:
        fields["state"] = NONCONFORMANT
        fields["error"] = verdict.describe() + (f"; {error}" if error and error != verdict.describe() else "")
    return fields


def _current(port: PortView, column: str) -> object:
    return {"state": port.state, "error": port.error, "negotiated_features": port.negotiated_features,
            "negotiated": dict(port.negotiated), "verification": port.verification,
            "relay_socket": port.relay_socket, "frontend_socket": port.frontend_socket}[column]


def _mirror(iface: InterfaceView, resolved: str | None, fields: Mapping[str, object]) -> Mirror | None:
    want = {MIRROR_STATE: str(fields["state"])}
    for key, value in ((MIRROR_MODE, resolved), (MIRROR_ERROR, fields.get("error")),
                       (MIRROR_RELAY, fields.get("relay_socket")), (MIRROR_FRONTEND, fields.get("frontend_socket"))):
        if value:
            want[key] = str(value)
    to_set = {k: v for k, v in want.items() if iface.external_ids.get(k) != v}
    to_delete = tuple(k for k in (MIRROR_MODE, MIRROR_ERROR, MIRROR_RELAY, MIRROR_FRONTEND)
                      if k in iface.external_ids and k not in want)
    if not to_set and not to_delete:
        return None
    return Mirror(iface.uuid, iface.name, to_set, to_delete)


def describe_negotiated(features: int) -> list[str]:
    """The negotiated virtio features by name."""
    return catalog.mask_to_names(features, "virtio")
