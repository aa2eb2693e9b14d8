"""A persistent JSON-RPC session to one of several servers (the fleet's writers
and one-shot readers): pipelined transactions, failing over along the remotes."""

from __future__ import annotations

import errno
import time
from typing import Any

import ovs.jsonrpc

from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError, connect, describe_error, failed_operation, receive
from vucompat.ovsdb.tls import SslOptions, configure_ssl


class Session:
    """A persistent JSON-RPC connection to one of several remotes (a comma-separated
    list, as every OVSDB client takes), failing over to the next when the one in use
    goes away: any member of a cluster takes transactions (followers forward them to
    the leader). Not thread-safe."""

    def __init__(self, remotes: str, database: str, timeout: float = DEFAULT_TIMEOUT,
                 ssl: SslOptions | None = None) -> None:
        self.remotes = [r.strip() for r in remotes.split(",") if r.strip()]
        if not self.remotes:
            raise OvsdbError(remote=remotes, reason="no remote given")
        self.database = database
        self.timeout = timeout
        configure_ssl(ssl)
        self._rpc: ovs.jsonrpc.Connection | None = None
        self._index = 0
        self.remote: str | None = None
        #: why the last connection was lost, in words (None: it was not)
        self.lost_reason: str | None = None
        self._tls_refused = False

    def close(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
        self._rpc = self.remote = None

    def _connection(self, deadline: float) -> ovs.jsonrpc.Connection:
        if self._rpc is not None:
            return self._rpc
        errors = []
        for _ in range(len(self.remotes)):
            remote = self.remotes[self._index % len(self.remotes)]
            try:
                self._rpc = connect(remote, deadline, self.timeout)
                self.remote = remote
                return self._rpc
            except OvsdbError as err:
                errors.append(err.reason)
                self._index += 1
        raise OvsdbError(remote=",".join(self.remotes), reason="no server answers: " + " | ".join(errors))

    def _lost(self, error: int = 0) -> None:
        """The connection failed (`error`: an errno, EAGAIN for no answer in time):
        drop it; the next call tries the next remote."""
        if self._rpc is not None:
            self.lost_reason = f"no answer within {self.timeout:g}s" if error == errno.EAGAIN else \
                describe_error(error, self._rpc.stream)
            self._tls_refused = bool(getattr(self._rpc.stream, "tls_error", None))
        self.close()
        self._index += 1

    def transact_many(self, batches: list[list[dict[str, Any]]], window: int = 32) -> list[Any]:
        """Send many transactions, up to `window` in flight at once; return, per
        batch, its results (a list, which may hold a failed operation), or None when
        the connection was lost before its reply: its outcome is unknown, the caller
        reads back and decides. Raises OvsdbError when no remote answers at all."""
        deadline = time.monotonic() + self.timeout
        rpc = self._connection(deadline)
        out: list[Any] = [None] * len(batches)
        in_flight: dict[Any, int] = {}
        sent = 0
        while sent < len(batches) or in_flight:
            while sent < len(batches) and len(in_flight) < window:
                request = ovs.jsonrpc.Message.create_request("transact", [self.database, *batches[sent]])
                error = rpc.send(request)
                if error:
                    self._lost(error)
                    return out
                in_flight[request.id] = sent
                sent += 1
            error, reply = receive(rpc, deadline)
            if error:
                self._lost(error)
                return out
            index = in_flight.pop(reply.id, None)
            if index is None:
                continue
            if reply.type == ovs.jsonrpc.Message.T_ERROR:
                out[index] = [{"error": str(reply.error), "details": "the server refused the request"}]
            else:
                out[index] = reply.result
            deadline = time.monotonic() + self.timeout
        return out

    def transact(self, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run one transaction; return its results. Raises OvsdbError when an
        operation failed, or the connection was lost (outcome unknown)."""
        results = self.transact_many([operations])[0]
        if results is None:
            if self._tls_refused:  # the server read nothing of it
                raise OvsdbError(remote=",".join(self.remotes), reason=f"{self.lost_reason}; nothing was applied")
            raise OvsdbError(remote=",".join(self.remotes), reason=f"lost the connection before the reply "
                             f"({self.lost_reason}); the transaction may or may not have been applied")
        failed = failed_operation(results)
        if failed is not None:
            raise OvsdbError(remote=self.remote, reason=f"transaction failed: {failed.get('error')}: "
                             f"{failed.get('details', '')}")
        return results
