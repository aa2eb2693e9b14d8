"""One JSON-RPC call to an ovsdb-server, bounded by a deadline.

Used where the IDL would be the wrong tool: fetching a schema before the IDL is
built (so an absent database is a clear error, not an endless reconnect loop) and
one-shot reads and writes (`transact`). connect() and receive() are the steps,
shared with session.Session (a persistent connection).
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any

import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.util

from vucompat.core.errors import VucompatError
from vucompat.ovsdb import fastjson
from vucompat.ovsdb.tls import ssl_configured

DEFAULT_TIMEOUT = 5.0


class OvsdbError(VucompatError):
    """An ovsdb-server could not be reached, or refused a request."""

    template = "{remote}: {reason}"


def _require_ssl_files(remote: str) -> None:
    """Raise OvsdbError for an ssl: remote before any SSL files were given."""
    if remote.startswith("ssl:") and not ssl_configured():
        raise OvsdbError(remote=remote, reason="an ssl: remote needs --ssl-key, --ssl-cert and --ssl-ca "
                         "(files made by ovs-pki)")


def _describe(code: int) -> str:
    """An errno (or the ovs library's EOF) in words."""
    if code == ovs.util.EOF:
        return "the server closed the connection"
    return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"


def _remaining_ms(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))


def _unreachable(remote: str, timeout: float, reason: str) -> OvsdbError:
    return OvsdbError(remote=remote, reason=f"cannot reach ovsdb-server within {timeout:g}s: {reason}; "
                                           "check that it runs and listens there (the remote given, --timeout)")


def connect(remote: str, deadline: float, timeout: float) -> ovs.jsonrpc.Connection:
    """Connect to one remote before `deadline` (time.monotonic()); `timeout` is
    what errors name. Raises OvsdbError."""
    fastjson.install()
    _require_ssl_files(remote)
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


def receive(rpc: ovs.jsonrpc.Connection, deadline: float) -> tuple[int, Any]:
    """Return (0, the next message), or (EAGAIN, None) at the deadline, or (error, None)."""
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
    rpc = connect(remote, deadline, timeout)
    try:
        request = ovs.jsonrpc.Message.create_request(method, params)
        error = rpc.send(request)
        while not error:
            error, reply = receive(rpc, deadline)
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
