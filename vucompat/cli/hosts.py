"""Hosts: a directory of table files plus an optional capabilities.toml (offline),
or the OVSDB remote of a host's registry database. Both give the same registry.Host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING, Iterable, Mapping

from vucompat.core.errors import UsageError
from vucompat.core.mode import Abi
from vucompat.core.modeset import Host
from vucompat.core.tables import CAPABILITIES_FILE, load_modeset, read_capabilities, table_files

if TYPE_CHECKING:
    from vucompat.core.fleet import FleetHost
    from vucompat.ovsdb.tls import SslOptions

REMOTE_PREFIXES = ("unix:", "tcp:", "ssl:")


def open_host(spec: str, timeout: float = 5.0, ssl: "SslOptions | None" = None) -> Host:
    """Return the host `spec` names: an OVSDB remote (unix:, tcp:, ssl:) of its
    registry database, or a host directory. Raises UsageError, TableError or
    OvsdbError (within `timeout`)."""
    if spec.startswith(REMOTE_PREFIXES):
        from vucompat.ovsdb.registry import read_remote_host  # lazy: the ovs library costs start-up time

        return read_remote_host(spec, timeout, ssl)
    return load_host(Path(spec))


def load_host(path: Path) -> Host:
    """Return the host described by directory `path`.

    Only that directory's tables count (not the search path): a host defines what
    it was installed with. Without capabilities.toml the host is assumed to offer
    everything its modes need. Raises UsageError (not a directory, no tables) or
    TableError (an invalid file: nothing is loaded).
    """
    if not path.is_dir():
        raise UsageError(message=f"host {path} is not a directory: give a directory of compat tables "
                         f"(and optionally {CAPABILITIES_FILE})")
    if not table_files(path):
        raise UsageError(message=f"host {path} has no table files (*.toml): copy the tables its "
                         "vucompat was installed with into it")
    registry = load_modeset([path], where=str(path))
    caps_path = path / CAPABILITIES_FILE
    capabilities = read_capabilities(caps_path) if caps_path.exists() else None
    return Host(name=str(path), modeset=registry, capabilities=capabilities)


def host_offer(host: Host, spec: str) -> Abi:
    """What host `spec` (as given: a remote or a directory) offers: its backend's
    offer common to every port type (Host.capabilities.abi). Raises UsageError when
    the host does not know it, saying how to make it known."""
    if host.capabilities is not None:
        return host.capabilities.abi
    named = spec if host.name == spec else f"{spec} ({host.name})"
    if spec.startswith(REMOTE_PREFIXES):
        how = (f"probe its backend (`vucompat probe --db {spec}`; a running `vucompat agent` does it by itself) "
               f"or declare it (`vucompat load --db {spec} --capabilities FILE`)")
    else:
        how = (f"add a {CAPABILITIES_FILE} to {spec} (`vucompat dump` prints a probed backend's offer; "
               "docs/tables.md has the format)")
    raise UsageError(message=f"host {named} does not say what its backend offers, so it has no baseline "
                     f"to give: {how}")


@dataclass(frozen=True)
class PoolMembers:
    """The hosts of a fleet pool a question counts, and those it leaves out."""

    pool: str
    #: fresh hosts whose backend's offer is known, by name
    used: tuple[Host, ...]
    #: host name -> why it was left out
    skipped: Mapping[str, str] = field(default_factory=dict)


def pool_members(pool: str, hosts: Iterable["FleetHost"], now_ms: int, include_stale: bool = False) -> PoolMembers:
    """The hosts of `pool` (fleet hosts as read from the fleet database) whose offer
    counts: fresh ones (all with `include_stale`) whose capabilities are known.
    Raises UsageError when the pool has no host, or none that counts."""
    from vucompat.core.fleet import STALE_FACTOR

    mine = sorted((h for h in hosts if h.pool == pool), key=lambda h: h.name)
    if not mine:
        raise UsageError(message=f"pool:{pool}: no host of pool {pool} in the fleet database "
                         "(`vucompat fleet hosts` lists the hosts and their pools)")
    used, skipped = [], {}
    for host in mine:
        if host.stale(now_ms) and not include_stale:
            skipped[host.name] = (f"stale: no publish for {_duration((now_ms - host.last_seen) / 1000)} (more "
                                  f"than {STALE_FACTOR} heartbeats of {host.heartbeat_interval} s); --include-stale "
                                  "counts it")
        elif host.host.capabilities is None:
            skipped[host.name] = ("its backend's offer is not known: probe it (`vucompat probe`, or its agent "
                                  "does) or declare it (`vucompat load --capabilities FILE`)")
        else:
            used.append(host.host)
    if not used:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise UsageError(message=f"pool:{pool}: no host counts ({why})")
    return PoolMembers(pool, tuple(used), skipped)


def _duration(seconds: float) -> str:
    for unit, size in (("days", 172800), ("h", 7200), ("min", 120)):
        if seconds >= size:
            return f"{seconds / (size / 2):.0f} {unit}"
    return f"{seconds:.0f} s"


def open_pool(pool: str, remotes: str, timeout: float = 5.0, ssl: "SslOptions | None" = None,
              include_stale: bool = False) -> PoolMembers:
    """pool_members() of `pool`, read once from the fleet database at `remotes`
    (comma-separated; any member of the cluster answers). Raises UsageError,
    OvsdbError (within `timeout`)."""
    from vucompat.ovsdb.fleet_read import read_fleet  # lazy: the ovs library costs start-up time
    from vucompat.ovsdb.fleet_rows import now_ms
    from vucompat.ovsdb.session import Session
    from vucompat.ovsdb.schema import FLEET_DB

    session = Session(remotes, FLEET_DB, timeout, ssl, check_source=True)
    try:
        found = read_fleet(session, pool=pool)
    finally:
        session.close()
    if session.freshness is not None and session.freshness.stale_source:  # docs/fleet.md, "Honest reads"
        import click

        click.echo(f"pool:{pool}: {session.freshness.warning()}", err=True)
    return pool_members(pool, found, now_ms(), include_stale)
