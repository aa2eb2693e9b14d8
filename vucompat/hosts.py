"""Hosts: a directory of table files plus an optional capabilities.toml (offline),
or the OVSDB remote of a host's registry database. Both give the same registry.Host.
"""

from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

from .errors import UsageError
from .registry import Host
from .tables import CAPABILITIES_FILE, load_registry, read_capabilities, table_files

if TYPE_CHECKING:
    from .ovsdb.rpc import SslOptions

REMOTE_PREFIXES = ("unix:", "tcp:", "ssl:")


def open_host(spec: str, timeout: float = 5.0, ssl: "SslOptions | None" = None) -> Host:
    """Return the host `spec` names: an OVSDB remote (unix:, tcp:, ssl:) of its
    registry database, or a host directory. Raises UsageError, TableError or
    OvsdbError (within `timeout`)."""
    if spec.startswith(REMOTE_PREFIXES):
        from .ovsdb.registry import load_remote_host  # lazy: the ovs library costs start-up time

        return load_remote_host(spec, timeout, ssl)
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
    registry = load_registry([path], where=str(path))
    caps_path = path / CAPABILITIES_FILE
    capabilities = read_capabilities(caps_path) if caps_path.exists() else None
    return Host(name=str(path), registry=registry, capabilities=capabilities)
