"""The fleet: what every host publishes about its registry, and the questions a
scheduler asks of all hosts at once. Pure: records and fleet hosts in, answers out
(ovsdb.fleet_rows turns a record into OVSDB operations; ovsdb.fleet_publish writes them,
ovsdb.fleet_read reads the fleet).

One fleet row means what the same row means in a host's own registry: a
Compat_Mode row is the same mode (the fleet keeps one row per name and digest,
shared by every host that defines it), a Host row holds the same capabilities plus
what the fleet needs (pool, modes, runnable, last_seen), and a Port row is the
same port with the name of its host.

Staleness: a host publishes `last_seen` (ms since the epoch) at least every
`heartbeat_interval` seconds; it is stale when `STALE_FACTOR` intervals passed
without one. Stale hosts are marked in every answer and left out of placement
answers, never deleted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from vucompat.core import catalog
from vucompat.core.compare import runnable
from vucompat.core.contracts import stamp
from vucompat.core.migration import Scope, Selection, Verdict, check_migration, select_mode
from vucompat.core.mode import Mode
from vucompat.core.modeset import Host
from vucompat.core.portview import PortView

#: a host is stale after this many heartbeat intervals without publishing
STALE_FACTOR = 3
DEFAULT_HEARTBEAT = 60
#: a pool running more distinct modes than this is flagged by the report
DEFAULT_MAX_ACTIVE = 3


@dataclass(frozen=True)
class HostRecord:
    """What one host publishes: its identity, versions, capabilities, modes and ports."""

    host: Host
    ports: Mapping[str, PortView] = field(default_factory=dict)
    pool: str | None = None
    ovs_version: str | None = None
    dpdk_version: str | None = None
    default_policy: str = "latest"
    #: none | declared | probed, as in the host's own Host row
    capabilities_source: str = "none"
    heartbeat_interval: int = DEFAULT_HEARTBEAT
    agent_version: str | None = None

    @property
    def name(self) -> str:
        return self.host.name

    def as_dict(self) -> dict[str, Any]:
        """What the host publishes, as JSON-ready data by name (contract
        vucompat.host-record, docs/fleet.md): the Host row's fields, its modes newest
        first with what its backend lacks to run each, its ports by interface name."""
        caps = self.host.capabilities
        offer = caps.abi if caps else None
        modes = []
        for mode in self.host.modeset.newest_first:
            verdict = runnable(mode.abi, offer)
            modes.append({"name": mode.name, "released": mode.released.isoformat() if mode.released else None,
                          "digest": mode.digest, "runnable": verdict.runnable,
                          "unavailable": [g.as_dict() for g in verdict.unavailable]})
        ports = [{"interface": p.name, "interface_type": p.interface_type, "requested": p.requested,
                  "resolved": p.resolved, "digest": p.mode.digest if p.mode else None, "state": p.state,
                  "error": p.error, "negotiated_features": catalog.mask_to_names(p.negotiated_features, "virtio"),
                  "verification": p.verification, "violation": p.violation}
                 for _, p in sorted(self.ports.items())]
        return stamp("vucompat.host-record", {
            "name": self.name, "pool": self.pool, "ovs_version": self.ovs_version, "dpdk_version": self.dpdk_version,
            "default_policy": self.default_policy, "capabilities_source": self.capabilities_source if caps else "none",
            "heartbeat_interval": self.heartbeat_interval, "agent_version": self.agent_version,
            "capabilities": None if caps is None else {
                **caps.abi.abi_dict(), "by_type": {t: a.abi_dict() for t, a in sorted(caps.by_type.items())}},
            "modes": modes, "ports": ports})


def needed_modes(record: HostRecord) -> dict[tuple[str, str], Mode]:
    """Every mode the host's rows refer to: its own, and its ports' (which may be
    derived, e.g. <mode>+recommended)."""
    modes = {(m.name, m.digest): m for m in record.host.modeset.modes.values()}
    for port in record.ports.values():
        if port.mode is not None:
            modes.setdefault((port.mode.name, port.mode.digest), port.mode)
    return modes


def unavailable_features(record: HostRecord) -> dict[str, str]:
    """Mode name -> what the host's backend lacks to run it (space-separated), for
    the modes it cannot run."""
    caps = record.host.capabilities.abi if record.host.capabilities else None
    out = {}
    for mode in record.host.modeset.modes.values():
        verdict = runnable(mode.abi, caps)
        if not verdict.runnable:
            out[mode.name] = " ".join(gap.name for gap in verdict.unavailable)
    return out


@dataclass(frozen=True)
class FleetHost:
    """A host as the fleet database shows it."""

    host: Host
    pool: str | None
    ovs_version: str | None
    dpdk_version: str | None
    last_seen: int
    heartbeat_interval: int
    #: names of the modes it can run; the others -> what its backend lacks
    runnable: frozenset[str]
    unavailable: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.host.name

    def stale(self, now_ms: int) -> bool:
        """No publish for STALE_FACTOR heartbeat intervals."""
        return now_ms - self.last_seen > STALE_FACTOR * self.heartbeat_interval * 1000

    def summary(self) -> HostSummary:
        """What a whole-fleet listing shows of it."""
        return HostSummary(self.name, self.pool, self.ovs_version, self.dpdk_version, self.last_seen,
                           self.heartbeat_interval, len(self.host.modeset.modes), len(self.runnable))


@dataclass(frozen=True)
class HostSummary:
    """A host as `vucompat fleet hosts` lists it: who, where, how fresh, how many
    modes it defines and can run (counts as the host published them)."""

    name: str
    pool: str | None
    ovs_version: str | None
    dpdk_version: str | None
    last_seen: int
    heartbeat_interval: int
    modes: int
    runnable: int

    def stale(self, now_ms: int) -> bool:
        """No publish for STALE_FACTOR heartbeat intervals."""
        return now_ms - self.last_seen > STALE_FACTOR * self.heartbeat_interval * 1000

    def as_dict(self, now_ms: int) -> dict[str, Any]:
        """One host of contract vucompat.fleet-hosts."""
        return {"name": self.name, "pool": self.pool, "ovs_version": self.ovs_version,
                "dpdk_version": self.dpdk_version, "stale": self.stale(now_ms),
                "seconds_since_publish": round((now_ms - self.last_seen) / 1000, 1),
                "modes": self.modes, "runnable": self.runnable}


@dataclass(frozen=True)
class CanRun:
    """The answer of hosts_that_can_run()."""

    mode: str
    #: digest -> names of the fresh hosts that define the mode with it and can run it
    hosts: Mapping[str, tuple[str, ...]]
    #: hosts that define the mode but cannot run it: name -> what they lack
    lacking: Mapping[str, str]
    #: hosts left out because they are stale
    stale: tuple[str, ...]

    @property
    def all_hosts(self) -> list[str]:
        return sorted(h for names in self.hosts.values() for h in names)

    def sentence(self) -> str:
        count = sum(len(v) for v in self.hosts.values())
        text = f"{count} host(s) can run {self.mode}"
        if len(self.hosts) > 1:
            text += f" -- WARNING: the name has {len(self.hosts)} different digests in the fleet; " \
                    "ask by digest (NAME@sha256:...) before placing"
        if self.stale:
            text += f"; {len(self.stale)} stale host(s) left out"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "sentence": self.sentence(), "hosts": self.all_hosts,
                "by_digest": {d: list(h) for d, h in self.hosts.items()}, "lacking": dict(self.lacking),
                "stale": list(self.stale)}


def hosts_that_can_run(hosts: Iterable[FleetHost], mode: str, now_ms: int, include_stale: bool = False,
                       pool: str | None = None) -> CanRun:
    """Which hosts define `mode` ("NAME" or "NAME@sha256:...") and can run it."""
    name, _, digest = mode.partition("@")
    by_digest: dict[str, list[str]] = {}
    lacking: dict[str, str] = {}
    stale: list[str] = []
    for host in hosts:
        theirs = host.host.modeset.modes.get(name)
        if theirs is None or (digest and theirs.digest != digest) or (pool and host.pool != pool):
            continue
        if host.stale(now_ms) and not include_stale:
            stale.append(host.name)
        elif name in host.runnable:
            by_digest.setdefault(theirs.digest, []).append(host.name)
        else:
            lacking[host.name] = host.unavailable.get(name, "")
    return CanRun(mode, {d: tuple(sorted(h)) for d, h in by_digest.items()}, dict(sorted(lacking.items())),
                  tuple(sorted(stale)))


def select_fleet_mode(scope: Scope, hosts: Sequence[FleetHost], names: Sequence[str] = ()) -> Selection:
    """select_mode over the fleet: for scope hosts, the named hosts; for everywhere,
    every host given (the caller leaves out stale ones); for lineage=L, those of them
    that run the platform L (define a mode of it). Raises ValueError for an unknown
    host name, or when no host runs the lineage."""
    chosen = list(hosts)
    if scope.kind == "lineage":
        chosen = [h for h in hosts if any(m.lineage == scope.lineage for m in h.host.modeset.modes.values())]
        if not chosen:
            raise ValueError(f"no host in the fleet defines a mode of lineage {scope.lineage}")
    if scope.kind == "hosts":
        by_name = {h.name: h for h in hosts}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"no host {', '.join(unknown)} in the fleet database")
        chosen = [by_name[n] for n in names]
    return select_mode(scope, [h.host for h in chosen])


def check_fleet_migration(port: PortView, source: FleetHost, destination: FleetHost,
                          allow_outside_contract: bool = False, dest_port_type: str | None = None) -> Verdict:
    """check_migration from the fleet's copies of both hosts (the same verdict the
    per-host API gives; the fleet records each host's offer common to both port types)."""
    return check_migration(port, source.host, destination.host, allow_outside_contract, dest_port_type)


@dataclass(frozen=True)
class PoolReport:
    """The modes active (in use by ports) in one pool."""

    pool: str
    hosts: int
    #: "name@digest-prefix" -> number of ports
    active: Mapping[str, int]
    #: names that appear with more than one digest
    ambiguous: tuple[str, ...]
    max_active: int

    @property
    def at_risk(self) -> bool:
        return len(self.active) > self.max_active or bool(self.ambiguous)

    def as_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "hosts": self.hosts, "active_modes": len(self.active), "ports": dict(self.active),
                "ambiguous_names": list(self.ambiguous), "at_risk": self.at_risk,
                "why": self.why()}

    def why(self) -> str:
        reasons = []
        if len(self.active) > self.max_active:
            reasons.append(f"{len(self.active)} active modes (more than {self.max_active}): every extra mode "
                           "narrows where its ports can move and what hosts can be upgraded")
        if self.ambiguous:
            reasons.append(f"same name, different meaning: {', '.join(self.ambiguous)}")
        return "; ".join(reasons)


def active_modes_report(pools: Mapping[str, str | None], port_modes: Iterable[tuple[str, Mode | None]],
                        max_active: int = DEFAULT_MAX_ACTIVE) -> list[PoolReport]:
    """Per pool (hosts without one: "(none)"), the modes its ports use, flagged when
    there are more than `max_active` or one name has several digests. `pools`: host
    name -> pool; `port_modes`: (host name, the port's mode) for each port."""
    pool_of = {host: pool or "(none)" for host, pool in pools.items()}
    counts: dict[str, Counter[tuple[str, str]]] = {pool: Counter() for pool in pool_of.values()}
    for host, mode in port_modes:
        if mode is not None and host in pool_of:
            counts[pool_of[host]][(mode.name, mode.digest)] += 1
    reports = []
    for pool in sorted(counts):
        active = counts[pool]
        names = Counter(name for name, _ in active)
        reports.append(PoolReport(
            pool, sum(1 for p in pool_of.values() if p == pool),
            {f"{name}@{digest[:19]}": n for (name, digest), n in sorted(active.items())},
            tuple(sorted(n for n, c in names.items() if c > 1)), max_active))
    return reports
