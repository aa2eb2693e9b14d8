"""The port view: what the core needs of a vhost-user Interface (Open_vSwitch
database) and of its Port row (the registry), the changes the agent's plan makes to
them, and the description of a port's masking relay. Values only: the shells read
rows into these (ovsdb.ports), write these back (ovsdb.ports), and run relays from
them (vhostuser.relay); the core decides with them (migration, fleet, agent.plan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from vucompat.core.mode import CLIENT_TYPE, Abi, Mode
from vucompat.core.resolve import EXPLICIT, LATEST, Resolution

#: the Interface option that holds a port's request (options:vhost-compat)
OPTION = "vhost-compat"
#: the Interface option where a dpdkvhostuserclient port connects
SERVER_PATH = "vhost-server-path"
#: the Interface external_ids key of the port's Neutron port (written by os-vif)
IFACE_ID = "iface-id"
#: the Interface external_ids key of the held plug form: a dpdkvhostuserclient port
#: created without vhost-server-path names its frontend's socket here; the agent sets
#: the path (to the relay) once it has decided, so OVS first connects through the relay
FRONTEND_PATH = "vhost-compat-frontend-path"
#: external_ids key the agent sets with the first half of a move onto the relay (the type
#: flipped to dpdkvhostuser) and removes with the second: a port found with it is a move
#: an agent did not finish (it was killed in between), not a port an operator re-typed
MOVING = "vhost-compat-moving"


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
    #: options:vhost-server-path (dpdkvhostuserclient)
    server_path: str | None = None

    @property
    def explicit_request(self) -> str | None:
        """options:vhost-compat, stripped; None when unset or blank."""
        return (self.request or "").strip() or None

    @property
    def iface_id(self) -> str | None:
        """external_ids:iface-id (the Neutron port), or None."""
        return self.external_ids.get(IFACE_ID) or None

    @property
    def declared_frontend(self) -> str | None:
        """external_ids:vhost-compat-frontend-path: the frontend's socket of a port
        plugged in the held form (created without vhost-server-path), or None."""
        return self.external_ids.get(FRONTEND_PATH) or None


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
    #: client ports under a relay: the frontend's own socket (the original vhost-server-path)
    frontend_socket: str | None = None
    #: where the port's relay listens
    relay_socket: str | None = None
    #: why the relay closed a connection (the frontend asked beyond the mode)
    violation: str | None = None
    #: the Interface type when the port was resolved
    interface_type: str = CLIENT_TYPE
    #: which rule decided the request: explicit | host-default | follows-source (None: before schema 1.4)
    rule: str | None = None
    #: what the rule read: the policy, or where the source's mode was found
    rule_detail: str | None = None
    #: the Interface's external_ids:iface-id when the port was resolved
    iface_id: str | None = None

    @property
    def explicit_request(self) -> str | None:
        """What options:vhost-compat asked when the port was decided (None when another
        rule decided). Rows from before rules were recorded count "latest" as unset."""
        if self.rule is None:
            return None if self.requested == LATEST else self.requested
        return self.requested if self.rule == EXPLICIT else None


@dataclass(frozen=True)
class RelaySpec:
    """One port's masking relay: where it listens, where it connects, what it enforces."""

    name: str
    #: where the relay listens
    listen: Path
    #: where the relay connects for each accepted connection
    connect: Path
    #: True when the side that connects to `listen` is OVS (dpdkvhostuserclient ports)
    backend_connects: bool
    #: the mode's ABI to enforce
    abi: Abi


# -- the changes a plan makes: registry Port rows ------------------------------------------
@dataclass(frozen=True)
class CreatePort:
    """A Port row for an Interface that has none."""

    interface: InterfaceView
    resolution: Resolution
    #: state, error and what was verified (the frontend may already be connected)
    fields: Mapping[str, object]


@dataclass(frozen=True)
class RemovePort:
    """The Port row of an Interface that is gone (or was re-added, or changed type)."""

    name: str


@dataclass(frozen=True)
class UpdatePort:
    """Columns of an existing Port row."""

    name: str
    #: Port columns -> new values (state, error, negotiated_features, negotiated, verification;
    #: for a re-resolved rejected port also requested, resolved and mode)
    changes: Mapping[str, object]
    #: set when the port was rejected and is resolved again
    resolution: Resolution | None = None


# -- ... and Interfaces of the Open_vSwitch database ---------------------------------------
@dataclass(frozen=True)
class Mirror:
    """external_ids keys to set and to delete on one Interface."""

    interface_uuid: str
    interface: str
    set: Mapping[str, str]
    delete: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redirect:
    """Point a dpdkvhostuserclient Interface's options:vhost-server-path at the relay
    (or, held and with no relay to put in front, at its declared frontend)."""

    interface_uuid: str
    interface: str
    path: str
    #: setting the path is enough: the port has none yet (the held form: OVS registers the
    #: path it first gets), or ovs-vswitchd is still connected through the relay (a
    #: re-plug rewrote only the path, which OVS ignores while registered). Otherwise OVS
    #: must re-create the netdev (type flip)
    in_place: bool = False
    #: for the log: where the path points and why
    why: str = "the relay"
    #: the second half of a move another agent started (type back to dpdkvhostuserclient, with the path)
    resume: bool = False


RegistryAction = CreatePort | RemovePort | UpdatePort
InterfaceAction = Mirror | Redirect
Action = RegistryAction | InterfaceAction
