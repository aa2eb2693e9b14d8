"""One JSON-RPC call to an ovsdb-server, bounded by a deadline.

Used where the IDL would be the wrong tool: fetching a schema before the IDL is
built (so an absent database is a clear error, not an endless reconnect loop) and
one-shot reads and writes (`transact`). connect() and receive() are the steps,
shared with session.Session (a persistent connection).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
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


def describe_error(code: int, stream: Any = None) -> str:
    """An errno (or the ovs library's EOF) in words; a TLS failure of an ssl:
    stream (_SslStream.tls_error) in its own words, and what to check."""
    tls_error = getattr(stream, "tls_error", None)
    if tls_error:
        return tls_error
    if code == ovs.util.EOF:
        return "the server closed the connection"
    return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"


def _remaining_ms(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))


def _unreachable(remote: str, timeout: float, reason: str, started: float | None = None) -> OvsdbError:
    """The error for a remote that could not be reached: `reason`, and when it
    failed: after how long (`started`: the attempt's time.monotonic()), or,
    without `started`, when the deadline passed (within the timeout)."""
    if started is None:
        return OvsdbError(remote=remote, reason=f"cannot reach ovsdb-server within {timeout:g}s: {reason}; "
                                               "check that it runs and listens there (the remote given, --timeout)")
    return OvsdbError(remote=remote, reason=f"cannot reach ovsdb-server: {reason}, after "
                                           f"{time.monotonic() - started:.2f}s; check that it runs and listens "
                                           "there (the remote given)")


class _SslStream(ovs.stream.SSLStream):
    """The ovs library's ssl: stream, with errors that mean what they say. The
    library provokes a failed connect's error by sending a byte through the SSL
    layer, and hands back the SSL library's error code as if it were an errno (a
    refused connection read as SSL_ERROR_EOF, 8: "Exec format error"); so does
    its handshake (a certificate refused: SSL_ERROR_SSL, 1: "Operation not
    permitted"). Here a failed connect is the socket's own errno (SO_ERROR), and
    a TLS failure is EPROTO with its words kept in `tls_error`."""

    tls_error: str | None = None
    _handshaking = False

    @staticmethod
    def check_connection_completion(sock: Any) -> int:
        poller = ovs.poller.get_system_poll()
        poller.register(sock, ovs.poller.POLLOUT)
        ready = poller.poll(0)
        if not ready:
            return errno.EAGAIN
        if ready[0][1] & (ovs.poller.POLLERR | ovs.poller.POLLHUP):
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.ECONNRESET
        return 0

    def _tls_failed(self, err: ssl.SSLError) -> int:
        reason = err.reason or (err.strerror or str(err)).split(" (_ssl")[0]
        if "ALERT" in reason.upper():  # the server's answer to our certificate
            what = f"the server refused the TLS handshake ({reason})"
            hint = "is --ssl-cert signed by the CA the server trusts (its --ca-cert)?"
        elif isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            what = "the server closed the connection during the TLS handshake"
            hint = "is it an SSL listener (pssl:), and does it trust the CA that signed --ssl-cert?"
        elif isinstance(err, ssl.SSLCertVerificationError):
            what = f"the server's certificate is not trusted ({err.verify_message or reason})"
            hint = "is it signed by the CA given as --ssl-ca?"
        else:
            what = f"the TLS handshake failed ({reason})"
            hint = "do both sides' certificates come from the same CA (--ssl-ca), and is it an SSL listener?"
        self.tls_error = f"{what}; {hint}"
        return errno.EPROTO

    def connect(self) -> int:
        retval = ovs.stream.Stream.connect(self)  # the TCP connection (check_connection_completion)
        if retval:
            return retval
        self._handshaking = True
        try:
            self.socket.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return errno.EAGAIN
        except ssl.SSLError as err:
            return self._tls_failed(err)
        except OSError as err:
            return err.errno or errno.EPROTO
        self._handshaking = False
        return 0

    def connect_wait(self, poller: Any) -> None:
        if self._handshaking:  # connected: the handshake waits for the server's answer
            poller.fd_wait(self.socket, ovs.poller.POLLIN)
        else:
            super().connect_wait(poller)

    def send(self, buf: Any) -> int:
        try:
            return self._send(buf)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return -errno.EAGAIN
        except ssl.SSLError as err:
            return -self._tls_failed(err)
        except OSError as err:
            # the server may have refused our certificate after the handshake (TLS 1.3) and closed:
            # its alert, unread, says why
            try:
                self.socket.recv(1)
            except ssl.SSLError as alert:
                if not isinstance(alert, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
                    self._tls_failed(alert)
            except OSError:
                pass
            return -(err.errno or errno.EPROTO)

    def recv(self, n: int) -> tuple[int, Any]:
        try:
            return self._recv(n)
        except ssl.SSLWantReadError:
            return errno.EAGAIN, ""
        except ssl.SSLZeroReturnError:
            return 0, ""
        except ssl.SSLError as err:  # e.g. TLS 1.3: the server refuses our certificate after the handshake
            return self._tls_failed(err), ""
        except OSError as err:
            return err.errno or errno.EPROTO, ""


def _open_stream(remote: str) -> tuple[int, Any]:
    """ovs.stream.Stream.open, with _SslStream for an ssl: remote."""
    if not remote.startswith("ssl:"):
        return ovs.stream.Stream.open(remote)
    error, sock = _SslStream._open(remote.split(":", 1)[1], ovs.stream.Stream.DSCP_DEFAULT)
    if error:
        return error, None
    error = _SslStream.check_connection_completion(sock)
    status = errno.EAGAIN if error in (errno.EAGAIN, errno.EINPROGRESS) else error
    return (0 if status == errno.EAGAIN else error), _SslStream(sock, remote, status)


def connect(remote: str, deadline: float, timeout: float) -> ovs.jsonrpc.Connection:
    """Connect to one remote before `deadline` (time.monotonic()); `timeout` is
    what errors name. Raises OvsdbError."""
    fastjson.install()
    _require_ssl_files(remote)
    started = time.monotonic()
    error, stream = _open_stream(remote)
    if error:
        if stream is not None:
            stream.close()
        raise _unreachable(remote, timeout, describe_error(error), started)
    while True:
        error = stream.connect()
        if error != errno.EAGAIN:
            break
        if time.monotonic() >= deadline:
            handshaking = getattr(stream, "_handshaking", False)
            stream.close()
            raise _unreachable(remote, timeout, "connected, but the TLS handshake got no answer (is it an SSL "
                               "listener, pssl:?)" if handshaking else "connection timed out")
        poller = ovs.poller.Poller()
        stream.run_wait(poller)
        stream.connect_wait(poller)
        poller.timer_wait(_remaining_ms(deadline))
        poller.block()
    if error:
        stream.close()
        if getattr(stream, "tls_error", None):  # it answers: no "check that it runs"
            raise OvsdbError(remote=remote, reason=f"reached ovsdb-server, after {time.monotonic() - started:.2f}s, "
                             f"but {stream.tls_error}")
        raise _unreachable(remote, timeout, describe_error(error), started)
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
    started = time.monotonic()
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
        raise OvsdbError(remote=remote, reason=f"the connection failed, after {time.monotonic() - started:.2f}s: "
                         f"{describe_error(error, rpc.stream)}")
    finally:
        rpc.close()


#: what to do when a server does not serve a database, by database
_NOT_SERVED = {
    "VuCompat": "add it with `vucompat db create FILE` and `vucompat db attach FILE`",
    "Open_vSwitch": "that is Open vSwitch's own database, which ovs-vswitchd serves on a host: the agent reads the "
                    "ports there and records their modes there, and publishes nothing into a fleet without it; "
                    "run it against the ovsdb-server of this host's ovs-vswitchd (--db, or --ovs-db when the "
                    "registry is served elsewhere; by default unix:/var/run/openvswitch/db.sock)",
    "VuCompat_Fleet": "is it a server of the fleet cluster? give the listeners of its servers (docs/fleet.md)",
}


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
                                 + _NOT_SERVED.get(database, "is it the right server?")) from None
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
