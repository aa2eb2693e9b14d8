"""Reading a host from its registry database."""

from __future__ import annotations

from typing import Any

from vucompat.ovsdb import rpc
from vucompat.ovsdb.connection import Connection
from vucompat.ovsdb.codec import decode_row
from vucompat.ovsdb.rows import host_capabilities, row_to_mode
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError
from vucompat.ovsdb.tls import SslOptions, configure_ssl
from vucompat.ovsdb.schema import COLUMNS, DB_NAME
from vucompat.core.modeset import Host, ModeSet


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


def load_remote_host(remote: str, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None) -> Host:
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
