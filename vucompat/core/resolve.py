"""Resolving a port's compat request to one concrete mode, and verifying what a
frontend really negotiated against it. Pure: values in, values out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from vucompat.core import catalog
from vucompat.core.compare import runnable
from vucompat.core.errors import UnknownModeError
from vucompat.core.mode import Mode, recommended
from vucompat.core.modeset import Host

LATEST, RECOMMENDED, PASSTHROUGH = "latest", "recommended", "passthrough"

APPLIED, REJECTED, NONCONFORMANT, CHANGE_REFUSED = "applied", "rejected", "nonconformant", "change-refused"

#: the rules that decide a port's request (core.rules): options:vhost-compat; the mode
#: its iface-id has on the source of a migration; the host's default policy
EXPLICIT, FOLLOWS_SOURCE, HOST_DEFAULT = "explicit", "follows-source", "host-default"


@dataclass(frozen=True)
class Resolution:
    """What a request resolved to on a host."""

    #: what was asked ("latest" when nothing was)
    requested: str
    #: the concrete mode; None for passthrough and for a rejection
    mode: Mode | None
    #: applied | rejected
    state: str
    #: why it was rejected (None when applied)
    error: str | None = None
    #: which rule decided the request (explicit, follows-source, host-default)
    rule: str = EXPLICIT
    #: what that rule read: the policy, or where the source's mode was found
    rule_detail: str | None = None

    @property
    def resolved(self) -> str | None:
        """The resolved name: a mode name, 'passthrough', or None when rejected."""
        if self.state == REJECTED:
            return None
        return self.mode.name if self.mode else PASSTHROUGH


def resolve(requested: str | None, host: Host, port_type: str | None = None) -> Resolution:
    """Resolve a port's request on `host`, for a port of `port_type` (None: any type).

    None or "" means `latest`: the newest mode the host can run. `recommended` is
    latest without deprecated features (<mode>+recommended). `passthrough` applies
    no mode. A mode name must be defined on the host and runnable there, on that
    port type (from OVS 3.2 the types offer different masks); otherwise the request
    is rejected, naming the modes the host can run, or the features it lacks.
    """
    request = (requested or "").strip() or LATEST
    caps = host.capabilities.offer(port_type) if host.capabilities else None
    on_type = f" {port_type} ports" if port_type and host.capabilities and host.capabilities.types_differ else ""
    if request == PASSTHROUGH:
        return Resolution(request, None, APPLIED)
    if request in (LATEST, RECOMMENDED):
        newest = next((m for m in host.modeset.newest_first if runnable(m.abi, caps).runnable), None)
        if newest is None:
            return Resolution(request, None, REJECTED, f"no mode of this host is runnable on its backend "
                              f"({len(host.modeset.modes)} defined): load tables, or check its capabilities")
        return Resolution(request, recommended(newest) if request == RECOMMENDED else newest, APPLIED)
    try:
        mode = host.modeset.expand(request)
    except UnknownModeError:
        can_run = [m.name for m in host.modeset.newest_first if runnable(m.abi, caps).runnable]
        listed = ", ".join(can_run[:8]) + (f" and {len(can_run) - 8} more" if len(can_run) > 8 else "")
        return Resolution(request, None, REJECTED, f"unknown mode {request}; this host can run: "
                          f"{listed or 'none'} (or latest, recommended, passthrough)")
    verdict = runnable(mode.abi, caps)
    if not verdict.runnable:
        where = f"this host's{on_type}: they lack" if on_type else "this host: its backend lacks"
        return Resolution(request, None, REJECTED, f"{mode.name} is not runnable on {where} {verdict.describe()}")
    return Resolution(request, mode, APPLIED)


@dataclass(frozen=True)
class Negotiated:
    """What ovs-vswitchd reports a frontend negotiated (Interface status)."""

    #: the negotiated virtio feature mask
    virtio: int
    #: number of vrings (2 per queue pair), when reported
    num_of_vrings: int | None
    #: vring index -> size
    ring_sizes: Mapping[int, int]

    @property
    def queue_pairs(self) -> int | None:
        return None if self.num_of_vrings is None else (self.num_of_vrings + 1) // 2

    def as_map(self) -> dict[str, str]:
        out = {"features": catalog.to_hex(self.virtio)}
        if self.num_of_vrings is not None:
            out["num_of_vrings"] = str(self.num_of_vrings)
        out.update({f"vring_{i}_size": str(size) for i, size in sorted(self.ring_sizes.items())})
        return out


_VRING = re.compile(r"vring_(\d+)_size$")


def parse_status(status: Mapping[str, str]) -> Negotiated | None:
    """Read the negotiated features out of an Interface `status` map; None when the
    frontend has not connected (no `features` key, or a zero mask)."""
    try:
        virtio = catalog.parse_hex(status.get("features", ""))
    except ValueError:
        return None
    if not virtio:
        return None
    rings = {int(m.group(1)): int(v) for k, v in status.items() if (m := _VRING.match(k)) and v.isdigit()}
    vrings = status.get("num_of_vrings", "")
    return Negotiated(virtio, int(vrings) if vrings.isdigit() else None, rings)


@dataclass(frozen=True)
class Excess:
    """A feature or limit a frontend negotiated beyond the port's mode."""

    #: virtio_feature | limit
    kind: str
    name: str
    #: what the mode allows (False for a feature it lacks)
    allowed: bool | int
    #: what was negotiated
    negotiated: bool | int

    def describe(self) -> str:
        if self.kind == "limit":
            return f"{self.name} {self.negotiated} (mode allows {self.allowed})"
        return self.name

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "allowed": self.allowed, "negotiated": self.negotiated}


@dataclass(frozen=True)
class Verification:
    """Whether what was negotiated stays within the port's mode."""

    offending: tuple[Excess, ...] = ()

    @property
    def conformant(self) -> bool:
        return not self.offending

    def describe(self) -> str:
        if self.conformant:
            return "conformant: the negotiated features and limits are within the mode"
        return "NONCONFORMANT: negotiated beyond the mode: " + ", ".join(e.describe() for e in self.offending)

    def as_dict(self) -> dict[str, Any]:
        return {"conformant": self.conformant, "offending": [e.as_dict() for e in self.offending]}


def verify(mode: Mode, negotiated: Negotiated) -> Verification:
    """Compare what was negotiated with `mode`: features beyond it (never
    VHOST_F_LOG_ALL, which a frontend sets during a live migration), more queue
    pairs, or larger rings (even vrings are RX, odd are TX) are offending."""
    extra = negotiated.virtio & ~mode.abi.virtio & ~catalog.NON_ABI_VIRTIO_MASK
    excess = [Excess("virtio_feature", name, False, True) for name in catalog.mask_to_names(extra, "virtio")]
    pairs = negotiated.queue_pairs
    if pairs is not None and pairs > mode.abi.max_queue_pairs:
        excess.append(Excess("limit", "max_queue_pairs", mode.abi.max_queue_pairs, pairs))
    for index, size in sorted(negotiated.ring_sizes.items()):
        limit_name = "max_rx_queue_size" if index % 2 == 0 else "max_tx_queue_size"
        if size > mode.abi.limit(limit_name):
            excess.append(Excess("limit", f"{limit_name} (vring {index})", mode.abi.limit(limit_name), size))
    return Verification(tuple(excess))

