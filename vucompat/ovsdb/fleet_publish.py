"""Publishing one host into the fleet database (a host's agent, the load generator):
one transaction that writes only the difference (publish), and the agent's
publisher thread (FleetPublisher), which never makes the agent wait.

Writers use session.Session: one persistent connection to any member of the
cluster, failing over along the comma-separated remotes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from vucompat.core.fleet import HostRecord, needed_modes
from vucompat.ovsdb.codec import decode_row
from vucompat.ovsdb.fleet_config import READER_ROLE
from vucompat.ovsdb.fleet_read import port_rows_of
from vucompat.ovsdb.fleet_rows import (HOST_COLUMNS, MODE_COLUMNS, Published, now_ms, published_after,
                                       publish_operations, without_columns)
from vucompat.ovsdb.rows import row_to_mode
from vucompat.ovsdb import rpc
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError
from vucompat.ovsdb.schema import FLEET_DB, shipped_schema
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions

log = logging.getLogger("vucompat.fleet")

#: a publisher diffs against what it last wrote, and reads the fleet's rows again
#: after this many publishes (heartbeats included: about daily with the default heartbeat), after a
#: failure, and at start. Only admins can write a host's rows besides the host (RBAC), so this is a
#: safety net (bench/README.md has what a read costs)
REREAD_EVERY = 1440
#: a refusal that only a change of configuration can end (configuration_error) is tried again
#: this often (s): the certificate may be replaced, or the roles configured, meanwhile
CONFIG_RETRY = 300.0


def fleet_lacks(session: Session) -> dict[str, frozenset[str]]:
    """The columns of this vucompat's fleet schema that the fleet's servers lack,
    by table ({}: none): a fleet not yet upgraded (`vucompat fleet upgrade`) to the
    schema of a newer agent. Raises OvsdbError."""
    served = rpc.get_schema(",".join(session.remotes), FLEET_DB, session.timeout)["tables"]
    lacking = {}
    for table, spec in shipped_schema("fleet")["tables"].items():
        missing = frozenset(spec["columns"]) - frozenset(served.get(table, {}).get("columns", {}))
        if missing:
            lacking[table] = missing
    return lacking


def read_published(session: Session, record: HostRecord,
                   lacking: Mapping[str, frozenset[str]] = MappingProxyType({})) -> Published:
    """What the fleet holds for `record`'s host: its Host row (found by name), its
    Port rows (by the uuids the Host row refers to: found at once) and the modes it
    needs; not the `lacking` columns (fleet_lacks). Raises OvsdbError, CorruptRowError
    for a forged mode row."""
    ops: list[dict[str, Any]] = [{"op": "select", "table": "Host", "where": [["name", "==", record.name]],
                                  "columns": ["_uuid", *HOST_COLUMNS]}]
    for name, digest in sorted(needed_modes(record)):
        ops.append({"op": "select", "table": "Compat_Mode", "where": [["name", "==", name], ["digest", "==", digest]],
                    "columns": ["_uuid", *MODE_COLUMNS]})
    hosts, *modes = (r["rows"] for r in session.transact(without_columns(ops, lacking)))
    remote = session.remote or ""
    known = {}
    for rows in modes:
        for row in (decode_row(raw, "Compat_Mode", "fleet") for raw in rows):
            mode = row_to_mode(row, remote)
            known[(mode.name, mode.digest)] = row._uuid
    host = hosts[0] if hosts else None
    ports = port_rows_of(session, host) if host is not None else []
    return Published(host=host, ports={p["interface_name"]: p for p in ports}, modes=known)


def configuration_error(err: Exception, name: str, ssl: SslOptions | None = None) -> str | None:
    """What to change when the fleet refused a publish of host `name` for a reason
    that retrying cannot end (None: any other failure, transient as far as we
    know): RBAC refused the write (the certificate's CN is not the host's fleet
    name; or the roles are missing or older than this vucompat), or the remote is
    a read-only listener. The words say what is wrong and what to change."""
    text = getattr(err, "reason", None) or str(err)
    if "permission error" in text:
        found = re.search(r'client "([^"]*)" role "([^"]*)"', text)
        client, role = found.groups() if found else ("?", "?")
        if role == READER_ROLE:
            return ("the fleet refuses this host's writes: --fleet names a read-only listener (the schedulers'). "
                    "Give the agents' listener (role vucompat-host: docs/fleet.md)")
        if client != name:
            certificate = f" ({ssl.certificate})" if ssl is not None else ""
            return (f"the fleet refuses this host's writes: it publishes as {name!r}, but its certificate"
                    f"{certificate} has CN {client!r}, and a host may write only the rows named after its "
                    f"certificate's CN. Change one of them: give the agent a certificate whose CN is {name!r} "
                    f"(ovs-pki -u req+sign {name} switch; --ssl-key/--ssl-cert), or publish under the "
                    f"certificate's name (--fleet-name {client})")
        return (f"the fleet refuses this host's writes ({text.split('permission error: ', 1)[-1]}): its role "
                f"{role!r} does not allow them. Configure the fleet's roles with this vucompat: `vucompat fleet "
                "configure` (an older vucompat's roles lack columns this one writes; a fleet never configured "
                "has no roles)")
    if "not allowed" in text and "read only" in text:  # a read-only listener without a role
        return ("the fleet refuses this host's writes: --fleet names a read-only listener (the schedulers'). "
                "Give the agents' listener (role vucompat-host: docs/fleet.md)")
    return None


@dataclass(frozen=True)
class PublishResult:
    """What publish() did."""

    #: operations that changed rows (0: the fleet was up to date)
    written: int
    #: what the fleet holds for the host now: the next publish needs no read
    state: Published


def publish(session: Session, record: HostRecord, heartbeat: bool = False, attempts: int = 3,
            known: Published | None = None,
            lacking: Mapping[str, frozenset[str]] = MappingProxyType({})) -> PublishResult:
    """Make the fleet hold `record` in one transaction that writes only the
    difference from what it holds: `known` (a previous result's state), or else
    what it reads first; never the `lacking` columns (fleet_lacks: an older fleet
    schema). A write built on a stale picture (the row was deleted meanwhile;
    another host added the same mode first) reads and tries again.
    Raises OvsdbError (nothing half-written: one transaction), CorruptRowError."""
    for attempt in range(attempts):
        current = known or read_published(session, record, lacking)
        known = None
        ops = without_columns(publish_operations(record, current, now_ms(), heartbeat), lacking)
        written = sum(1 for op in ops if op["op"] != "wait")
        try:
            results = session.transact(ops) if ops else []
        except OvsdbError as err:
            stale_read = "constraint violation" in err.reason or "timed out" in err.reason  # index or wait
            if not stale_read or attempt == attempts - 1:
                raise
            continue
        return PublishResult(written, published_after(record, current, ops, results) if ops else current)
    raise AssertionError("unreachable")


class FleetPublisher:
    """Publishes one host into the fleet from a thread of its own, so the agent
    never waits for the fleet: offer() the newest record; it is published in one
    transaction, again whenever it changes, and its last_seen refreshed every
    heartbeat interval. Each publish diffs against what the last one wrote (no
    read), and every REREAD_EVERY publishes against what the fleet holds. While the fleet is
    unreachable it warns once, retries with backoff and, when the fleet returns,
    publishes what changed meanwhile. A refusal that is a configuration error
    (configuration_error: a certificate whose CN is not the host's name, roles
    missing, a read-only listener) is logged once, as an error that says what to
    change, and tried again every `config_retry` seconds only, on a new connection
    (which reads the certificate files again)."""

    def __init__(self, remotes: str, timeout: float = DEFAULT_TIMEOUT, ssl: SslOptions | None = None,
                 backoff_max: float = 8.0, config_retry: float = CONFIG_RETRY) -> None:
        self.session = Session(remotes, FLEET_DB, timeout, ssl)
        self.ssl = ssl
        self.backoff_max = backoff_max
        self.config_retry = config_retry
        self._record: HostRecord | None = None
        #: what the fleet holds for this host after the last successful publish (None: read first)
        self._state: Published | None = None
        self._since_read = 0
        #: the columns of this vucompat's fleet schema the fleet lacks (fleet_lacks), read with every read of its rows
        self.lacking: dict[str, frozenset[str]] = {}
        self._wake = threading.Condition()
        self._stop = False
        self._dirty = False
        #: for status and tests: successful publishes, and the error of the last failure (None once it works)
        self.published = 0
        self.last_error: str | None = None
        #: what to change, while the fleet refuses this host for a configuration error (None otherwise)
        self.config_error: str | None = None
        #: publishes tried (for tests: a configuration error is not retried in a loop)
        self.attempts = 0
        self._thread = threading.Thread(target=self._run, name="vucompat-fleet", daemon=True)
        self._thread.start()

    def offer(self, record: HostRecord) -> None:
        """Publish `record` (asynchronously) if it differs from the last one offered."""
        with self._wake:
            if record != self._record:
                self._record, self._dirty = record, True
                self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=10)
        self.session.close()

    def _run(self) -> None:
        backoff = 0.25
        next_heartbeat = 0.0
        retry_at = 0.0
        while True:
            with self._wake:
                if self.config_error is not None:  # a configuration error: only stop() cuts the wait short
                    while not self._stop and time.monotonic() < retry_at:
                        self._wake.wait(retry_at - time.monotonic())
                elif self.last_error is not None:  # failing: wait out the backoff (an offer or stop() cuts it short)
                    self._wake.wait(backoff)
                elif not self._dirty:
                    self._wake.wait(None if self._record is None else max(0.0, next_heartbeat - time.monotonic()))
                if self._stop:
                    return
                record, dirty, self._dirty = self._record, self._dirty, False
            if record is None:
                continue
            heartbeat = time.monotonic() >= next_heartbeat
            if not (dirty or heartbeat or self.last_error):
                continue
            known = self._state if self.last_error is None and self._since_read < REREAD_EVERY else None
            self._state = None
            self.attempts += 1
            try:
                if known is None:
                    self._note_lacking(fleet_lacks(self.session))
                self._state = publish(self.session, record, heartbeat=heartbeat, known=known,
                                      lacking=self.lacking).state
                self._since_read = self._since_read + 1 if known is not None else 0
            except Exception as err:  # noqa: BLE001 - unreachable, refused, a forged mode row: keep the agent up
                wrong = configuration_error(err, record.name, self.ssl)
                if wrong is not None:
                    if wrong != self.config_error:  # once per cause; the retries at debug level
                        log.error("%s: %s. This host keeps working but is not in the fleet; the agent tries "
                                  "again every %s (and at once when restarted)", self.session.remote or
                                  self.session.remotes[0], wrong, _duration(self.config_retry))
                    else:
                        log.debug("fleet publish refused again: %s", err)
                    self.config_error = self.last_error = wrong
                    retry_at = time.monotonic() + self.config_retry
                    self.session.close()  # the next try connects anew: a replaced certificate is read then
                    continue
                if self.last_error is None or self.config_error is not None:  # once per outage; the rest at debug
                    log.warning("fleet database unreachable or refusing (%s); this host keeps working and "
                                "publishes when it answers again", err)
                else:
                    log.debug("fleet publish failed again: %s", err)
                self.config_error = None
                self.last_error = str(err)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            if self.config_error is not None:
                log.warning("fleet database accepts this host's writes again: %s is published", record.name)
            elif self.last_error is not None:
                log.warning("fleet database reachable again: %s is published", record.name)
            self.config_error = self.last_error = None
            backoff = 0.25
            self.published += 1
            next_heartbeat = time.monotonic() + record.heartbeat_interval


    def _note_lacking(self, lacking: dict[str, frozenset[str]]) -> None:
        """Keep what the fleet's schema lacks; say it when that changes."""
        if lacking and lacking != self.lacking:
            log.warning("the fleet's schema is older than this vucompat's: it has no %s. This host publishes without "
                        "them (readers count what they need); run `vucompat fleet upgrade` (docs/fleet.md, "
                        "\"Upgrading the fleet's schema\")", ", ".join(f"{t}.{c}" for t, cs in sorted(lacking.items())
                                                                          for c in sorted(cs)))
        elif self.lacking and not lacking:
            log.warning("the fleet's schema is this vucompat's now: this host publishes every column")
        self.lacking = lacking


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
