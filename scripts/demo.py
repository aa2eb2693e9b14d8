#!/usr/bin/env python3
"""The main job (`make demo`): two hosts as two real ovsdb-servers, loaded with the
shipped tables, then negotiate, compare and a refused load, as a person would run
them; ports on ovs-vswitchd-dpdk and migration verdicts; then the fleet: a 3-server
OVSDB cluster over SSL that both hosts' agents publish into and a scheduler asks.
Everything runs under run/demo/ on private unix sockets and loopback TCP.

KEEP=1 leaves the servers running and says how to stop them; a second run first
stops what an earlier one left.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vucompat.core import catalog
from vucompat.core.tables import load_modeset
from vucompat_testing.guest import Guest, GuestError, ensure_guest
from vucompat_testing.ovsdb_server import OvsdbSandbox
from vucompat_testing.processes import ENV, VUCOMPAT, stop_pid
from vucompat_testing.switch import AgentProcess, Switch, start_host
from vucompat_testing.tablegen import table_text_until
from vucompat_testing.vswitchd import VSWITCHD_DPDK, Testpmd, Vswitchd

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "run" / "demo"
BOLD, DIM, PLAIN = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def real_ovs_version() -> str:
    """The version of the ovs-vswitchd-dpdk installed here, e.g. 3.1.0."""
    done = subprocess.run([str(VSWITCHD_DPDK), "--version"], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()[0].rsplit(" ", 1)[-1]


def screen(title: str) -> None:
    print(f"\n{BOLD}{'=' * 78}\n{title}\n{'=' * 78}{PLAIN}")


def say(text: str) -> None:
    print(f"{DIM}{text}{PLAIN}")


def vucompat(*args: str, expect: int = 0) -> None:
    shown = " ".join(shlex.quote(a).replace(str(RUN) + "/", "") for a in args)
    print(f"\n$ vucompat {shown}")
    done = subprocess.run([VUCOMPAT, *args], capture_output=True, text=True, env=ENV, cwd=RUN)
    print((done.stdout + done.stderr).rstrip().replace(str(RUN) + "/", ""))
    if done.returncode != expect:
        raise SystemExit(f"demo: expected exit code {expect}, got {done.returncode}")
    if expect:
        say(f"(exit code {done.returncode})")


def stop_leftovers() -> None:
    """Stop what an earlier `make demo KEEP=1` left running, by its pid files: the
    agent and the frontends first, then ovs-vswitchd, then the ovsdb-servers."""
    order = {"agent.pid": 0, "testpmd": 1, "ovs-vswitchd.pid": 2, "ovsdb-server.pid": 3, "fleet.pid": 3}
    pidfiles = sorted(RUN.glob("**/*.pid"), key=lambda p: next((v for k, v in order.items() if k in p.name), 1))
    for pidfile in pidfiles:
        try:
            stop_pid(int(pidfile.read_text()))
            say(f"stopped {pidfile.stem} (pid file {pidfile.parent.name}/{pidfile.name})")
        except ValueError:
            pass
    shutil.rmtree(RUN, ignore_errors=True)


SITE = """lineage = "example.ovs-dpdk"
summary = "A site's own OVS-DPDK build (a site table)"

[[mode]]
version = "1.0"
released = 2016-05-01
virtio_features = ["VIRTIO_NET_F_GUEST_CSUM", "VIRTIO_NET_F_MRG_RXBUF", "VIRTIO_NET_F_CTRL_VQ",
  "VIRTIO_NET_F_MQ", "VIRTIO_RING_F_INDIRECT_DESC", "VHOST_USER_F_PROTOCOL_FEATURES", "VIRTIO_F_VERSION_1"]
protocol_features = ["VHOST_USER_PROTOCOL_F_MQ", "VHOST_USER_PROTOCOL_F_REPLY_ACK"]
max_queue_pairs = 16
max_rx_queue_size = 1024
max_tx_queue_size = 1024
"""


def main() -> None:
    stop_leftovers()
    RUN.mkdir(parents=True)
    new = OvsdbSandbox(RUN / "compute-new", tcp=True)
    old = OvsdbSandbox(RUN / "compute-old", tcp=True)
    keep = os.environ.get("KEEP") == "1"
    started: list = []
    try:
        for server in (new, old):
            server.start()
        tables_old = RUN / "tables-compute-old"
        tables_old.mkdir()
        (tables_old / "upstream.ovs-dpdk.toml").write_text(
            table_text_until((REPO / "compat_tables" / "upstream.ovs-dpdk.toml").read_text(), "2.13"))
        caps_old = REPO / "examples" / "capabilities-ovs-2.13.toml"
        # what ovs-ctl records at start: the version of the ovs-vswitchd this host really runs (3.1)
        subprocess.run(["ovs-vsctl", f"--db={old.unix_remote}", "--no-wait", "init", "--", "set", "Open_vSwitch",
                        ".", f"ovs_version={real_ovs_version()}"], check=True)

        screen("1. Two hosts: two ovsdb-servers, each serving Open_vSwitch and the VuCompat registry")
        say(f"run directory: {RUN}")
        say(f"compute-new: {new.tcp_remote} and unix:compute-new/db.sock")
        say(f"compute-old: {old.tcp_remote} and unix:compute-old/db.sock   (an older install: its tables stop at 2.13)")
        vucompat("load", "--db", new.unix_remote, "--host-name", "compute-new")
        say("compute-old's upstream table stops at OVS 2.13, and it DECLARES what an OVS 2.13 backend offers")
        say("(examples/capabilities-ovs-2.13.toml: staged, not probed; scene 6 probes its real backend, OVS 3.1):")
        vucompat("load", "--db", old.unix_remote, "--host-name", "compute-old", "--tables", str(tables_old),
                 "--capabilities", str(caps_old))
        say("A second load is a no-op, and says so:")
        vucompat("load", "--db", old.unix_remote, "--tables", str(tables_old))

        screen("2. The modes on each host, and which its backend can run")
        vucompat("list", "--host", new.tcp_remote)
        vucompat("list", "--host", old.tcp_remote)

        screen("3. Before a live migration: the newest mode both hosts share")
        vucompat("negotiate", "--source", new.tcp_remote, "--dest", old.tcp_remote)
        say("Policy recommended: the same, without deprecated features (UFO, GSO, ANY_LAYOUT):")
        vucompat("negotiate", "--source", new.tcp_remote, "--dest", old.tcp_remote, "--policy", "recommended")
        say("The answer for Nova, as JSON:")
        vucompat("negotiate", "--source", new.tcp_remote, "--dest", old.tcp_remote, "--format", "json")

        screen("4. Why the newest mode cannot go to compute-old: compare, by feature name")
        vucompat("compare", "upstream.ovs-dpdk.v3.2", "upstream.ovs-dpdk.v2.13", "--db", new.tcp_remote)

        screen("5. A redefined mode is refused, and nothing is written; a wrong released one takes an erratum")
        site = RUN / "site-tables"
        site.mkdir()
        (site / "example.ovs-dpdk.toml").write_text(SITE)
        say("The site table example.ovs-dpdk v1.0 is loaded on compute-new ...")
        vucompat("load", "--db", new.unix_remote, "--tables", str(site))
        say("... then someone edits v1.0 in place (16 -> 8 queue pairs, REPLY_ACK dropped) and adds v1.1:")
        (site / "example.ovs-dpdk.toml").write_text(
            SITE.replace("max_queue_pairs = 16", "max_queue_pairs = 8")
            .replace(', "VHOST_USER_PROTOCOL_F_REPLY_ACK"', "")
            + '\n[[mode]]\nversion = "1.1"\nreleased = 2016-09-01\nenable = ["VIRTIO_NET_F_MTU"]\n')
        vucompat("load", "--db", new.unix_remote, "--tables", str(site), expect=2)
        say("v1.1 was not written either: the load is one transaction.")
        vucompat("show", "example.ovs-dpdk.v1.1", "--db", new.unix_remote, expect=2)

        say("The shipped tables state facts from code: every upstream mode is derived from the OVS and DPDK")
        say("lines its evidence cites, and released definitions that were wrong are corrected only by errata:")
        vucompat("lint", str(REPO / "compat_tables"))

        ports_screens(old, started)
        migration_screens(new, old, started)
        fleet_screens(new, old, started)
        live_migration_screens(started)
    finally:
        if keep:
            screen("KEEP=1: the servers keep running")
            for server in (new, old):
                print(f"  {server.directory.name}: ovsdb-server pid {server.pid}, {server.tcp_remote}, "
                      f"{server.unix_remote}")
            for thing in started:
                if hasattr(thing, "members"):  # the fleet cluster
                    print("  the fleet cluster: " + ", ".join(f"{m.directory.name} pid {m.pid} ({m.admin_remote})"
                                                               for m in thing.members if m.pid is not None))
                if hasattr(thing, "cluster") and hasattr(thing, "admin_remote"):  # its read relay
                    print(f"  the fleet's read relay: pid {thing.pid} ({thing.admin_remote})")
            print(f"  compute-old also runs ovs-vswitchd-dpdk, the agent and two testpmd frontends; try:\n"
                  f"    ovs-vsctl --db={old.unix_remote} list Interface\n"
                  f"    .venv/bin/vucompat port list --db {old.unix_remote}")
            print("Stop them all with: make demo-stop")
        else:
            for thing in reversed(started):  # the agent and frontends, then ovs-vswitchd
                thing.stop()
            for server in (new, old):
                server.stop()
            say("\nstopped everything the demo started, by pid; `make demo KEEP=1` leaves it running.")


def start_agent(server: OvsdbSandbox, started: list, enforce: bool = True) -> AgentProcess:
    """`vucompat agent` on `server`'s host, from its directory (log, pid file, relays)."""
    agent = AgentProcess(server.directory, server.unix_remote, enforce)
    agent.start()
    started.append(agent)
    return agent


def show_vsctl(args: tuple[str, ...] | list[str], output: str) -> None:
    """Print an ovs-vsctl command and its output as a person would see them."""
    shown = " ".join(shlex.quote(a).replace(str(RUN) + "/", "") for a in args)
    print(f"\n$ ovs-vsctl {shown}")
    print(output.rstrip().replace(str(RUN) + "/", ""))


def vsctl(server: OvsdbSandbox, *args: str) -> None:
    done = subprocess.run(["ovs-vsctl", f"--db={server.unix_remote}", *args], capture_output=True, text=True)
    show_vsctl(args, done.stdout + done.stderr)


def wait_probed(server: OvsdbSandbox, timeout: float = 30) -> None:
    """Until the agent's probe has recorded the backend's offer in the Host row."""
    from vucompat.ovsdb import rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (result,) = rpc.transact(server.unix_remote, "VuCompat", [
            {"op": "select", "table": "Host", "where": [], "columns": ["capabilities_source"]}])
        if any(row["capabilities_source"] == "probed" for row in result["rows"]):
            return
        time.sleep(0.1)
    raise SystemExit("demo: the agent did not probe the backend")


def wait_for(server: OvsdbSandbox, iface: str, key: str = "vhost-compat-state", timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(["ovs-vsctl", f"--db={server.unix_remote}", "get", "Interface", iface,
                               f"external_ids:{key}"], capture_output=True, text=True)
        if done.returncode == 0:
            return
        time.sleep(0.05)
    raise SystemExit(f"demo: the agent did not record {iface} within {timeout}s")


def wait_connected(server: OvsdbSandbox, iface: str, timeout: float = 30) -> None:
    """Until OVS reports the Interface's frontend connected, with what it negotiated."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(["ovs-vsctl", f"--db={server.unix_remote}", "get", "Interface", iface, "status"],
                              capture_output=True, text=True)
        if "status=connected" in done.stdout and "features=" in done.stdout:
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: {iface}'s frontend did not connect within {timeout}s")


def backend_virtio(server: OvsdbSandbox) -> int:
    """The virtio features the agent's probe found the backend offers (the Host row)."""
    from vucompat.ovsdb import rpc
    from vucompat.ovsdb.codec import decode_row

    (result,) = rpc.transact(server.unix_remote, "VuCompat", [
        {"op": "select", "table": "Host", "where": [], "columns": ["virtio_features"]}])
    return sum(1 << b for b in decode_row(result["rows"][0], "Host").virtio_features)


def frontend_features(log: Path, timeout: float = 10) -> tuple[int, int]:
    """(what a testpmd virtio-user driver asked for, what it was offered), from its debug log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = dict(re.findall(r"(guest|host)_features before negotiate = ([0-9a-f]+)", log.read_text()))
        if len(found) == 2:
            return int(found["guest"], 16), int(found["host"], 16)
        time.sleep(0.1)
    raise SystemExit(f"demo: no feature negotiation in {log}")


def guest(host: OvsdbSandbox, started: list, name: str, **kw: object) -> Testpmd:
    """A testpmd frontend standing for a VM's virtio-net driver (its pid file: testpmd-NAME.pid)."""
    frontend = Testpmd(host.directory, name, **kw)  # type: ignore[arg-type]
    frontend.start()
    started.append(frontend)
    return frontend


def ports_screens(host: OvsdbSandbox, started: list) -> None:
    screen("6. compute-old runs ovs-vswitchd-dpdk and the vucompat agent, which first probes the backend")
    say("(DPDK without hugepages, a netdev bridge br0; dpdk-testpmd plays each guest's virtio driver)")
    switch = Vswitchd(host.directory, host.unix_remote)
    switch.start()
    started.append(switch)
    start_agent(host, started)
    wait_probed(host)
    say("What the real backend offers (the agent's probe; `vucompat probe` does the same by hand), and so what")
    say("this host can run:")
    vucompat("list", "--host", host.unix_remote)
    say("By hand, on a short-lived port of each type (from OVS 3.2 they offer different features):")
    vucompat("probe", "--db", host.unix_remote, "--ovs-rundir", str(host.directory))
    say("The same offer as a ready-to-paste table entry, for a packager:")
    vucompat("dump", "--db", host.unix_remote, "--version", "3.1")

    screen("7. A port is added as usual, in an older mode; the frontend asks for more; the relay masks it")
    vsctl(host, "add-port", "br0", "vhu0", "--", "set", "Interface", "vhu0", "type=dpdkvhostuserclient",
          f"options:vhost-server-path={host.directory}/vm1.sock", "options:vhost-compat=upstream.ovs-dpdk.v2.8",
          "external_ids:iface-id=port-of-vm1")
    wait_for(host, "vhu0")
    say("The agent resolved the request, put a masking relay on the port's socket and mirrors it all next to")
    say("what os-vif wrote (iface-id stays):")
    vsctl(host, "get", "Interface", "vhu0", "external_ids")
    say("Then the VM starts; its driver asks for packed rings and in-order use, which 2.8 does not have:")
    frontend = guest(host, started, "vm1", queues=2, queue_size=512, packed=True,
                     eal_args=("--log-level=pmd.net.virtio.*:debug",))
    wait_connected(host, "vhu0")
    vsctl(host, "get", "Interface", "vhu0", "status")
    asked, offered = frontend_features(frontend.log)
    backend = backend_virtio(host)
    mode = load_modeset([REPO / "compat_tables"]).modes["upstream.ovs-dpdk.v2.8"].abi.virtio
    masked = asked & backend & ~mode
    say("By feature name, what the driver asked for and did not get:")
    say(f"  masked by the relay (the backend offers them, mode 2.8 does not): "
        f"{', '.join(catalog.mask_to_names(masked, 'virtio')) or 'nothing'}")
    say(f"  not offered to it for other reasons (the backend lacks them, or virtio-user itself drops them): "
        f"{', '.join(catalog.mask_to_names(asked & ~offered & ~masked, 'virtio'))}")
    vucompat("port", "show", "vhu0", "--db", host.unix_remote)

    screen("8. A mode this host cannot run is refused, with the reason; nothing else changes")
    say("upstream.ovs-dpdk.v2.11 offers HOST_UFO, which this backend no longer has:")
    vsctl(host, "add-port", "br0", "vhu1", "--", "set", "Interface", "vhu1", "type=dpdkvhostuserclient",
          f"options:vhost-server-path={host.directory}/vm2.sock", "options:vhost-compat=upstream.ovs-dpdk.v2.11")
    wait_for(host, "vhu1")
    vsctl(host, "get", "Interface", "vhu1", "external_ids")

    screen("9. A frontend that goes beyond its port's mode anyway is stopped, and the port says why")
    vucompat("load", "--db", host.unix_remote, "--tables", str(REPO / "examples" / "one-queue-pair"),
             "--tables", str(RUN / "tables-compute-old"))
    say("A port in a one-queue-pair mode; DPDK's virtio-user ignores the cap it is told and sets up two pairs:")
    vsctl(host, "add-port", "br0", "vhu2", "--", "set", "Interface", "vhu2", "type=dpdkvhostuserclient",
          f"options:vhost-server-path={host.directory}/vm3.sock", "options:vhost-compat=acme.ovs-dpdk.v1.0")
    wait_for(host, "vhu2")
    guest(host, started, "vm3", queues=2, queue_size=256)
    wait_for(host, "vhu2", "vhost-compat-error")
    vucompat("port", "show", "vhu2", "--db", host.unix_remote)
    say("Every port of the host:")
    vucompat("port", "list", "--db", host.unix_remote)
    say("The agent's log says the same, loudly:")
    print("\n".join(line for line in (host.directory / "agent.log").read_text().splitlines()
                    if " vhu" in line or "probe:" in line).replace(str(RUN) + "/", ""))

    screen("10. Ports plugged as unmodified os-vif plugs them: no option; the rules decide, and say which")
    say("os-vif writes no compat option. A port with none, whose Neutron port has no mode on another host,")
    say("gets the host's default policy (here pinned to a mode; `latest` by default):")
    vucompat("policy", "upstream.ovs-dpdk.v2.13", "--db", host.unix_remote)
    vsctl(host, "add-port", "br0", "vhu3", "--", "set", "Interface", "vhu3", "type=dpdkvhostuserclient",
          f"options:vhost-server-path={host.directory}/vm4.sock", "external_ids:iface-id=port-of-vm4")
    wait_for(host, "vhu3")
    vucompat("port", "show", "vhu3", "--db", host.unix_remote)
    vucompat("policy", "latest", "--db", host.unix_remote)
    say("A VM whose driver listens before its port exists. Plugged in the held form (no vhost-server-path,")
    say("the frontend's socket in external_ids), OVS never connects until the agent gives it the relay's")
    say("path, once: the driver's very first message goes through the relay, masked to the mode:")
    guest(host, started, "vm5", queues=1, queue_size=256, packed=True)
    vsctl(host, "add-port", "br0", "vhu4", "--", "set", "Interface", "vhu4", "type=dpdkvhostuserclient",
          f"external_ids:vhost-compat-frontend-path={host.directory}/vm5.sock", "external_ids:iface-id=port-of-vm5",
          "options:vhost-compat=upstream.ovs-dpdk.v2.8")
    wait_connected(host, "vhu4")
    vucompat("port", "show", "vhu4", "--db", host.unix_remote)

    screen("10b. The agent is restarted, killed, and the relay process upgraded in place: no VM notices")
    say("The relays run in a process of their own (`vucompat relay serve`, started by the agent or by")
    say("contrib/vucompat-relay.service); the agent only tells it which relays to serve.")
    agent = next(a for a in started if isinstance(a, AgentProcess) and a.directory == host.directory)
    log = switch.log

    def connections() -> int:  # ovs-vswitchd's line for each vhost-user connection it takes on vhu0's relay
        return log.read_text().count("relays/vhu0.sock' has been added")

    before = connections()
    agent.stop(keep_relay=True)
    agent.start()
    agent.kill()
    agent.stop(keep_relay=True)
    agent.start()
    vucompat("relay", "upgrade", "--relay-dir", str(host.directory / "relays"))
    vucompat("relay", "status", "--relay-dir", str(host.directory / "relays"))
    wait_connected(host, "vhu0")
    say(f"vm1's connections as ovs-vswitchd counts them: {before} before, {connections()} after a restart, a "
        "SIGKILL and a restart of the agent, and an upgrade of the relay process (tests/test_relay_process.py "
        "checks the same with a real guest's traffic)")


def migration_screens(new: OvsdbSandbox, old: OvsdbSandbox, started: list) -> None:
    screen("11. Before a live migration: may this port move? (what Nova asks; docs/nova-integration.md)")
    say("compute-new runs its agent too (no ovs-vswitchd in this demo: its ports are recorded, not running).")
    start_agent(new, started, enforce=False)
    say("A VM booted there with no compat option gets the newest mode that host can run:")
    vsctl(new, "--no-wait", "init", "--", "--may-exist", "add-br", "br0", "--", "add-port", "br0", "vm10",
          "--", "set", "Interface", "vm10", "type=dpdkvhostuserclient", f"options:vhost-server-path={new.directory}/vm10.sock")
    wait_for(new, "vm10")
    vucompat("check-migration", "--port", "vm10", "--source", new.tcp_remote, "--dest", old.tcp_remote, expect=1)
    say("For a VM that must be able to move between both hosts, ask for the mode first ...")
    vucompat("select-mode", "--scope", "everywhere", "--host", new.tcp_remote, "--host", old.tcp_remote)
    say("... add its port in that mode ...")
    vsctl(new, "--no-wait", "add-port", "br0", "vm11", "--", "set", "Interface", "vm11", "type=dpdkvhostuserclient",
          f"options:vhost-server-path={new.directory}/vm11.sock", "options:vhost-compat=upstream.ovs-dpdk.v2.13")
    wait_for(new, "vm11")
    say("... and it may move:")
    vucompat("check-migration", "--port", "vm11", "--source", new.tcp_remote, "--dest", old.tcp_remote)
    say("The same verdict as JSON, as the Python API returns it:")
    vucompat("check-migration", "--port", "vm10", "--source", new.tcp_remote, "--dest", old.tcp_remote,
             "--format", "json", expect=1)
    say("QEMU arguments that make the guest itself ask for no more than the mode (masking at the source):")
    vucompat("frontend-args", "upstream.ovs-dpdk.v2.13")
    say("And what a scheduler can filter on before asking any host (Placement traits of compute-old):")
    vucompat("traits", "--db", old.tcp_remote)


def fleet_screens(new: OvsdbSandbox, old: OvsdbSandbox, started: list) -> None:
    from vucompat_testing.fleet_cluster import FleetCluster, Relay
    from vucompat_testing.pki import Pki

    screen("12. The fleet: every host in one clustered database, for the scheduler (docs/fleet.md)")
    pki = Pki(RUN / "pki")
    ssl = {name: pki.identity(name) for name in ("fleet-server", "fleet-relay", "compute-new", "compute-old",
                                                 "scheduler")}
    say("Certificates from ovs-pki (`-u`: each CN is exactly the host's name, which RBAC checks).")
    cluster = FleetCluster(RUN / "fleet", ssl=ssl["fleet-server"])
    cluster.start()
    started.append(cluster)
    say("Three ovsdb-servers form a Raft cluster over SSL (vucompat fleet create-cluster / join-cluster / start):")
    vucompat("fleet", "status", "--ctl", str(cluster.leader().ctl))
    vucompat("fleet", "configure", "--db", cluster.leader().admin_remote,
             "--host-listener", "pssl:0:127.0.0.1", "--reader-listener", "pssl:0:127.0.0.2")
    say("(port 0: three servers share this machine, so the kernel picks each one's ports; "
        "a real deployment uses pssl:6650 and pssl:6651.)")
    agents_remote, readers = cluster.remotes("pssl:0:127.0.0.1"), cluster.remotes("pssl:0:127.0.0.2")
    say("Schedulers read from a read relay: an ovsdb-server holding a copy of the fleet that follows the cluster")
    say("through one member's read-only listener, and answers them itself (read-only, the reader's role):")
    relay = Relay(RUN / "fleet" / "relay", readers, ("pssl:0:127.0.0.3",), ssl["fleet-relay"])
    vucompat("fleet", "start-relay", "--rundir", str(relay.directory), "--cluster", readers,
             "--reader-listener", "pssl:0:127.0.0.3", *ssl["fleet-relay"].cli_args())
    relay.pid = relay.read_pidfile()
    started.append(relay)
    relay.wait_ready(30)
    vucompat("fleet", "relay-status", "--rundir", str(relay.directory))
    relayed = relay.remotes()

    say("Each host's agent is restarted with --fleet: it publishes its host, modes and ports over SSL, as itself:")
    for agent in [a for a in started if isinstance(a, AgentProcess)]:
        name = agent.directory.name
        agent.stop(keep_relay=True)  # the relays, in their own process, serve on
        agent.extra = [*agent.extra, "--fleet", agents_remote, "--fleet-name", name, "--pool", "pool-1",
                       "--heartbeat", "10", *ssl[name].cli_args()]
        agent.start()
    reader = ssl["scheduler"].cli_args()
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run([VUCOMPAT, "fleet", "hosts", "--fleet", relayed, *reader, "--format", "json"],
                              capture_output=True, text=True, env=ENV)
        if done.returncode == 0 and '"compute-old"' in done.stdout and '"compute-new"' in done.stdout:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: the hosts did not appear in the fleet: {done.stderr}")
        time.sleep(0.2)
    say("The scheduler asks the relay (with a certificate of its own; the relay answers from its copy):")
    vucompat("fleet", "hosts", "--fleet", relayed, *reader)
    vucompat("fleet", "hosts", "--fleet", relayed, "--can-run", "upstream.ovs-dpdk.v2.13", *reader)
    vucompat("fleet", "select-mode", "--fleet", relayed, "--scope", "everywhere", *reader)
    say("The same verdicts as asking the hosts, from the fleet database alone:")
    vucompat("fleet", "check-migration", "--fleet", relayed, "--port", "vm10", "--source", "compute-new",
             "--dest", "compute-old", *reader, expect=1)
    vucompat("fleet", "check-migration", "--fleet", relayed, "--port", "vm11", "--source", "compute-new",
             "--dest", "compute-old", *reader)
    vucompat("fleet", "report", "--fleet", relayed, *reader, expect=1)
    say("RBAC: compute-old's certificate may write only its own rows; a forged write to compute-new's is refused:")
    forged = '["VuCompat_Fleet", {"op": "update", "table": "Host", "where": [["name", "==", "compute-new"]], ' \
             '"row": {"pool": "stolen"}}]'
    key = ssl["compute-old"]
    print(f"\n$ ovsdb-client --private-key=pki/compute-old-privkey.pem ... transact {agents_remote.split(',')[0]} "
          f"'{forged}'")
    done = subprocess.run(["ovsdb-client", f"--private-key={key.private_key}", f"--certificate={key.certificate}",
                           f"--ca-cert={key.ca_cert}", "transact", agents_remote.split(",")[0], forged],
                          capture_output=True, text=True)
    print((done.stdout + done.stderr).strip())
    if "permission error" not in done.stdout + done.stderr:
        raise SystemExit("demo: the forged write was not refused")
    leader = cluster.leader()
    say(f"Kill the cluster's leader ({leader.directory.name}, SIGKILL): the other two elect a new one, the relay")
    say("follows (it moves to another member if it read from this one), and the scheduler's next question is")
    say("answered as before; its JSON says who answered and how fresh that copy is:")
    cluster.kill(leader)
    follower = cluster.wait_for_leader()
    vucompat("fleet", "status", "--ctl", str(follower.ctl))
    relay.wait_ready(30)
    vucompat("fleet", "hosts", "--fleet", relayed, "--can-run", "upstream.ovs-dpdk.v2.13", *reader)
    done = subprocess.run([VUCOMPAT, "fleet", "hosts", "--fleet", relayed, "--pool", "pool-1", *reader, "--format",
                           "json"], capture_output=True, text=True, env=ENV, check=True)
    print(f"\n$ vucompat fleet hosts --fleet {relayed} --pool pool-1 ... --format json | jq .freshness")
    print(json.dumps(json.loads(done.stdout)["freshness"], indent=2))




def live_migration_screens(started: list) -> None:
    screen("13. A VM really moves between two backends that differ (QEMU/TCG, a real Linux guest)")
    say("Two more hosts, each with Debian's ovs-vswitchd-dpdk and the agent: 'default' with default settings, and")
    say("'tso' with other_config:userspace-tso-enable=true, whose ports offer CSUM (and, on client ports, TSO):")
    image = ensure_guest()
    # each ovs-vswitchd-dpdk in a network namespace of its own: two userspace datapaths clash in one
    for name, settings in (("default", {}), ("tso", {"userspace-tso-enable": "true"})):
        started.append(start_host(name, RUN / name, own_netns=True, other_config=settings,
                                  ovs_version=real_ovs_version(), echo=show_vsctl))
    default, tso = started[-2:]
    vucompat("select-mode", "--scope", "hosts", "--host", default.server.unix_remote, "--host", tso.server.unix_remote)

    def boot(host: Switch, port: str, mode: str, **kw: object) -> Guest:
        """Nova's steps: plug the port in `mode` (os-vif), start QEMU on the socket it gives."""
        return host.guest(image, port, host.plug(port, {"vhost-compat": mode}), **kw)

    def migrate(vm: Guest, destination: Switch, port: str, mode: str) -> Guest:
        target = boot(destination, port, mode, incoming=True)
        target.wait_ready()
        info = vm.migrate_to(target, timeout=180)
        say(f"QMP query-migrate on the source: status {info['status']}, total {info.get('total-time')} ms, "
            f"downtime {info.get('downtime')} ms; the source is now '{vm.status()}'")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if not target.running() or target.status() != "inmigrate":
                    break
            except GuestError:  # it went away while asked
                break
            time.sleep(0.2)
        return target

    say("\nFirst without a mode: the VM's port on 'tso' is passthrough, so its guest negotiates CSUM.")
    vm = boot(tso, "vm20", "passthrough")
    vm.wait_booted()
    vucompat("check-migration", "--port", "vm20", "--source", tso.server.unix_remote, "--dest",
             default.server.unix_remote, expect=1)
    say("Migrated anyway (what happens without vucompat):")
    target = migrate(vm, default, "vm20", "passthrough")
    print("\n".join(f"  destination QEMU: {line}" for line in target.log_text().strip().splitlines()[-4:]))
    say(f"The destination QEMU {'is gone' if not target.running() else 'did not run the guest'}, and the source "
        "stays stopped: the VM is lost unless someone resumes it. The demo resumes it on the source:")
    last = vm.ticks()[-1]
    vm.cont()
    say(f"  source status {vm.status()}; the guest counts on: tick {last} -> {vm.wait_ticks(after=last)}")
    for thing in (target, vm):
        thing.stop()
    tso.unplug("vm20")
    default.unplug("vm20")

    say("\nThen in the mode select-mode chose for both hosts, behind the relays on both sides:")
    chosen = subprocess.run([VUCOMPAT, "select-mode", "--scope", "hosts", "--host", default.server.unix_remote,
                             "--host", tso.server.unix_remote, "--format", "json"], capture_output=True, text=True,
                            env=ENV)
    mode = json.loads(chosen.stdout)["mode"]
    vm = boot(tso, "vm21", mode)
    vm.wait_booted()
    vucompat("check-migration", "--port", "vm21", "--source", tso.server.unix_remote, "--dest",
             default.server.unix_remote, "--format", "json")
    last = vm.ticks()[-1]
    target = migrate(vm, default, "vm21", mode)
    target.wait_ticks(after=last, timeout=60)
    sent = target.traffic()[1]
    deadline = time.monotonic() + 30
    while target.traffic()[1] < sent + 10 and time.monotonic() < deadline:  # OVS takes a moment to poll it
        time.sleep(0.2)
    after = target.ticks()[-1]
    say(f"The guest runs on 'default' ({target.status()}): its counter went on from tick {last} (the source's last) "
        f"to {after}, and its NIC sends there (tx {sent} -> {target.traffic()[1]} packets taken by the destination):")
    print("\n".join("  " + line for line in target.serial_text().strip().splitlines()[-3:]))
    say("The destination port, as its agent recorded and verified it:")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the agent has seen the negotiation
        shown = subprocess.run([VUCOMPAT, "port", "show", "vm21", "--db", default.server.unix_remote, "--format",
                                "json"], capture_output=True, text=True, env=ENV)
        if shown.returncode == 0 and json.loads(shown.stdout).get("verification"):
            break
        time.sleep(0.2)
    vucompat("port", "show", "vm21", "--db", default.server.unix_remote)
    say("Nova then unplugs the source port; its Port row goes with it:")
    vm.stop()
    tso.unplug("vm21")
    vucompat("port", "list", "--db", tso.server.unix_remote)

if __name__ == "__main__":
    if sys.argv[1:] == ["--stop"]:
        stop_leftovers()
    else:
        main()
