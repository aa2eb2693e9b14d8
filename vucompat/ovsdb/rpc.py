"""One JSON-RPC call to an ovsdb-server, bounded by a deadline.

Used where the IDL would be the wrong tool: fetching a schema before the IDL is
built (so an absent database is a clear error, not an endless reconnect loop) and
one-shot reads of another database (Open_vSwitch).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from typing import Any

import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.util

from vucompat.core.errors import VucompatError

DEFAULT_TIMEOUT = 5.0


class OvsdbError(VucompatError):
    """An ovsdb-server could not be reached, or refused a request."""

    template = "{remote}: {reason}"


@dataclass(frozen=True)
class SslOptions:
    """Files for ssl: remotes (as made by ovs-pki)."""

    private_key: str
    certificate: str
    ca_cert: str

    def cli_args(self) -> list[str]:
        """The same files as `vucompat` options."""
        return ["--ssl-key", self.private_key, "--ssl-cert", self.certificate, "--ssl-ca", self.ca_cert]


_ssl_configured = False


def configure_ssl(ssl: SslOptions | None) -> None:
    """Set the process-wide SSL files of the ovs library (it has no per-stream ones)."""
    global _ssl_configured
    if ssl is not None:
        _ssl_configured = True
        ovs.stream.Stream.ssl_set_private_key_file(ssl.private_key)
        ovs.stream.Stream.ssl_set_certificate_file(ssl.certificate)
        ovs.stream.Stream.ssl_set_ca_cert_file(ssl.ca_cert)


def require_ssl_files(remote: str) -> None:
    """Raise OvsdbError for an ssl: remote before any SSL files were given."""
    if remote.startswith("ssl:") and not _ssl_configured:
        raise OvsdbError(remote=remote, reason="an ssl: remote needs --ssl-key, --ssl-cert and --ssl-ca "
                         "(files made by ovs-pki)")


def _describe(code: int) -> str:
    if code == ovs.util.EOF:
        return "the server closed the connection"
    return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"


def _remaining_ms(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))


def _unreachable(remote: str, timeout: float, reason: str) -> OvsdbError:
    return OvsdbError(remote=remote, reason=f"cannot reach ovsdb-server within {timeout:g}s: {reason}; "
                                           "check that it runs and listens there (the remote given, --timeout)")


def _open(remote: str, deadline: float, timeout: float) -> ovs.jsonrpc.Connection:
    """Connect to one remote before `deadline`. Raises OvsdbError."""
    require_ssl_files(remote)
    error, stream = ovs.stream.Stream.open(remote)
    if error:
        raise _unreachable(remote, timeout, _describe(error))
    while True:
        error = stream.connect()
        if error != errno.EAGAIN:
            break
        if time.monotonic() >= deadline:
            stream.close()
            raise _unreachable(remote, timeout, "connection timed out")
        poller = ovs.poller.Poller()
        stream.run_wait(poller)
        stream.connect_wait(poller)
        poller.timer_wait(_remaining_ms(deadline))
        poller.block()
    if error:
        stream.close()
        raise _unreachable(remote, timeout, _describe(error))
    return ovs.jsonrpc.Connection(stream)


def _receive(rpc: ovs.jsonrpc.Connection, deadline: float) -> tuple[int, Any]:
    """The next message, or (EAGAIN, None) at the deadline, or (error, None)."""
    while True:
        error, msg = rpc.recv()
        if error != errno.EAGAIN:
            return error, msg
        if time.monotonic() >= deadline:
            return errno.EAGAIN, None
        rpc.run()
        poller = ovs.poller.Poller()
        rpc.wait(poller)
        rpc.recv_wait(poller)
        poller.timer_wait(_remaining_ms(deadline))
        poller.block()


def call(remote: str, method: str, params: list[Any], deadline: float, timeout: float) -> Any:
    """Send one request to `remote` and return the result of its reply.

    Raises OvsdbError when the server cannot be reached or does not answer before
    `deadline` (time.monotonic()), or answers with an error.
    """
    rpc = _open(remote, deadline, timeout)
    try:
        request = ovs.jsonrpc.Message.create_request(method, params)
        error = rpc.send(request)
        while not error:
            error, reply = _receive(rpc, deadline)
            if error == errno.EAGAIN:
                raise _unreachable(remote, timeout, f"no answer to {method}")
            if error:
                break
            if reply.id != request.id:
                continue  # e.g. an echo request
            if reply.type == ovs.jsonrpc.Message.T_ERROR:
                raise OvsdbError(remote=remote, reason=f"{method} failed: {reply.error}")
            return reply.result
        raise _unreachable(remote, timeout, _describe(error))
    finally:
        rpc.close()


def get_schema(remote: str, database: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Return the schema of `database` as served by `remote`.

    Raises OvsdbError; an absent database says how to add it.
    """
    error: OvsdbError | None = None
    for one in remote.split(","):  # a comma-separated list: the first that answers
        try:
            return call(one, "get_schema", [database], time.monotonic() + timeout, timeout)
        except OvsdbError as err:
            if "unknown database" in err.reason:
                raise OvsdbError(remote=one, reason=f"the server does not serve the {database} database: "
                                 "add it with `vucompat db create FILE` and `vucompat db attach FILE`") from None
            error = err
    assert error is not None
    raise error


def transact(remote: str, database: str, operations: list[dict[str, Any]],
             timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """Run one raw `transact`; return its results. Raises OvsdbError when any
    operation failed (ovsdb-client's exit code would not say so)."""
    results = call(remote, "transact", [database, *operations], time.monotonic() + timeout, timeout)
    failed = failed_operation(results)
    if failed is not None:
        raise OvsdbError(remote=remote, reason=f"transaction failed: {failed.get('error')}: "
                         f"{failed.get('details', '')}")
    return results


def failed_operation(results: list[Any]) -> dict[str, Any] | None:
    """The first failed operation's result of a transact reply, or None."""
    return next((r for r in results if isinstance(r, dict) and "error" in r), None)


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
                self._rpc = _open(remote, deadline, self.timeout)
                self.remote = remote
                return self._rpc
            except OvsdbError as err:
                errors.append(err.reason)
                self._index += 1
        raise OvsdbError(remote=",".join(self.remotes), reason="no server answers: " + " | ".join(errors))

    def _lost(self) -> None:
        """The connection failed: drop it; the next call tries the next remote."""
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
                if rpc.send(request):
                    self._lost()
                    return out
                in_flight[request.id] = sent
                sent += 1
            error, reply = _receive(rpc, deadline)
            if error:
                self._lost()
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
            raise OvsdbError(remote=",".join(self.remotes), reason="lost the connection before the reply; "
                             "the transaction may or may not have been applied")
        failed = failed_operation(results)
        if failed is not None:
            raise OvsdbError(remote=self.remote, reason=f"transaction failed: {failed.get('error')}: "
                             f"{failed.get('details', '')}")
        return results
