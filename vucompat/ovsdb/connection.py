"""An IDL connection to the VuCompat database, with deadlines everywhere.

The schema is fetched from the server first (rpc.get_schema), so a server that does
not serve the database, or an older schema without a column vucompat needs, is a
clear error rather than an IDL that reconnects forever. Every wait has a deadline:
the IDL's own loop (`poller.block()`) is always given a timer.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

import ovs.db.idl
import ovs.poller

from vucompat.ovsdb import fastjson, rpc
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError
from vucompat.ovsdb.tls import SslOptions, configure_ssl
from vucompat.ovsdb.schema import COLUMNS, DB_NAME

T = TypeVar("T")

#: the IDL's reconnect backoff (ms): after losing a connection that was monitoring, the
#: first attempt comes RECONNECT_MIN_MS later and each failed one doubles the wait, up to
#: RECONNECT_MAX_MS. The ovs library's own floor is 1 s, and it doubles the wait at every
#: disconnect of a connection that saw no traffic for a backoff's length after it was
#: made: an idle unix connection (no inactivity probes) never does, so the agent waited
#: 1, 2, 4, 8 s after consecutive ovsdb-server restarts (issue 15)
RECONNECT_MIN_MS, RECONNECT_MAX_MS = 100, 8000


class _TrackingIdl(ovs.db.idl.Idl):
    """An IDL that remembers which rows changed (its documented notify() hook), so
    callers can rebuild converted views of those rows only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.changed: dict[str, set[Any]] = {}
        super().__init__(*args, **kwargs)

    def notify(self, event: Any, row: Any, updates: Any = None) -> None:
        self.changed.setdefault(row._table.name, set()).add(row.uuid)  # noqa: SLF001


class TransactionConflict(Exception):
    """Raised inside a transaction builder to ask for a retry on fresh data."""


class Conflict(OvsdbError):
    """A transaction refused (or abandoned by its builder) because a concurrent
    writer changed what it was built from; nothing was written, and the connection
    already shows fresher contents: read again and build again."""


class Connection:
    """One monitored connection to a database (by default the VuCompat registry)
    of one ovsdb-server.

    Not thread-safe: use one Connection per thread (the ovs IDL is not thread-safe).
    """

    def __init__(self, remote: str, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None,
                 tables: dict[str, tuple[str, ...]] = COLUMNS, database: str = DB_NAME,
                 required: dict[str, tuple[str, ...]] | None = None) -> None:
        """Connect to `database` and wait for the contents of `tables` (table ->
        columns to monitor). Every column of `required` (default: for the registry,
        schema.COLUMNS, which vucompat writes whether it monitors them or not;
        otherwise `tables`) must exist in the server's schema. Raises OvsdbError
        within `timeout`."""
        self.remote = remote
        self.timeout = timeout
        self.database = database
        fastjson.install()
        configure_ssl(ssl)
        schema = rpc.get_schema(remote, database, timeout)  # checks SSL files, reachability, the database
        self.schema_version: str = schema.get("version", "0")
        self.schema = schema
        helper = ovs.db.idl.SchemaHelper(schema_json=schema)
        required = required if required is not None else (COLUMNS if database == DB_NAME else tables)
        for table, columns in required.items():
            have = schema["tables"].get(table, {}).get("columns", {})
            missing = [c for c in columns if c not in have]
            if missing:
                hint = "upgrade it with `vucompat db upgrade`" if database == DB_NAME else "upgrade Open vSwitch"
                raise OvsdbError(remote=remote, reason=f"the {database} database (schema {self.schema_version}) "
                                 f"lacks {table} columns {', '.join(missing)}: {hint}")
        for table, columns in tables.items():
            helper.register_columns(table, list(columns))
        self.idl = _TrackingIdl(remote, helper, leader_only=False)
        self._reconnect = _prompt_reconnect(self.idl)
        #: converted views of rows, per table, for callers that re-read often (ovsdb.ports)
        self.view_cache: dict[str, dict[Any, Any]] = {}
        self._wait_until(lambda: self.idl.state == self.idl.IDL_S_MONITORING, "the database contents")
        self._settled()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.idl.close()

    def rows(self, table: str) -> list[Any]:
        """Return the rows of `table` as the IDL sees them now."""
        return list(self.idl.tables[table].rows.values())

    def ready(self) -> bool:
        """Connected, with a full copy of the monitored contents (not mid-resync)."""
        # the session is the ovs IDL's own; it has no public "is connected" of its own
        return self.idl.state == self.idl.IDL_S_MONITORING and self.idl._session.is_connected()

    def refresh(self) -> bool:
        """Process what the server sent, without blocking; return whether anything changed."""
        changed = bool(self.idl.run())
        self._settled()
        return changed

    def _settled(self) -> None:
        """Once monitoring again, the next loss of the connection starts over at the
        shortest backoff (RECONNECT_MIN_MS), however idle the connection stays."""
        if self._reconnect is not None and self.ready():
            self._reconnect.backoff = 0

    def transact(self, build: Callable[[ovs.db.idl.Transaction], T], attempts: int = 5,
                 reads_fresh: bool = False) -> tuple[T, bool]:
        """Run one transaction: `build(txn)` stages the changes from the current
        contents (and may verify what it read, or add `wait` operations); then commit.

        When the server refuses because a concurrent writer changed what was read
        (TRY_AGAIN, a failed wait/verify, a unique index clash), wait for the IDL to
        see new contents and build again, up to `attempts` times. With `reads_fresh`
        (`build` reads what it checks straight from the server), the wait for the IDL
        is short. Returns (what build
        returned, whether anything was written). Raises OvsdbError on failure or
        timeout; nothing is written then.
        """
        deadline = time.monotonic() + self.timeout
        for _attempt in range(attempts):
            try:
                return self.attempt(build, deadline, reads_fresh)
            except Conflict:
                continue
        raise self.gave_up(attempts)

    def attempt(self, build: Callable[[ovs.db.idl.Transaction], T], deadline: float | None = None,
                reads_fresh: bool = False) -> tuple[T, bool]:
        """One try of transact(), for callers that build again themselves from what
        they read anew (the agent plans again). Returns (what build returned, whether
        anything was written). Raises Conflict when a concurrent writer changed what
        was read, once the IDL shows fresher contents (`deadline`: a time.monotonic()
        by which to give up; default: the connection's timeout from now); OvsdbError
        on failure or timeout. Nothing is written when it raises."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        seqno = self.idl.change_seqno
        txn = ovs.db.idl.Transaction(self.idl)
        try:
            result = build(txn)
        except TransactionConflict:
            txn.abort()
            self._wait_for_change(seqno, deadline, reads_fresh)
            raise Conflict(remote=self.remote, reason="the contents changed while the transaction was built")
        except BaseException:
            txn.abort()
            raise
        status = self._commit(txn, deadline)
        if status in (txn.SUCCESS, txn.UNCHANGED):
            return result, status == txn.SUCCESS
        if status == txn.TRY_AGAIN or (status == txn.ERROR and _is_conflict(txn.get_error())):
            self._wait_for_change(seqno, deadline, reads_fresh)
            raise Conflict(remote=self.remote, reason=f"another client changed the same rows "
                           f"({txn.get_error() or txn.status_to_string(status)}); nothing was written")
        raise OvsdbError(remote=self.remote, reason=f"transaction failed ({txn.status_to_string(status)}): "
                         f"{txn.get_error() or 'no detail'}; nothing was written")

    def gave_up(self, attempts: int) -> OvsdbError:
        """The error for a transaction that met a conflict on each of `attempts` tries."""
        return OvsdbError(remote=self.remote, reason=f"gave up after {attempts} attempts: other clients keep "
                          "changing the same rows; nothing was written")

    def _commit(self, txn: ovs.db.idl.Transaction, deadline: float) -> int:
        while True:
            status = txn.commit()
            if status != txn.INCOMPLETE:
                return status
            if time.monotonic() >= deadline:
                txn.abort()
                raise OvsdbError(remote=self.remote, reason=f"no answer to the transaction within "
                                 f"{self.timeout:g}s; the server may or may not have applied it")
            self.idl.run()
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            txn.wait(poller)
            poller.timer_wait(max(1, int((deadline - time.monotonic()) * 1000)))
            poller.block()

    def _wait_for_change(self, seqno: int, deadline: float, briefly: bool = False) -> None:
        if briefly:  # the builder reads fresh data itself; give the IDL a moment for the rest
            try:
                self._wait_until(lambda: self.idl.change_seqno != seqno, "", min(deadline, time.monotonic() + 0.1))
            except OvsdbError:
                pass
            return
        self._wait_until(lambda: self.idl.change_seqno != seqno, "fresh contents after a conflict", deadline)

    def _wait_until(self, done: Callable[[], bool], what: str, deadline: float | None = None) -> None:
        deadline = deadline or time.monotonic() + self.timeout
        while True:
            self.idl.run()
            if done():
                return
            if time.monotonic() >= deadline:
                raise OvsdbError(remote=self.remote, reason=f"timed out after {self.timeout:g}s waiting for {what}")
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(max(1, int((deadline - time.monotonic()) * 1000)))
            poller.block()


def _prompt_reconnect(idl: ovs.db.idl.Idl) -> Any:
    """Give `idl`'s session the backoff of RECONNECT_MIN_MS..RECONNECT_MAX_MS; return its
    reconnect state machine (ovs.reconnect.Reconnect), or None when this ovs library
    keeps it elsewhere (its defaults then apply)."""
    fsm = getattr(getattr(idl, "_session", None), "reconnect", None)
    if fsm is None or not hasattr(fsm, "min_backoff") or not hasattr(fsm, "backoff"):
        return None
    fsm.set_backoff(RECONNECT_MIN_MS, RECONNECT_MAX_MS)  # (which raises the minimum to its floor, 1 s)
    fsm.min_backoff = RECONNECT_MIN_MS
    return fsm


def _is_conflict(error: str | None) -> bool:
    """A refused precondition or a unique-index clash: another writer got there first."""
    text = error or ""
    return any(word in text for word in ("constraint violation", "referential integrity", "timed out", "not met"))
