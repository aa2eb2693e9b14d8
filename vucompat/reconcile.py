"""What the agent must change so that every vhost-user Interface has its Port row,
with the right state, and the mirror in its external_ids. Pure: snapshots of both
databases in, a list of actions out.

Invariants:
- a Port row is created only for an Interface (name and uuid) that has none: a port
  is resolved once, whatever restarts happen;
- a live port's resolved mode never changes; a changed request is refused
  (change-refused) and the mode stays; a rejected port's changed request is resolved
  again (the operator fixed a typo);
- the Interface external_ids mirror the Port row, key by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from . import catalog
from .mode import Mode
from .registry import Host
from .resolve import (APPLIED, CHANGE_REFUSED, LATEST, NONCONFORMANT, REJECTED, Resolution, parse_status,
                      resolve, verify)

VHOST_TYPES = ("dpdkvhostuser", "dpdkvhostuserclient")
OPTION = "vhost-compat"
MIRROR_MODE, MIRROR_STATE, MIRROR_ERROR = "vhost-compat-mode", "vhost-compat-state", "vhost-compat-error"


@dataclass(frozen=True)
class InterfaceView:
    """A vhost-user Interface as the agent needs it."""

    uuid: str
    name: str
    type: str
    #: options:vhost-compat, or None when unset
    request: str | None
    external_ids: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, str] = field(default_factory=dict)

    @property
    def normalized_request(self) -> str:
        return (self.request or "").strip() or LATEST


@dataclass(frozen=True)
class PortView:
    """A registry Port row."""

    name: str
    interface_uuid: str
    requested: str
    resolved: str | None
    state: str
    error: str | None
    #: the port's mode (None for passthrough and rejected ports)
    mode: Mode | None
    negotiated_features: int = 0
    negotiated: Mapping[str, str] = field(default_factory=dict)
    verification: str | None = None


@dataclass(frozen=True)
class CreatePort:
    interface: InterfaceView
    resolution: Resolution
    #: state, error and what was verified (the frontend may already be connected)
    fields: Mapping[str, object]


@dataclass(frozen=True)
class RemovePort:
    name: str


@dataclass(frozen=True)
class UpdatePort:
    name: str
    #: Port columns -> new values (state, error, negotiated_features, negotiated, verification;
    #: for a re-resolved rejected port also requested, resolved and mode)
    changes: Mapping[str, object]
    #: set when the port was rejected and is resolved again
    resolution: Resolution | None = None


@dataclass(frozen=True)
class Mirror:
    """external_ids keys to set and to delete on one Interface."""

    interface_uuid: str
    interface: str
    set: Mapping[str, str]
    delete: tuple[str, ...] = ()


Action = CreatePort | RemovePort | UpdatePort | Mirror


def plan(interfaces: Sequence[InterfaceView], ports: Mapping[str, PortView], host: Host) -> list[Action]:
    """Return the actions that bring the registry and the mirrors in line with the
    Interfaces. Registry actions come first, mirrors last."""
    registry: list[Action] = []
    mirrors: list[Action] = []
    seen = set()
    latest_cache: dict[str | None, Resolution] = {}

    def resolved_for(request: str | None) -> Resolution:
        key = (request or "").strip() or LATEST
        if key not in latest_cache:
            latest_cache[key] = resolve(key, host)
        return latest_cache[key]

    for iface in interfaces:
        if iface.type not in VHOST_TYPES:
            continue
        seen.add(iface.name)
        port = ports.get(iface.name)
        if port is not None and port.interface_uuid != iface.uuid:
            registry.append(RemovePort(port.name))  # deleted and re-added under the same name
            port = None
        if port is None:
            resolution = resolved_for(iface.request)
            fields = _fields(resolution.state, resolution.error, resolution.mode, iface)
            registry.append(CreatePort(iface, resolution, fields))
            target = (resolution.resolved, fields["state"], fields["error"])
        elif port.state == REJECTED and iface.normalized_request != port.requested:
            resolution = resolved_for(iface.request)
            fields = _fields(resolution.state, resolution.error, resolution.mode, iface)
            registry.append(UpdatePort(iface.name, fields, resolution))
            target = (resolution.resolved, fields["state"], fields["error"])
        else:
            fields = _live_fields(port, iface)
            changed = {k: v for k, v in fields.items() if _current(port, k) != v}
            if changed:
                registry.append(UpdatePort(iface.name, changed))
            target = (port.resolved, fields["state"], fields["error"])
        mirror = _mirror(iface, *target)
        if mirror is not None:
            mirrors.append(mirror)
    registry += [RemovePort(name) for name in sorted(set(ports) - seen)]
    return registry + mirrors


def _live_fields(port: PortView, iface: InterfaceView) -> dict[str, object]:
    if port.state == REJECTED:
        return {"state": REJECTED, "error": port.error, "negotiated_features": 0, "negotiated": {},
                "verification": None}
    state, error = APPLIED, None
    if iface.normalized_request != port.requested:
        state = CHANGE_REFUSED
        error = (f"options:{OPTION} changed from {port.requested} to {iface.normalized_request} on a live "
                 f"port: refused, {port.resolved} stays in force; delete and re-add the port to change its mode")
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
        fields["error"] = verdict.describe() + (f"; {error}" if error else "")
    return fields


def _current(port: PortView, column: str) -> object:
    return {"state": port.state, "error": port.error, "negotiated_features": port.negotiated_features,
            "negotiated": dict(port.negotiated), "verification": port.verification}[column]


def _mirror(iface: InterfaceView, resolved: str | None, state: object, error: object) -> Mirror | None:
    want = {MIRROR_STATE: str(state)}
    if resolved:
        want[MIRROR_MODE] = resolved
    if error:
        want[MIRROR_ERROR] = str(error)
    to_set = {k: v for k, v in want.items() if iface.external_ids.get(k) != v}
    to_delete = tuple(k for k in (MIRROR_MODE, MIRROR_ERROR) if k in iface.external_ids and k not in want)
    if not to_set and not to_delete:
        return None
    return Mirror(iface.uuid, iface.name, to_set, to_delete)


def describe_negotiated(features: int) -> list[str]:
    """The negotiated virtio features by name."""
    return catalog.mask_to_names(features, "virtio")
