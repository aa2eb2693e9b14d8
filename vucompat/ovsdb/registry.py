"""A host in its registry database: reading its modes and Host row (read_host,
read_remote_host, RemoteHost), and writing its Host row (stage_host for `load`,
record_probe for the probe). Port rows are written by ports.py, modes by load.py."""

from __future__ import annotations

import socket
from typing import Any

from vucompat.ovsdb import rpc
from vucompat.ovsdb.connection import Connection
from vucompat.ovsdb.codec import decode_row
from vucompat.ovsdb.rows import capabilities_columns, host_capabilities, row_to_mode
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError
from vucompat.ovsdb.tls import SslOptions, configure_ssl
from vucompat.ovsdb.schema import COLUMNS, DB_NAME
from vucompat.core.mode import Capabilities
from vucompat.core.modeset import Host, ModeSet

#: capabilities_source when the capabilities come from a file, or a probe
DECLARED, PROBED = "declared", "probed"


def read_host(conn: Connection) -> Host:
    """Return the host a connection's database describes: its modes, and what its
    Host row declares its backend offers. Raises CorruptRowError for a row written
    outside vucompat."""
    host_rows = conn.rows("Host")
    return _host(conn.remote, conn.rows("Compat_Mode"), host_rows[0] if host_rows else None)


def _host(remote: str, mode_rows: Any, host_row: Any) -> Host:
    # rows with derived_from are materialized for ports (<mode>+recommended); they are
    # not candidates of their own: expand() derives them from their base
    modes = {row.name: row_to_mode(row, remote) for row in mode_rows if not row.derived_from}
    return Host(name=host_row.name if host_row else remote,
                modeset=ModeSet(modes=modes, where=f"the {remote} database"),
                capabilities=host_capabilities(host_row, remote))


def read_remote_host(remote: str, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None) -> Host:
    """Read the host once: one `select` of Compat_Mode and Host in one transaction
    (no monitor: a one-shot reader needs no IDL). Gives the same value as
    read_host(). Raises OvsdbError within `timeout`, CorruptRowError."""
    configure_ssl(ssl)
    try:
        modes, hosts = rpc.transact(remote, DB_NAME, [
            {"op": "select", "table": "Compat_Mode", "where": [], "columns": list(COLUMNS["Compat_Mode"])},
            {"op": "select", "table": "Host", "where": [], "columns": list(COLUMNS["Host"])},
        ], timeout)
    except OvsdbError as err:
        if "unknown database" in err.reason:
            rpc.get_schema(remote, DB_NAME, timeout)  # raises the message that says how to add it
        if "column" in err.reason:
            raise OvsdbError(remote=remote, reason=f"{err.reason}; the {DB_NAME} database has an older schema: "
                             "upgrade it with `vucompat db upgrade`") from None
        raise
    rows = [decode_row(r, "Compat_Mode") for r in modes["rows"]]
    host_rows = [decode_row(r, "Host") for r in hosts["rows"]]
    return _host(remote, rows, host_rows[0] if host_rows else None)


class RemoteHost:
    """A long-lived view of one host's registry: the connection stays open and the
    Host value is rebuilt only when the database changed. Not thread-safe."""

    def __init__(self, remote: str, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None) -> None:
        self.connection = Connection(remote, timeout, ssl)
        self._seqno = -1
        self._host: Host | None = None

    def host(self) -> Host:
        """Return the host as the database shows it now."""
        self.connection.refresh()
        if self._host is None or self.connection.idl.change_seqno != self._seqno:
            self._seqno = self.connection.idl.change_seqno
            self._host = read_host(self.connection)
        return self._host

    def close(self) -> None:
        self.connection.close()


def stage_host(conn: Connection, txn: Any, capabilities: Capabilities | None, host_name: str | None,
                versions: dict[str, str]) -> tuple[Any, bool]:
    """Stage the Host row in `txn`: created when missing (named `host_name`, or this
    machine's hostname), updated only where it differs (so a load that changes
    nothing writes nothing): the name, declared `capabilities` when given, the
    OVS/DPDK `versions`. Returns (the row, whether it changed)."""
    hosts = conn.rows("Host")
    fresh = not hosts
    if fresh:
        row = txn.insert(conn.idl.tables["Host"])
        changes: dict[str, Any] = {"name": host_name or socket.gethostname(), "default_policy": "latest",
                                   **capabilities_columns(None, "none")}
    else:
        row = hosts[0]
        row.verify("name")
        changes = {"name": host_name} if host_name else {}
    if capabilities is not None:
        changes.update(capabilities_columns(capabilities, DECLARED))
    changes.update({column: [value] for column, value in versions.items()})
    changed = fresh
    for column, value in changes.items():
        if fresh or getattr(row, column) != value:
            setattr(row, column, value)
            changed = True
    return row, changed


def record_probe(conn: Connection, capabilities: Capabilities, info: dict[str, str], host_name: str | None = None,
                 versions: dict[str, str] | None = None) -> None:
    """Record probed capabilities in the Host row (created when missing), with the
    OVS/DPDK versions and `info` (the settings that decided them) in other_config."""
    def build(txn: Any) -> None:
        row, _changed = stage_host(conn, txn, None, host_name, versions or {})
        for column, value in capabilities_columns(capabilities, PROBED).items():
            setattr(row, column, value)
        for key, value in info.items():
            row.setkey("other_config", key, value)

    conn.transact(build)


def read_default_policy(remote: str, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None) -> str | None:
    """The Host row's default_policy (None when there is no Host row). Raises OvsdbError."""
    configure_ssl(ssl)
    (reply,) = rpc.transact(remote, DB_NAME, [{"op": "select", "table": "Host", "where": [],
                                               "columns": ["default_policy"]}], timeout)
    return reply["rows"][0]["default_policy"] if reply["rows"] else None


def write_default_policy(remote: str, policy: str, timeout: float = DEFAULT_TIMEOUT,
                         ssl: SslOptions | None = None) -> None:
    """Set the Host row's default_policy. Raises OvsdbError (also when the registry
    has no Host row yet: load tables first)."""
    configure_ssl(ssl)
    (reply,) = rpc.transact(remote, DB_NAME, [{"op": "update", "table": "Host", "where": [],
                                               "row": {"default_policy": policy}}], timeout)
    if not reply.get("count"):
        raise OvsdbError(remote=remote, reason="the registry has no Host row yet: `vucompat load` it first")


def write_incoming(remote: str, iface_id: str, mode: str, digest: str | None, source: str, created_ms: int,
                   timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None) -> None:
    """Record (or replace) the Incoming_Port row of `iface_id`: the port that will be
    plugged here takes `mode` (defined as `digest`) from `source`. Raises OvsdbError."""
    configure_ssl(ssl)
    rpc.transact(remote, DB_NAME, [
        {"op": "delete", "table": "Incoming_Port", "where": [["iface_id", "==", iface_id]]},
        {"op": "insert", "table": "Incoming_Port", "row": {
            "iface_id": iface_id, "mode": mode, "digest": ["set", [digest] if digest else []], "source": source,
            "created": created_ms}},
    ], timeout)


def delete_incoming(remote: str, iface_id: str, timeout: float = DEFAULT_TIMEOUT,
                    ssl: SslOptions | None = None) -> int:
    """Delete the Incoming_Port row of `iface_id`; return how many there were. Raises OvsdbError."""
    configure_ssl(ssl)
    (reply,) = rpc.transact(remote, DB_NAME, [{"op": "delete", "table": "Incoming_Port",
                                               "where": [["iface_id", "==", iface_id]]}], timeout)
    return int(reply.get("count", 0))
