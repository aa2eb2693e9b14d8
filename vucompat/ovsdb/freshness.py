"""How fresh a read of the fleet database is (docs/fleet.md, "Honest reads").

Every ovsdb-server (2.9 and later) serves the `_Server` database, whose Database
table says, for each database it serves, its service model (clustered, relay,
standalone), whether it is connected (a clustered member: to a majority of its
cluster; a relay: to its source), whether it is the cluster's leader, and the raft
index of the copy it holds. A reading session (session.Session with
check_source=True) asks for that row in the same pipeline as each read, so every
answer carries what the server said of itself at that moment (SourceState), and an
answer from a server whose copy may be stale is marked (Freshness.stale_source).
A warm replica (fleet_read.FleetView) gets the same row from its IDL, which watches
`_Server` on its own and never stays on a disconnected server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

SERVER_STATUS_DB = "_Server"
_COLUMNS = ["model", "connected", "leader", "index"]


def status_operations(database: str) -> list[dict[str, Any]]:
    """The transaction (on database _Server) that reads a server's row for `database`."""
    return [{"op": "select", "table": "Database", "where": [["name", "==", database]], "columns": _COLUMNS}]


def _index(value: Any) -> int | None:
    """An optional integer column, as OVSDB JSON (an int, or ["set", [...]])."""
    if isinstance(value, int):
        return value
    if isinstance(value, list) and len(value) == 2 and value[0] == "set" and value[1]:
        return int(value[1][0])
    return None


@dataclass(frozen=True)
class SourceState:
    """What one server said of its copy of a database (its _Server Database row)."""

    remote: str
    #: clustered, relay or standalone (unknown: the server has no such row, or no _Server)
    model: str
    #: a clustered member: it reaches a majority of its cluster (and has joined); a
    #: relay: it is connected to its source. Standalone: always True.
    connected: bool
    leader: bool
    #: the raft index of the copy it holds (clustered only)
    index: int | None

    @classmethod
    def from_rows(cls, remote: str, rows: list[dict[str, Any]]) -> "SourceState":
        """From the reply of status_operations() (its rows)."""
        if not rows:
            return cls(remote, "unknown", True, False, None)
        row = rows[0]
        return cls(remote, str(row.get("model", "unknown")), bool(row.get("connected", True)),
                   bool(row.get("leader", False)), _index(row.get("index")))

    @classmethod
    def from_idl_row(cls, remote: str, row: Any) -> "SourceState":
        """From an ovs IDL's _Server Database row (its server_tables)."""
        index = list(getattr(row, "index", []) or [])
        return cls(remote, str(getattr(row, "model", "unknown")), bool(getattr(row, "connected", True)),
                   bool(getattr(row, "leader", False)), int(index[0]) if index else None)

    def problem(self, min_index: int = 0) -> str | None:
        """Why this server's copy may be stale, or None."""
        if not self.connected and self.model == "relay":
            return (f"{self.remote} is a relay that is not connected to its source: it answers from its last "
                    "copy, which may be stale")
        if not self.connected:
            return (f"{self.remote} is not connected to its cluster (it reaches no majority, or has not joined): "
                    "it answers from its own copy, which may be stale")
        if self.index is not None and self.index < min_index:
            return (f"{self.remote} holds an older copy (raft index {self.index}) than one this client read "
                    f"before (index {min_index})")
        return None


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Freshness:
    """How fresh an answer is: who answered, what it said of its copy then, and
    whether the answer may be stale (`stale_source`, with `why`)."""

    #: the server that answered (the last one, when several reads made the answer)
    source: str | None
    model: str
    connected: bool
    leader: bool
    index: int | None
    #: when the answer was read (ms since the epoch)
    read_at: int
    #: the answer came from a server not connected to its cluster (or a relay not
    #: connected to its source), or from an older copy than one read before
    stale_source: bool
    why: str | None = None
    #: the last time the copy is known to have been current (ms since the epoch):
    #: read_at for a fresh answer; for a warm replica that lost its server, when it
    #: last had a connected one; None when not known
    fresh_at: int | None = None

    @classmethod
    def of(cls, state: SourceState, min_index: int = 0, at: int | None = None) -> "Freshness":
        """The freshness of an answer `state`'s server gave at `at` (default now)."""
        at = now_ms() if at is None else at
        why = state.problem(min_index)
        return cls(state.remote, state.model, state.connected, state.leader, state.index, at, why is not None,
                   why, None if why else at)

    def worst(self, other: "Freshness | None") -> "Freshness":
        """Of two reads that made one answer (self, then `other`): a stale one (the
        later when both are), else the later one."""
        if other is None or (self.stale_source and not other.stale_source):
            return self
        return other if other.stale_source or other.read_at >= self.read_at else self

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "model": self.model, "connected": self.connected, "leader": self.leader,
                "index": self.index, "read_at": self.read_at, "stale_source": self.stale_source, "why": self.why,
                "fresh_at": self.fresh_at}

    def warning(self) -> str:
        """One line for people: why this answer may be stale."""
        return f"WARNING: this answer may be stale: {self.why}"


def replica_freshness(state: SourceState | None, min_index: int, fresh_at: int | None) -> Freshness:
    """How fresh a warm replica is now: `state` is what the server it monitors says of
    its copy (None: it monitors none now, and holds the copy it had); `fresh_at`, the
    last time it was known fresh (the previous answer's fresh_at)."""
    if state is not None and state.problem(min_index) is None:
        return Freshness.of(state, min_index)
    at = now_ms()
    since = f" since {time.strftime('%H:%M:%S', time.localtime(fresh_at / 1000))} ({(at - fresh_at) / 1000:.0f} s ago)" \
        if fresh_at else ""
    why = state.problem(min_index) if state is not None else \
        f"the replica has had no server with a current copy{since} (its server is gone, or every server it tries " \
        "is not connected to its cluster): it holds the copy it had"
    return Freshness(state.remote if state else None, state.model if state else "unknown",
                     bool(state and state.connected), bool(state and state.leader), state.index if state else None,
                     at, True, why, fresh_at)
