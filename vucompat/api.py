"""The Python API for Nova and other orchestrators: names in, verdicts and reasons
out. Nothing here needs the caller to understand a key of a mode.

    from vucompat.api import Client, Scope
    with Client(timeout=5.0) as client:
        verdict = client.check_migration("vhu0", source="tcp:192.0.2.10:6640", destination="tcp:192.0.2.11:6640")
        if not verdict.allowed:
            raise MigrationPreCheckError(verdict.sentence)

Hosts are named by the OVSDB remote of their registry (unix:, tcp:, ssl:). A Client
keeps one monitored connection per host and reuses it; the values it returns are
immutable. A Client is thread-safe: each host connection is used under its own
lock (the ovs IDL itself is not thread-safe). Errors: vucompat.errors.VucompatError
subclasses (OvsdbError when a host cannot be reached within `timeout`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

from vucompat.core.compare import Gap, runnable
from vucompat.core.contracts import stamp
from vucompat.core.errors import UsageError, VucompatError
from vucompat.core.migration import Scope, Selection, Verdict, check_migration as _check, select_mode as _select
from vucompat.core.negotiate import Negotiation, negotiate as _negotiate
from vucompat.ovsdb.ports import read_ports
from vucompat.ovsdb.fleet_rows import now_ms
from vucompat.ovsdb.registry import RemoteHost, delete_incoming, write_default_policy, write_incoming
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT
from vucompat.ovsdb.tls import SslOptions
from vucompat.core.modeset import Host
from vucompat.core.portview import PortView
from vucompat.core.resolve import PASSTHROUGH, REJECTED
from vucompat.core.rules import SourceMode, check_policy, follow

#: what an orchestrator imports: the client, its values, and the one error class every failure derives from
__all__ = ["Client", "ModeStatus", "Scope", "Selection", "Verdict", "Negotiation", "SourceMode", "SslOptions",
           "VucompatError"]


@dataclass(frozen=True)
class ModeStatus:
    """One mode of a host, and whether its backend can run it."""

    name: str
    released: str | None
    digest: str
    runnable: bool
    unavailable: tuple[Gap, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (contract vucompat.mode-status, docs/cli.md)."""
        return stamp("vucompat.mode-status", {"name": self.name, "released": self.released, "digest": self.digest,
                                              "runnable": self.runnable,
                                              "unavailable": [g.as_dict() for g in self.unavailable]})


class Client:
    """Connections to hosts' registries, reused across calls; thread-safe."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None) -> None:
        self.timeout = timeout
        self.ssl = ssl
        self._hosts: dict[str, tuple[threading.Lock, RemoteHost]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for lock, remote in self._hosts.values():
                with lock:
                    remote.close()
            self._hosts.clear()

    def _remote(self, remote: str) -> tuple[threading.Lock, RemoteHost]:
        with self._lock:
            if remote not in self._hosts:
                self._hosts[remote] = (threading.Lock(), RemoteHost(remote, self.timeout, self.ssl))
            return self._hosts[remote]

    def host(self, remote: str) -> Host:
        """The host as its registry shows it now (modes and capabilities)."""
        lock, connection = self._remote(remote)
        with lock:
            return connection.host()

    def port(self, remote: str, interface: str) -> PortView:
        """A port as the host's agent recorded it. Raises UsageError when unknown."""
        lock, connection = self._remote(remote)
        with lock:
            connection.connection.refresh()
            ports = read_ports(connection.connection)
        if interface not in ports:
            raise UsageError(message=f"no port {interface} in the registry at {remote} (is the agent running?)")
        return ports[interface]

    def port_of(self, remote: str, iface_id: str) -> PortView:
        """The port of Neutron port `iface_id` (external_ids:iface-id) on a host.
        Raises UsageError when the host has none."""
        lock, connection = self._remote(remote)
        with lock:
            connection.connection.refresh()
            ports = [p for p in read_ports(connection.connection).values() if p.iface_id == iface_id]
        if not ports:
            raise UsageError(message=f"no port of iface-id {iface_id} in the registry at {remote}")
        return ports[0]

    def expect_port(self, iface_id: str, source: str, destination: str) -> SourceMode:
        """Tell `destination` that the port of Neutron port `iface_id`, live on
        `source`, will be plugged there (a live migration): its agent gives that port
        the source port's mode, whatever plugs it. Returns what was recorded. Raises
        UsageError, recording nothing, when the source has no live port of that
        iface-id or the destination cannot run its mode (the same check the agent makes)."""
        port = self.port_of(source, iface_id)
        if port.state == REJECTED:
            raise UsageError(message=f"{port.name} (iface-id {iface_id}) was rejected on {source}: it has no mode")
        found = SourceMode(port.resolved or PASSTHROUGH, port.mode.digest if port.mode else None,
                           f"host {self.host(source).name} ({source})")
        resolution = follow(iface_id, port.interface_type, self.host(destination), found)
        if resolution.state == REJECTED:
            raise UsageError(message=f"{destination}: {resolution.error}")
        write_incoming(destination, iface_id, found.mode, found.digest, found.where, now_ms(), self.timeout, self.ssl)
        return found

    def cancel_expected_port(self, iface_id: str, destination: str) -> bool:
        """Forget what expect_port() recorded on `destination` for `iface_id` (an
        aborted migration); return whether there was something."""
        return delete_incoming(destination, iface_id, self.timeout, self.ssl) > 0

    def set_default_policy(self, remote: str, policy: str) -> None:
        """Set the host's default policy: the request of a port plugged with no option
        whose iface-id has no mode elsewhere. Raises UsageError, changing nothing,
        when the host could not follow it."""
        problem = check_policy(policy, self.host(remote))
        if problem is not None:
            raise UsageError(message=f"default policy {policy!r} refused: {problem}")
        write_default_policy(remote, policy.strip(), self.timeout, self.ssl)

    def modes(self, remote: str) -> list[ModeStatus]:
        """Every mode of the host, newest first, with what its backend lacks to run it."""
        host = self.host(remote)
        caps = host.capabilities.abi if host.capabilities else None
        out = []
        for mode in host.modeset.newest_first:
            verdict = runnable(mode.abi, caps)
            out.append(ModeStatus(mode.name, mode.released.isoformat() if mode.released else None, mode.digest,
                                  verdict.runnable, verdict.unavailable))
        return out

    def negotiate(self, source: str, destination: str, policy: str = "latest") -> Negotiation:
        """The newest mode both hosts define with the same digest and can run."""
        return _negotiate(self.host(source), self.host(destination), policy)

    def check_migration(self, port: str, source: str, destination: str, allow_outside_contract: bool = False,
                        dest_port_type: str | None = None) -> Verdict:
        """May the port `port` (an Interface name on `source`) move to `destination`,
        into a port of `dest_port_type` there (default: the same type)?"""
        return _check(self.port(source, port), self.host(source), self.host(destination), allow_outside_contract,
                      dest_port_type)

    def select_mode(self, scope: Scope | str, hosts: Sequence[str]) -> Selection:
        """The mode a new port should get so it can move among `hosts` (scope
        everywhere or hosts), within a lineage (scope lineage=NAME), or none."""
        if isinstance(scope, str):
            try:
                scope = Scope.parse(scope)
            except ValueError as err:
                raise UsageError(message=str(err)) from None
        return _select(scope, [self.host(remote) for remote in hosts])
