"""Reading a host from its registry database."""

from __future__ import annotations

from .connection import Connection
from .rows import host_capabilities, row_to_mode
from .rpc import DEFAULT_TIMEOUT, SslOptions
from ..registry import Host, Registry


def read_host(conn: Connection) -> Host:
    """Return the host a connection's database describes: its modes, and what its
    Host row declares its backend offers. Raises CorruptRowError for a row written
    outside vucompat."""
    modes = {row.name: row_to_mode(row, conn.remote) for row in conn.rows("Compat_Mode")}
    host_rows = conn.rows("Host")
    host_row = host_rows[0] if host_rows else None
    name = host_row.name if host_row else conn.remote
    return Host(name=name, registry=Registry(modes=modes, where=f"the {conn.remote} database"),
                capabilities=host_capabilities(host_row, conn.remote))


def load_remote_host(remote: str, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None) -> Host:
    """Connect, read the host, disconnect. Raises OvsdbError within `timeout`."""
    with Connection(remote, timeout, ssl) as conn:
        return read_host(conn)


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
