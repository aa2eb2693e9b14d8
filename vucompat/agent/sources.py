"""What the agent's plan needs to decide new ports (core.rules), read from the
databases: an iface-id's mode on another host (the source of a live migration), and
the host's default policy.

The source of an iface-id is looked up, in order:
1. an Incoming_Port row of this host's registry: an orchestrator named the source
   registry before plugging (`vucompat port expect`, Client.expect_port);
2. the fleet database, when the agent publishes to one: the live ports of other
   hosts with that iface-id (fleet Port external_ids). If the fleet does not answer,
   or hosts disagree, the source is unknown and the port is rejected (fail closed).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, TypeVar

from vucompat.core.migration import Scope, select_mode
from vucompat.core.portview import PortView
from vucompat.core.resolve import PASSTHROUGH, REJECTED
from vucompat.core.rules import POOL, DefaultPolicy, Source, SourceMode, SourceUnknown
from vucompat.ovsdb.connection import Connection
from vucompat.ovsdb.fleet_read import read_fleet, read_iface_ports
from vucompat.ovsdb.fleet_rows import now_ms
from vucompat.ovsdb.rpc import OvsdbError
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions

log = logging.getLogger("vucompat.agent")
T = TypeVar("T")

#: how long a fleet lookup may hold up a reconcile (seconds)
FLEET_READ_TIMEOUT = 5.0
#: how long an Incoming_Port row waits for its port (seconds) before the agent drops it: a
#: migration that never plugged (cancelled, failed, sent elsewhere) must not decide, days
#: later, a port plugged anew with the same Neutron port. A day: far beyond any live
#: migration Nova lets run (live_migration_completion_timeout scales with the guest's RAM:
#: 800 s per GiB), short enough that a leftover goes the same day
INCOMING_TTL = 86_400.0
#: after a lookup the fleet did not answer, how long the agent does not ask again (seconds):
#: reconciles go on at full speed while the fleet is down (its ports stay rejected meanwhile)
FLEET_RETRY_AFTER = 15.0


class SourceFinder:
    """The agent's lookups for new ports: sources() and default_policy()."""

    def __init__(self, fleet: str | None = None, fleet_name: str | None = None, pool: str | None = None,
                 ssl: SslOptions | None = None, incoming_ttl: float = INCOMING_TTL) -> None:
        self.fleet_name = fleet_name
        self.incoming_ttl = incoming_ttl
        self.pool = pool
        # a reading session: it prefers a server connected to its cluster, and says when none is
        self.session = Session(fleet, FLEET_DB, FLEET_READ_TIMEOUT, ssl, check_source=True) if fleet else None
        self._stale = False
        #: the fleet's last failure: (monotonic time, what it said)
        self._failed: tuple[float, str] | None = None

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def sources(self, registry: Connection, iface_ids: Iterable[str], own_name: str) -> dict[str, Source]:
        """iface-id -> its mode on another host, for those of `iface_ids` that have one
        (or whose lookup failed: SourceUnknown). `own_name`: this host's fleet name."""
        wanted = set(iface_ids)
        found: dict[str, Source] = {}
        for row in registry.rows("Incoming_Port") if wanted else ():
            if row.iface_id in wanted and not self.expired(row):
                digest = row.digest[0] if row.digest else None
                found[row.iface_id] = SourceMode(row.mode, digest, f"{row.source} (named by the orchestrator)")
        rest = sorted(wanted - set(found))
        if not rest or self.session is None:
            return found
        ports = self._ask(lambda session: read_iface_ports(session, rest), f"the source of iface-id(s) {', '.join(rest)}")
        if isinstance(ports, str):
            return {**found, **{i: SourceUnknown(f"the fleet did not answer: {ports}") for i in rest}}
        for iface_id, entries in ports.items():
            source = fleet_source([(h, p) for h, p in entries if h != (self.fleet_name or own_name)])
            if source is not None:
                found[iface_id] = source
        return found

    def expired(self, row: object, now: int | None = None) -> bool:
        """Whether Incoming_Port `row` waited longer than incoming_ttl for its port."""
        return (now if now is not None else now_ms()) - row.created > self.incoming_ttl * 1000  # type: ignore[attr-defined]

    def expire_incoming(self, registry: Connection) -> list[str]:
        """Delete the Incoming_Port rows that waited longer than incoming_ttl (one
        transaction), saying which; returns their iface-ids. Raises OvsdbError."""
        now = now_ms()
        expired = {row.iface_id: row for row in registry.rows("Incoming_Port") if self.expired(row, now)}
        if not expired:
            return []

        def delete(txn: object) -> None:
            for row in registry.rows("Incoming_Port"):
                if row.iface_id in expired and self.expired(row, now):
                    row.delete()

        registry.transact(delete)
        for iface_id, row in sorted(expired.items()):
            log.info("Incoming_Port of iface-id %s dropped: no port used it within %s of its recording (source %s): "
                     "a migration that never plugged here", iface_id, _hours(self.incoming_ttl), row.source)
        return sorted(expired)

    def default_policy(self, policy: str, own_name: str) -> DefaultPolicy:
        """The host's default policy as a request: `pool` is the newest mode every live
        host of this agent's pool runs, read from the fleet."""
        if policy != POOL:
            return DefaultPolicy(policy, policy)
        if self.session is None or self.pool is None:
            return DefaultPolicy(POOL, None, "the agent publishes to no fleet pool (--fleet and --pool)")
        hosts = self._ask(lambda session: read_fleet(session, pool=self.pool), f"the hosts of pool {self.pool}")
        if isinstance(hosts, str):
            return DefaultPolicy(POOL, None, f"the fleet did not answer: {hosts}")
        now = now_ms()
        live = [h.host for h in hosts if not h.stale(now) or h.name == (self.fleet_name or own_name)]
        if not live:
            return DefaultPolicy(POOL, None, f"pool {self.pool} has no live host in the fleet")
        selection = select_mode(Scope("everywhere"), live)
        if selection.mode is None:
            return DefaultPolicy(POOL, None, f"the {len(live)} live hosts of pool {self.pool} have no mode in common")
        return DefaultPolicy(POOL, selection.mode.name,
                             detail=f"{selection.mode.name}, the newest mode the {len(live)} live host(s) of "
                                    f"pool {self.pool} run")


    def _ask(self, read: Callable[[Session], T], what: str) -> T | str:
        """read(session), or why the fleet did not answer (a str). After a failure, the
        same reason is given without asking for FLEET_RETRY_AFTER seconds."""
        assert self.session is not None
        if self._failed is not None and time.monotonic() - self._failed[0] < FLEET_RETRY_AFTER:
            return self._failed[1]
        try:
            answer = read(self.session)
        except OvsdbError as err:
            if self._failed is None:
                log.warning("fleet: cannot read %s: %s; asking again in %gs at the earliest", what, err,
                            FLEET_RETRY_AFTER)
            self._failed = (time.monotonic(), err.reason)
            return err.reason
        if self._failed is not None:
            log.info("fleet: answers again")
            self._failed = None
        freshness, self.session.freshness = self.session.freshness, None  # each lookup says for itself
        stale = freshness is not None and freshness.stale_source
        if stale and not self._stale:
            log.warning("fleet: %s was read from a copy that may be stale: %s", what, freshness.why)
        elif self._stale and not stale:
            log.info("fleet: answered by a server connected to its cluster again")
        self._stale = stale
        return answer


def fleet_source(others: list[tuple[str, PortView]]) -> Source | None:
    """The source among other hosts' ports of one iface-id: the mode of its live ones
    (rejected ones never ran); None when there is none; unknown when they disagree."""
    live = [(host, port) for host, port in others if port.state != REJECTED]
    modes: dict[tuple[str, str | None], list[str]] = {}
    for host, port in live:
        key = (port.mode.name, port.mode.digest) if port.mode else (PASSTHROUGH, None)
        modes.setdefault(key, []).append(host)
    if not modes:
        return None
    if len(modes) > 1:
        said = "; ".join(f"{', '.join(sorted(h))} {name}" for (name, _digest), h in
                         sorted(modes.items(), key=lambda item: sorted(item[1])))
        return SourceUnknown(f"its ports on other hosts disagree: {said}")
    ((name, digest), hosts), = modes.items()
    return SourceMode(name, digest, f"host {', '.join(sorted(hosts))}, in the fleet")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"
