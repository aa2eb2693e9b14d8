"""`vucompat agent`: watches the vhost-user Interfaces of the Open_vSwitch database
and the registry, and keeps every port's Port row and external_ids mirror right.

The loop: run both IDLs; whenever either database changed (or a periodic timer
fired), reconcile along the port route (docs/agent.md): read the views once, plan
(agent.plan, pure), commit the registry (ovsdb.ports), serve the plan's relays
(vhostuser.relay), commit the Interfaces (ovsdb.ports); then block on both
connections with a timer. A server that goes away is reconnected by the IDL's
own backoff; a failed write is retried with backoff; the plan is always made from
what both databases hold now, so nothing is resolved twice and nothing is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ovs.poller

from vucompat.core import catalog
from vucompat.core.fleet import DEFAULT_HEARTBEAT, HostRecord
from vucompat.core.mode import Mode
from vucompat.ovsdb.fleet_publish import FleetPublisher
from vucompat.vhostuser.probe import ProbeError, capabilities_of, probe_record, probe_types, settings_fingerprint
from vucompat.ovsdb.connection import Conflict, Connection
from vucompat.ovsdb.ports import (INTERFACE_COLUMNS, OVS_DB, PendingRedirects, commit_interfaces, commit_registry,
                                  finish_redirects, read_interfaces, read_ports, vhost_sock_dir, vswitchd_behind)
from vucompat.ovsdb.registry import read_host, record_probe
from vucompat.ovsdb.vswitch import read_switch
from vucompat.ovsdb.codec import optional
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError
from vucompat.ovsdb.tls import SslOptions
from vucompat.agent.guard import DEFAULT_OVS_SOCK_DIR_MODE, RelayAccess, SockDirGuard
from vucompat.agent.plan import Enforcement, Plan, plan, undecided
from vucompat.agent.sources import INCOMING_TTL, SourceFinder
from vucompat.core.rules import DefaultPolicy
from vucompat.agent import VERSION
from vucompat.agent.relayd import CONTROL_NAME, RelayClient
from vucompat.vhostuser.relay import RelayManager
from vucompat.core.modeset import Host
from vucompat.core.portview import Action, CreatePort, Mirror, Redirect, RemovePort, UpdatePort
from vucompat.core.resolve import NONCONFORMANT, REJECTED

log = logging.getLogger("vucompat.agent")
DEFAULT_RELAY_DIR = Path("/var/run/vucompat")
DEFAULT_OVS_RUNDIR = Path(os.environ.get("OVS_RUNDIR", "/var/run/openvswitch"))
#: reconcile at least this often even when nothing changed (ms)
PERIODIC_MS = 10_000
BACKOFF_MIN, BACKOFF_MAX = 0.25, 8.0
#: while the databases keep failing the same way, how often the agent says so again (seconds)
FAILING_REMINDER = 300.0
#: how long the agent lets ovs-vswitchd apply a change before it reconciles (ms)
YIELD_MS = 200
#: how long the agent waits after it is woken before it reads what changed (ms)
SETTLE_MS = 10
#: plans made per reconcile at most, when concurrent writers keep conflicting with the registry commit
REPLAN_ATTEMPTS = 5


@dataclass
class Agent:
    """One agent for one host. `db` serves the registry; `ovs_db` the
    Open_vSwitch database (default: the same server)."""

    db: str
    ovs_db: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    ssl: SslOptions | None = None
    #: masking relays: on (the default) unless the host turns enforcement off
    enforce: bool = True
    #: where the relays listen
    relay_dir: Path = DEFAULT_RELAY_DIR
    #: ovs-vswitchd's run directory (its dpdkvhostuser sockets are under it)
    ovs_rundir: Path = DEFAULT_OVS_RUNDIR
    #: with enforcement, the bits the agent leaves of the mode of OVS's dpdkvhostuser socket
    #: directory (None: leave it alone); and who may connect to the relays (agent.guard)
    ovs_sock_dir_mode: int | None = DEFAULT_OVS_SOCK_DIR_MODE
    relay_access: RelayAccess = field(default_factory=RelayAccess)
    #: where the relays run (agent.relayd): "spawn" (a relay process, started by the agent when
    #: none answers, with `relay_spawn`), "external" (one a service manager runs), or
    #: "in-process" (in the agent: its restart drops every VM's link; for tests of the agent alone)
    relay_process: str = "in-process"
    relay_spawn: list[str] | None = None
    #: the fleet cluster to publish into (comma-separated remotes); None: do not publish
    fleet: str | None = None
    #: this host's name in the fleet (default: its Host row's name); must be its certificate's CN
    fleet_name: str | None = None
    pool: str | None = None
    heartbeat: int = DEFAULT_HEARTBEAT
    #: seconds an Incoming_Port row waits for its port before the agent drops it (agent.sources)
    incoming_ttl: float = INCOMING_TTL
    registry: Connection | None = field(default=None, init=False)
    ovs: Connection | None = field(default=None, init=False)
    _stop: bool = field(default=False, init=False)
    _host: tuple[int, Host] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # stop() and the relay thread write here so a blocked poll wakes up at once
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self._violations: dict[str, str] = {}
        self._violations_lock = threading.Lock()
        self.relays: RelayManager | RelayClient | None = None
        if self.enforce and self.relay_process == "in-process":
            self.relays = RelayManager(self._on_violation, self.relay_access.mode, self.relay_access.group)
        elif self.enforce:
            self.relays = RelayClient(self.relay_dir / CONTROL_NAME, self._on_violation,
                                      self.relay_spawn if self.relay_process == "spawn" else None)
        self.guard = SockDirGuard(self.ovs_sock_dir_mode, self.relay_dir) if self.enforce else None
        self._probe_attempted: str | None = None
        self._pending: list[PendingRedirects] = []
        self._busy_since: float | None = None
        self.publisher = FleetPublisher(self.fleet, self.timeout, self.ssl) if self.fleet else None
        self.finder = SourceFinder(self.fleet, self.fleet_name, self.pool, self.ssl, self.incoming_ttl)

    def _on_violation(self, port: str, reason: str) -> None:
        """Called from the relay thread: recorded on the port by the next reconcile."""
        with self._violations_lock:
            self._violations[port] = reason
        os.write(self._wake_write, b"x")

    def stop(self, *_args: Any) -> None:
        self._stop = True
        os.write(self._wake_write, b"x")

    def run(self) -> None:
        """Run until stop() (SIGTERM, SIGINT)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        log.info("vucompat agent: registry %s, Open_vSwitch %s, enforcement %s, fleet %s", self.db,
                 self.ovs_db or self.db,
                 f"on (relays in {self.relay_dir}, {self.relay_process} relay process)" if self.enforce else "off",
                 f"{self.fleet} (pool {self.pool or '-'}, heartbeat {self.heartbeat}s)" if self.fleet else "off")
        if self.enforce:
            self.relay_access.prepare(self.relay_dir)
        backoff = BACKOFF_MIN
        seen: tuple[int, int] | None = None
        next_periodic = 0.0
        #: the failure last logged as a WARNING, when, and how many retries failed the same way since
        failing: tuple[str, float, int] | None = None
        while not self._stop:
            try:
                self._connect()
                assert self.registry is not None and self.ovs is not None
                self.registry.refresh()
                self.ovs.refresh()
                now = (self.registry.idl.change_seqno, self.ovs.idl.change_seqno)
                if self._ready() and self._pending:
                    self.finish_due_redirects()
                due = self._ready() and (now != seen or time.monotonic() >= next_periodic or self._violations)
                if due and self._vswitchd_busy():
                    # let ovs-vswitchd apply the change first (an add-port waits for it): woken by
                    # its cur_cfg update (or anything else), at the latest when the yield is over
                    self._block(YIELD_MS)
                    continue
                if due:
                    if self.guard is not None:  # before any relay: no server port is reachable around it
                        self.guard.check(vhost_sock_dir(self.ovs, self.ovs_rundir))
                    self.probe_if_changed()
                    self.reconcile()
                    self.publish()
                    seen = (self.registry.idl.change_seqno, self.ovs.idl.change_seqno)
                    next_periodic = time.monotonic() + PERIODIC_MS / 1000
                if failing is not None:
                    log.warning("databases reachable again (after %d failed retr%s): the agent works again",
                                failing[2] + 1, "y" if failing[2] == 0 else "ies")
                    failing = None
                backoff = BACKOFF_MIN
                self._block(50 if self._pending else PERIODIC_MS)
                # woken (most often by a change someone is making: an add-port): let its own
                # parts (ovs-vswitchd, the ovs-vsctl waiting for it) run first; the changes
                # that come meanwhile are read in one go
                self._sleep(SETTLE_MS / 1000)
            except OvsdbError as err:
                # said once per cause, and again every FAILING_REMINDER s while it lasts; the retries at debug
                if failing is None or failing[0] != str(err) or time.monotonic() - failing[1] >= FAILING_REMINDER:
                    again = f" (still, after {failing[2]} more retries)" if failing and failing[0] == str(err) else ""
                    log.warning("%s%s; retrying in %.2gs, up to every %gs", err, again, backoff, BACKOFF_MAX)
                    failing = (str(err), time.monotonic(), 0)
                else:
                    log.debug("%s; retrying in %.2gs", err, backoff)
                    failing = (failing[0], failing[1], failing[2] + 1)
                self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        if self.relays is not None:
            self.relays.stop()  # (a relay process serves on)
        if self.publisher is not None:
            self.publisher.stop()
        self.finder.close()
        self.close()
        log.info("vucompat agent: stopped")

    def reconcile(self) -> list[Action]:
        """One pass of the port route (docs/agent.md), from both databases as they
        are now: read, plan, commit the registry (on a conflict: read and plan again,
        up to REPLAN_ATTEMPTS times), serve the plan's relays, commit the Interfaces.
        Returns the actions taken. Raises OvsdbError; when the registry commit fails,
        nothing changed (relays and Interfaces included) and the relays' violations
        wait for the next reconcile."""
        assert self.registry is not None and self.ovs is not None
        started = time.perf_counter()
        try:
            self.finder.expire_incoming(self.registry)
        except OvsdbError as err:  # tried again next pass; an expired row decides nothing meanwhile
            log.debug("expiring Incoming_Port rows: %s", err)
        enforcement = self._enforcement()
        moving = frozenset(r.interface_uuid for pending in self._pending for r in pending.redirects)
        with self._violations_lock:
            violations, self._violations = self._violations, {}
        try:
            route = self._plan_and_commit_registry(enforcement, moving, violations)
        except BaseException:
            with self._violations_lock:  # not recorded: keep them (newer reasons first)
                self._violations = {**violations, **self._violations}
            raise
        for action in route.registry:
            _log_action(action)
        if self.relays is not None:
            # before the Interfaces point at them or their mirrors name them: a redirect
            # or a mirror waits for its relay to listen (no wait when nothing changed)
            if self.relays.ensure(dict(route.relays), timeout=5.0 if route.interfaces else 0.0):
                log.debug("route 4/5 relays: now serving %d", len(route.relays))
        pending = commit_interfaces(self.ovs, route.interfaces)
        if route.interfaces:
            log.debug("route 5/5 Interfaces: %d action(s) committed%s", len(route.interfaces),
                      f", {len(pending.redirects)} redirect(s) to finish" if pending else "")
        if pending is not None:
            self._pending.append(pending)
        for action in route.interfaces:
            _log_action(action)
        actions = route.actions
        log.debug("reconcile: %d action(s) in %.1f ms", len(actions), (time.perf_counter() - started) * 1000)
        return actions

    def _plan_and_commit_registry(self, enforcement: Enforcement | None, moving: frozenset[str],
                                  violations: dict[str, str]) -> Plan:
        """Steps 1 to 3 of the route: read the views, plan, commit the registry; on a
        conflict, read and plan again. Returns the committed plan. Raises OvsdbError."""
        assert self.registry is not None and self.ovs is not None
        deadline = time.monotonic() + self.timeout
        for attempt in range(1, REPLAN_ATTEMPTS + 1):
            interfaces, ports = read_interfaces(self.ovs), read_ports(self.registry)
            host = self._current_host()
            sources, default = self._decision_inputs(undecided(interfaces, ports), host)
            route = plan(interfaces, ports, host, enforcement, moving, violations, sources, default)
            if route.actions or attempt > 1:  # (a reconcile with nothing to do says only its last line)
                log.debug("route 1/5 read: %d interface(s), %d port(s)", len(interfaces), len(ports))
                log.debug("route 2/5 plan: %d registry action(s), %d relay(s), %d Interface action(s)",
                          len(route.registry), len(route.relays), len(route.interfaces))
            try:
                written = commit_registry(self.registry, route.registry, deadline)
            except Conflict as err:
                log.debug("route 3/5 registry: attempt %d: %s; reading and planning again", attempt, err)
                continue
            if written:
                log.debug("route 3/5 registry: %d action(s) committed", len(route.registry))
            return route
        raise self.registry.gave_up(REPLAN_ATTEMPTS)

    def _vswitchd_busy(self) -> bool:
        """Whether ovs-vswitchd is applying a change (cur_cfg behind next_cfg), for at
        most YIELD_MS: the agent's writes would make it do one more pass before the
        `ovs-vsctl` that made the change returns."""
        assert self.ovs is not None
        if not vswitchd_behind(self.ovs):
            self._busy_since = None
            return False
        if self._busy_since is None:
            self._busy_since = time.monotonic()
        return time.monotonic() - self._busy_since < YIELD_MS / 1000

    def _decision_inputs(self, to_decide: list[Any], host: Host) -> tuple[dict[str, Any], DefaultPolicy]:
        """The sources of the iface-ids of the Interfaces to decide, and the host's
        default policy (read only when there is something to decide)."""
        if not to_decide:
            return {}, DefaultPolicy()
        assert self.registry is not None
        ids = {iface.iface_id for iface in to_decide if iface.iface_id}
        sources = self.finder.sources(self.registry, ids, host.name) if ids else {}
        rows = self.registry.rows("Host")
        policy = rows[0].default_policy if rows else "latest"
        return sources, self.finder.default_policy(policy, host.name)

    def publish(self) -> None:
        """Offer this host's record to the fleet publisher (it writes only what changed,
        from its own thread: the agent never waits for the fleet)."""
        if self.publisher is None:
            return
        assert self.registry is not None
        host = self._current_host()
        rows = self.registry.rows("Host")
        row = rows[0] if rows else None
        self.publisher.offer(HostRecord(
            host=replace(host, name=self.fleet_name or host.name), ports=read_ports(self.registry), pool=self.pool,
            ovs_version=optional(row.ovs_version) if row else None,
            dpdk_version=optional(row.dpdk_version) if row else None,
            default_policy=row.default_policy if row else "latest",
            capabilities_source=row.capabilities_source if row else "none",
            heartbeat_interval=self.heartbeat, agent_version=VERSION))

    def finish_due_redirects(self) -> None:
        """Finish the redirects ovs-vswitchd has caught up with (see ovsdb.ports.apply)."""
        assert self.ovs is not None
        for pending in [p for p in self._pending if p.due(self.ovs)]:
            finish_redirects(self.ovs, pending)
            self._pending.remove(pending)

    def probe_if_changed(self) -> bool:
        """Probe the backend when ovs-vswitchd's version or a setting that changes its
        offer differs from what the Host row's last probe saw (at start, too).
        Returns whether a probe ran. Results are cached in the registry."""
        assert self.registry is not None and self.ovs is not None
        switch = self.ovs.rows("Open_vSwitch")
        if not switch:
            return False
        row = switch[0]
        fingerprint = settings_fingerprint(optional(row.ovs_version), optional(row.dpdk_version),
                                           dict(row.other_config))
        hosts = self.registry.rows("Host")
        if hosts and hosts[0].other_config.get("probe-fingerprint") == fingerprint:
            return False
        if fingerprint == self._probe_attempted:
            return False  # tried for these settings already (and failed, or is recorded)
        self._probe_attempted = fingerprint
        try:
            versions, other_config, bridges = read_switch(self.ovs.remote, self.timeout)
            if not bridges:
                log.info("probe: no netdev bridge yet; the backend will be probed when one exists")
                self._probe_attempted = None
                return False
            offers = probe_types(self.ovs.remote, bridges[0], self._server_sock_dir(),
                                 workdir=self.relay_dir if self.relay_dir.is_dir() else None)
        except ProbeError as err:
            log.warning("%s", err)
            return False
        record_probe(self.registry, capabilities_of(offers), probe_record(versions, other_config), versions=versions)
        for port_type, offer in offers.items():
            log.info("probe: %s ports offer virtio %s, protocol %s, %d queue pairs (%s)", port_type,
                     catalog.to_hex(offer.virtio), catalog.to_hex(offer.protocol), offer.queue_pairs, fingerprint)
        return True

    def _server_sock_dir(self) -> Path | None:
        """Where ovs-vswitchd serves dpdkvhostuser sockets, when the agent knows OVS's run directory."""
        if self.ovs is None or self.ovs_rundir is None:
            return None
        directory = Path(vhost_sock_dir(self.ovs, self.ovs_rundir))
        return directory if directory.is_dir() else None

    def _enforcement(self) -> Enforcement | None:
        if not self.enforce or self.ovs is None:
            return None
        return Enforcement(self.relay_dir, vhost_sock_dir(self.ovs, self.ovs_rundir))

    def close(self) -> None:
        for conn in (self.registry, self.ovs):
            if conn is not None:
                conn.close()
        self.registry = self.ovs = None

    def _current_host(self) -> Host:
        assert self.registry is not None
        seqno = self.registry.idl.change_seqno
        if self._host is None or self._host[0] != seqno:
            self._host = (seqno, read_host(self.registry))
        return self._host[1]

    def _connect(self) -> None:
        if self.registry is None:
            self.registry = Connection(self.db, self.timeout, self.ssl)
        if self.ovs is None:
            self.ovs = Connection(self.ovs_db or self.db, self.timeout, self.ssl, tables=INTERFACE_COLUMNS,
                                  database=OVS_DB)

    def _ready(self) -> bool:
        """Both IDLs connected and showing a full copy (not mid-resync)."""
        return all(conn is not None and conn.ready() for conn in (self.registry, self.ovs))

    def _block(self, ms: int) -> None:
        poller = ovs.poller.Poller()
        for conn in (self.registry, self.ovs):
            if conn is not None:
                conn.idl.wait(poller)
        poller.fd_wait(self._wake_read, ovs.poller.POLLIN)
        poller.timer_wait(ms)
        poller.block()
        try:
            os.read(self._wake_read, 4096)
        except BlockingIOError:
            pass

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            time.sleep(min(0.05, end - time.monotonic()))


def _mode_name(mode: Mode | None) -> str:
    return mode.name if mode else "passthrough"


def _log_action(action: Any) -> None:
    if isinstance(action, CreatePort):
        r = action.resolution
        rule = r.rule + (f": {r.rule_detail}" if r.rule_detail else "")
        if r.state == REJECTED:
            log.warning("%s: requested %s (%s): REJECTED: %s", action.interface.name, r.requested, rule, r.error)
        else:
            log.info("%s: requested %s -> %s (%s)", action.interface.name, r.requested, _mode_name(r.mode), rule)
        if action.fields.get("state") == NONCONFORMANT:
            log.error("%s: %s", action.interface.name, action.fields.get("error"))
    elif isinstance(action, UpdatePort):
        state = action.changes.get("state")
        if "violation" in action.changes:
            return  # the relay said it, and the state change that follows says it again
        if state == NONCONFORMANT:
            log.error("%s: %s", action.name, action.changes.get("error"))
        elif action.resolution is not None:
            log.info("%s: decided again on a rejected port: %s -> %s (%s, %s)", action.name,
                     action.resolution.requested, action.resolution.resolved, action.resolution.state,
                     action.resolution.rule)
        elif state is not None or "error" in action.changes:
            log.warning("%s: now %s%s", action.name, state or "unchanged state",
                        f": {action.changes['error']}" if action.changes.get("error") else "")
    elif isinstance(action, RemovePort):
        log.info("%s: interface gone: Port row removed", action.name)
    elif isinstance(action, Mirror):
        log.debug("%s: external_ids %s", action.interface, dict(action.set))
    elif isinstance(action, Redirect):
        log.info("%s: options:vhost-server-path -> %s (%s)", action.interface, action.path, action.why)
