"""A persistent JSON-RPC session to one of several servers (the fleet's writers
and one-shot readers): pipelined transactions, failing over along the remotes. A
reading session (check_source) also says how fresh each answer is, and prefers a
server that is connected to its cluster (freshness.py)."""

from __future__ import annotations

import errno
import time
from typing import Any

import ovs.jsonrpc

from vucompat.ovsdb.freshness import SERVER_STATUS_DB, Freshness, SourceState, status_operations
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError, connect, describe_error, failed_operation, receive
from vucompat.ovsdb.tls import SslOptions, configure_ssl

#: after a tour of the remotes found no copy that is surely fresh, how long a reading
#: session reads from the server it kept without touring again (seconds)
STALE_HOLD = 5.0


class Session:
    """A persistent JSON-RPC connection to one of several remotes (a comma-separated
    list, as every OVSDB client takes), failing over to the next when the one in use
    goes away: any member of a cluster takes transactions (followers forward them to
    the leader). Not thread-safe.

    With `check_source` (a reading session: schedulers, the CLI's queries), each
    transact_many() also reads the server's _Server row for the database, in the
    same pipeline: an answer from a server whose copy may be stale (a member not
    connected to its cluster, a relay not connected to its source, a copy older than
    one read before) is read again from the next remote, and when no remote has a
    better copy it is returned all the same, marked: `freshness` says how fresh the
    answers so far are (docs/fleet.md, "Honest reads"). Only transactions made of
    `select`s are read again elsewhere."""

    def __init__(self, remotes: str, database: str, timeout: float = DEFAULT_TIMEOUT,
                 ssl: SslOptions | None = None, check_source: bool = False) -> None:
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
        self.check_source = check_source
        #: how fresh the answers of this session are (with check_source; None before any)
        self.freshness: Freshness | None = None
        #: the highest raft index read so far: a copy older than that is stale
        self._min_index = 0
        self._hold_until = 0.0

    def close(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
        self._rpc = self.remote = None

    def _connection(self, deadline: float, avoid: frozenset[str] = frozenset()) -> ovs.jsonrpc.Connection:
        if self._rpc is not None:
            return self._rpc
        errors = []
        for _ in range(len(self.remotes)):
            remote = self.remotes[self._index % len(self.remotes)]
            if remote in avoid:  # tried already (with check_source: its copy may be stale)
                self._index += 1
                continue
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
        reads back and decides. Raises OvsdbError when no remote answers at all.
        With check_source, also updates `freshness` (see the class)."""
        if not self.check_source:
            return self._send(batches, window, False)[0]
        if time.monotonic() < self._hold_until:  # no remote had a fresher copy a moment ago: no new tour
            out, state = self._send(batches, window, True)
            if state is not None:
                self._note(state)
            return out
        reads_only = all(op.get("op") == "select" for batch in batches for op in batch)
        tried: set[str] = set()
        best: tuple[SourceState, list[Any]] | None = None  # the freshest copy among the stale ones
        while True:
            try:
                out, state = self._send(batches, window, True, frozenset(tried))
            except OvsdbError:
                if best is None:
                    raise
                break  # the other servers do not answer: the best stale copy it is
            if state is None:  # the connection was lost: as without check_source
                return out
            if state.problem(self._min_index) is None:
                self._note(state)
                return out
            if best is None or (state.index or 0) > (best[0].index or 0):
                best = (state, out)
            tried.add(state.remote)
            if not reads_only or len(tried) == len(set(self.remotes)):
                break
            self.close()  # read it again from the next remote
            self._index += 1
        state, out = best
        self._hold_until = time.monotonic() + STALE_HOLD
        if self.remote != state.remote:  # stay on the server whose answer is kept
            self.close()
            self._index = self.remotes.index(state.remote)
        self._note(state)
        return out

    def _note(self, state: SourceState) -> None:
        freshness = Freshness.of(state, self._min_index)
        if state.model == "clustered" and not freshness.stale_source and state.index is not None:
            self._min_index = max(self._min_index, state.index)
        self.freshness = freshness if self.freshness is None else self.freshness.worst(freshness)

    def _send(self, batches: list[list[dict[str, Any]]], window: int, check: bool,
              avoid: frozenset[str] = frozenset()) -> tuple[list[Any], SourceState | None]:
        """transact_many() on one server; with `check`, its _Server row is read first,
        in the same pipeline: (results, what the server said of its copy, or None when
        the connection was lost)."""
        deadline = time.monotonic() + self.timeout
        rpc = self._connection(deadline, avoid)
        out: list[Any] = [None] * len(batches)
        in_flight: dict[Any, int] = {}
        state: SourceState | None = None
        if check:
            request = ovs.jsonrpc.Message.create_request("transact", [SERVER_STATUS_DB, *status_operations(self.database)])
            error = rpc.send(request)
            if error:
                self._lost(error)
                return out, None
            in_flight[request.id] = -1
        sent = 0
        while sent < len(batches) or in_flight:
            while sent < len(batches) and len(in_flight) < window:
                request = ovs.jsonrpc.Message.create_request("transact", [self.database, *batches[sent]])
                error = rpc.send(request)
                if error:
                    self._lost(error)
                    return out, None
                in_flight[request.id] = sent
                sent += 1
            error, reply = receive(rpc, deadline)
            if error:
                self._lost(error)
                return out, None
            index = in_flight.pop(reply.id, None)
            if index is None:
                continue
            if index == -1:  # the server's _Server row (an error: a server without _Server)
                ok = reply.type != ovs.jsonrpc.Message.T_ERROR and isinstance(reply.result, list)
                rows = reply.result[0].get("rows", []) if ok and reply.result and "rows" in reply.result[0] else []
                state = SourceState.from_rows(self.remote or "", rows)
            elif reply.type == ovs.jsonrpc.Message.T_ERROR:
                out[index] = [{"error": str(reply.error), "details": "the server refused the request"}]
            else:
                out[index] = reply.result
            deadline = time.monotonic() + self.timeout
        return out, state

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
