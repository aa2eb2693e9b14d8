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

from ..errors import VucompatError

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


def call(remote: str, method: str, params: list[Any], deadline: float, timeout: float) -> Any:
    """Send one request to `remote` and return the result of its reply.

    Raises OvsdbError when the server cannot be reached or does not answer before
    `deadline` (time.monotonic()), or answers with an error.
    """
    def unreachable(reason: str) -> OvsdbError:
        return OvsdbError(remote=remote, reason=f"cannot reach ovsdb-server within {timeout:g}s: {reason}; "
                                               "check that it runs and listens there (--db, --timeout)")

    require_ssl_files(remote)
    error, stream = ovs.stream.Stream.open(remote)
    if error:
        raise unreachable(_describe(error))
    try:
        while True:
            error = stream.connect()
            if error != errno.EAGAIN:
                break
            if time.monotonic() >= deadline:
                raise unreachable("connection timed out")
            poller = ovs.poller.Poller()
            stream.run_wait(poller)
            stream.connect_wait(poller)
            poller.timer_wait(_remaining_ms(deadline))
            poller.block()
        if error:
            raise unreachable(_describe(error))
        rpc = ovs.jsonrpc.Connection(stream)
        request = ovs.jsonrpc.Message.create_request(method, params)
        error = rpc.send(request)
        while not error:
            error, reply = rpc.recv()
            if error == errno.EAGAIN:
                if time.monotonic() >= deadline:
                    raise unreachable(f"no answer to {method}")
                rpc.run()
                poller = ovs.poller.Poller()
                rpc.wait(poller)
                rpc.recv_wait(poller)
                poller.timer_wait(_remaining_ms(deadline))
                poller.block()
                error = 0
                continue
            if error:
                break
            if reply.id != request.id:
                continue  # e.g. an echo request
            if reply.type == ovs.jsonrpc.Message.T_ERROR:
                raise OvsdbError(remote=remote, reason=f"{method} failed: {reply.error}")
            rpc.close()
            return reply.result
        raise unreachable(_describe(error))
    finally:
        stream.close()


def get_schema(remote: str, database: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Return the schema of `database` as served by `remote`.

    Raises OvsdbError; an absent database says how to add it.
    """
    try:
        return call(remote, "get_schema", [database], time.monotonic() + timeout, timeout)
    except OvsdbError as err:
        if "unknown database" in err.reason:
            raise OvsdbError(remote=remote, reason=f"the server does not serve the {database} database: "
                             "add it with `vucompat db create FILE` and `vucompat db attach FILE`") from None
        raise


def transact(remote: str, database: str, operations: list[dict[str, Any]],
             timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """Run one raw `transact`; return its results. Raises OvsdbError when any
    operation failed (ovsdb-client's exit code would not say so)."""
    results = call(remote, "transact", [database, *operations], time.monotonic() + timeout, timeout)
    failed = [r for r in results if isinstance(r, dict) and "error" in r]
    if failed:
        raise OvsdbError(remote=remote, reason=f"transaction failed: {failed[0].get('error')}: "
                         f"{failed[0].get('details', '')}")
    return results
