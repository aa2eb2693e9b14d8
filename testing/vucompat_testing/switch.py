"""A real switch host for the tests, the demo and the benchmarks: ovsdb-server
(Open_vSwitch + registry), ovs-vswitchd-dpdk without hugepages, `vucompat agent`,
and what runs on it: dpdk-testpmd frontends and QEMU guests. Every process is
started here and stopped by pid. One switch at a time in a test module (module
scope), so two vswitchd never share the cores; the live migration tests, the demo
and bench/live_migration.py run two, each in a network namespace of its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

from vucompat.core import catalog
from vucompat_testing import EXAMPLES
from vucompat_testing.daemon import Daemon
from vucompat_testing.guest import Guest, GuestImage
from vucompat_testing.ovsdb_server import OvsdbSandbox, select
from vucompat_testing.processes import ENV, VUCOMPAT, alive, stop_pid
from vucompat_testing.vswitchd import VSWITCHD_DPDK, Testpmd, Vswitchd

# the agent probes the real backend (OVS 3.1 + DPDK 22.11 on Debian bookworm: virtio 0xd7c66a7ca,
# protocol 0x10cbf): latest resolves to upstream.ovs-dpdk.v2.15
LATEST = "upstream.ovs-dpdk.v2.15"


def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "",
               explain: Callable[[], str] | None = None) -> Any:
    """Call `check` until it returns something true; return that. Raises
    AssertionError after `timeout` seconds (or what `check` last raised, when it
    raised CalledProcessError, AssertionError or KeyError), with what `explain`
    returns then (e.g. Switch.explain: the state a failure needs to be understood)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (subprocess.CalledProcessError, AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}" + (f"\n{explain()}" if explain else ""))
        time.sleep(0.05)


@dataclass
class AgentProcess(Daemon):
    """`vucompat agent` on the databases `remote` serves, run from `directory`: its
    log there (agent.log, appended to across restarts), its relays in relays/ (served
    by the relay process it starts: log vucompat-relay.log, pid in relays/relayd.pid),
    and `directory` as OVS's run directory. `enforce`: --enforcement relay, else off;
    `extra`: more arguments (e.g. --fleet ...)."""

    directory: Path
    remote: str
    enforce: bool = True
    extra: list[str] = field(default_factory=list)
    stem: ClassVar[str] = "agent"

    def launch(self, timeout: float) -> None:
        self.spawn([VUCOMPAT, "agent", "--db", self.remote, "--log-file", str(self.log),
                    "--enforcement", "relay" if self.enforce else "off", "--relay-dir", str(self.directory / "relays"),
                    "--ovs-rundir", str(self.directory), *self.extra], env=ENV)

    def stop(self, timeout: float = 20.0, keep_relay: bool = False) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; then the relay process too
        (its relays close), unless `keep_relay` (a restart of the agent alone: the
        relays go on serving, as they do on a real host)."""
        super().stop(timeout)
        if not keep_relay:
            self.stop_relay()

    @property
    def relay_log(self) -> Path:
        return self.directory / "vucompat-relay.log"

    def relay_pid(self) -> int | None:
        """The pid of the relay process serving relays/, None when none runs."""
        try:
            pid = int((self.directory / "relays" / "relayd.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def stop_relay(self, timeout: float = 10.0) -> None:
        """Stop the relay process (SIGTERM, then SIGKILL), when one runs."""
        stop_pid(self.relay_pid(), timeout)

    def text(self) -> str:
        """Return everything the agent logged so far."""
        return self.log.read_text() if self.log.exists() else ""


@dataclass
class Switch:
    """One host: its ovsdb-server (`server`: Open_vSwitch and the registry),
    ovs-vswitchd-dpdk, the agent, and the testpmd frontends and QEMU guests started
    on it. start_host() starts one; stop() stops everything, guests first."""

    name: str
    directory: Path
    server: OvsdbSandbox
    vswitchd: Vswitchd
    agent: AgentProcess
    frontends: list[Testpmd] = field(default_factory=list)
    guests: list[Guest] = field(default_factory=list)
    #: called with the arguments and output of every ovs-vsctl that plug and unplug
    #: run (the demo shows them)
    echo: Callable[[Sequence[str], str], None] | None = None

    @property
    def remote(self) -> str:
        """The unix remote of its databases."""
        return self.server.unix_remote

    def vsctl(self, *args: str) -> str:
        """Run ovs-vsctl against this host (echoed); return its output."""
        out = self.vswitchd.vsctl(*args)
        if self.echo is not None:
            self.echo(args, out)
        return out

    def external_ids(self, name: str) -> dict[str, str]:
        """Return Interface `name`'s external_ids."""
        (row,) = select(self.remote, "Interface", ["external_ids"], "Open_vSwitch", [["name", "==", name]])
        return dict(row["external_ids"][1])

    def mirrored(self, name: str) -> dict[str, str]:
        """Return Interface `name`'s external_ids once the agent has recorded its port."""
        return eventually(lambda: (ids := self.external_ids(name)).get("vhost-compat-state") and ids,
                          what=f"the agent to record {name}")

    def port(self, name: str) -> dict[str, Any]:
        """Return `vucompat port show NAME --format json` of this host."""
        done = subprocess.run([VUCOMPAT, "port", "show", name, "--db", self.remote, "--format", "json"],
                              capture_output=True, text=True, env=ENV, timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def explain(self, name: str) -> str:
        """What a test that waited for port `name` in vain should print: its Interface
        status and external_ids, its registry row, and the last lines of the logs of
        ovs-vswitchd, the agent and the frontends whose socket it names."""
        lines = []
        rows = select(self.remote, "Interface", ["status", "external_ids", "options", "type"], "Open_vSwitch",
                      [["name", "==", name]])
        lines.append(f"Interface {name}: {rows[0] if rows else 'none'}")
        lines.append(f"registry Port: {self.port_row(name)}")
        tails = [("ovs-vswitchd", self.vswitchd.log), ("agent", self.agent.log), ("relay", self.agent.relay_log)]
        tails += [(f"frontend {f.name}", f.log) for f in self.frontends if name in f.name]
        for what, log in tails:
            text = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else ["(no log)"]
            lines += [f"--- last lines of {what} ({log}):", *text]
        return "\n".join(lines)

    def explain_start(self) -> str:
        """What a host that did not come up should print: the last lines of the logs
        of ovs-vswitchd and the agent."""
        lines = []
        for what, log in (("ovs-vswitchd", self.vswitchd.log), ("agent", self.agent.log)):
            text = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else ["(no log)"]
            lines += [f"--- last lines of {what} ({log}):", *text]
        return "\n".join(lines)

    def port_row(self, port: str) -> dict | None:
        """Return the registry's Port row of Interface `port`, or None."""
        rows = [r for r in select(self.remote, "Port") if r["interface_name"] == port]
        return rows[0] if rows else None

    def frontend(self, name: str, **kw: Any) -> Testpmd:
        """Start a testpmd frontend named `name` here (Testpmd's options in `kw`)."""
        testpmd = Testpmd(self.directory, name, **kw)
        self.frontends.append(testpmd)
        testpmd.start()
        return testpmd

    def plug(self, port: str, options: dict[str, str]) -> Path:
        """ovs-vsctl add-port as Nova/os-vif would: a dpdkvhostuser port with `options`
        (e.g. {"vhost-compat": MODE}); return the socket a guest's QEMU must connect
        to (the port's relay, when the agent put one on it)."""
        settings = [f"options:{k}={v}" for k, v in options.items()]
        self.vsctl("add-port", self.vswitchd.bridge, port, "--", "set", "Interface", port, "type=dpdkvhostuser",
                   *settings)
        return self.vswitchd.frontend_socket(port)

    def unplug(self, *ports: str) -> None:
        """ovs-vsctl del-port, for each port that exists."""
        for port in ports:
            self.vsctl("--if-exists", "del-port", port)

    def guest(self, image: GuestImage, port: str, socket: Path, name: str | None = None, **kw: Any) -> Guest:
        """Start a QEMU guest (Guest's options in `kw`, e.g. incoming=True) whose NIC
        connects to `socket`, named `name` (default <port>-on-<host>); return it."""
        guest = Guest(image, self.directory / "guests", socket, name=name or f"{port}-on-{self.name}", **kw)
        self.guests.append(guest)
        guest.start()
        return guest

    def stop_guests(self) -> None:
        for guest in self.guests:
            guest.stop()
        self.guests.clear()

    def stop(self) -> None:
        """Stop the guests, the agent, the frontends, ovs-vswitchd and ovsdb-server, by
        pid. Raises RuntimeError, once all are stopped, when ovs-vswitchd's datapath
        refused a port (Vswitchd.datapath_failures): a broken test environment."""
        self.stop_guests()
        self.agent.stop()
        for testpmd in self.frontends:
            testpmd.stop()
        self.vswitchd.stop()
        self.server.stop()
        if failures := self.vswitchd.datapath_failures():
            raise RuntimeError(f"ovs-vswitchd on {self.name} could not take ports into its datapath "
                               f"({self.vswitchd.log}):\n" + "\n".join(failures[:5]))


def start_host(name: str, directory: Path | None = None, *, enforce: bool = True,
               other_config: dict[str, str] | None = None, own_netns: bool = False, tables: Sequence[Path] = (),
               ovs_version: str | None = None, echo: Callable[[Sequence[str], str], None] | None = None,
               ovs_umask: int | None = None, agent_args: Sequence[str] = ()) -> Switch:
    """Start a switch host named `name` in `directory` (default: a new one under
    /tmp, as unix socket paths are limited to 108 bytes): ovsdb-server; the registry
    loaded with the shipped tables and `tables`; ovs-vswitchd-dpdk with
    `other_config` (with `own_netns`, in a network namespace of its own; with
    `ovs_umask`, that umask); the agent (`enforce`: relays on; more arguments in
    `agent_args`). Returns once the agent has probed the backend. With
    `ovs_version`, the Open_vSwitch row first records it, as ovs-ctl does. Raises
    RuntimeError when a program is missing; what started is stopped when a step fails."""
    for tool in ("ovsdb-server", "dpdk-testpmd"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed: run `make setup`")
    if not VSWITCHD_DPDK.exists():
        raise RuntimeError(f"{VSWITCHD_DPDK} is not installed: run `make setup` (openvswitch-switch-dpdk)")
    directory = directory or Path(tempfile.mkdtemp(prefix=f"vuc-{name}-", dir="/tmp"))
    server = OvsdbSandbox(directory)
    vswitchd = Vswitchd(directory, server.unix_remote, other_config=dict(other_config or {}), own_netns=own_netns,
                        umask=ovs_umask)
    host = Switch(name, directory, server, vswitchd,
                  AgentProcess(directory, server.unix_remote, enforce, list(agent_args)), echo=echo)
    try:
        server.start()
        if ovs_version is not None:
            vswitchd.vsctl("init", "--", "set", "Open_vSwitch", ".", f"ovs_version={ovs_version}", wait=False)
        subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote, "--host-name", name,
                        *(arg for t in tables for arg in ("--tables", str(t)))], check=True, capture_output=True,
                       env=ENV)
        vswitchd.start()
        host.agent.start()
        # the agent probes the backend at start: ports are resolved against what it really offers
        eventually(lambda: select(server.unix_remote, "Host")[0]["capabilities_source"] == "probed",
                   timeout=30, what=f"{name}'s agent to probe its backend", explain=host.explain_start)
    except BaseException:
        host.stop()
        raise
    return host


def start_switch(enforce: bool, name: str = "switch-1", other_config: dict[str, str] | None = None,
                 own_netns: bool = False, tables: Sequence[Path] = (EXAMPLES / "one-queue-pair",),
                 ovs_umask: int | None = None, agent_args: Sequence[str] = ()) -> Iterator[Switch]:
    """A generator (for a fixture): start_host(...) with `tables` (default: the
    one-queue-pair example); afterwards everything is stopped by pid and its
    directory removed."""
    host = start_host(name, enforce=enforce, other_config=other_config, own_netns=own_netns, tables=tables,
                      ovs_umask=ovs_umask, agent_args=agent_args)
    try:
        yield host
    finally:
        host.stop()
        shutil.rmtree(host.directory, ignore_errors=True)


def negotiated(switch: Switch, name: str, timeout: float = 30) -> tuple[list[str], dict[str, str]]:
    """Return the features OVS reports a frontend negotiated on `name` (Interface
    status), by name, and that status, once the frontend is connected."""
    def status() -> dict[str, str] | None:
        rows = select(switch.remote, "Interface", ["status"], "Open_vSwitch", [["name", "==", name]])
        found = dict(rows[0]["status"][1])
        return found if found.get("features") else None

    found = eventually(status, timeout=timeout, what=f"{name}'s frontend to connect")
    return catalog.mask_to_names(catalog.parse_hex(found["features"]), "virtio"), found
