#!/usr/bin/env python3
"""Live migration with vucompat's relays on both sides against without: figures, not
a test.

Run: make bench-live   (or .venv/bin/python bench/live_migration.py [ROUNDS])
Two identical real backends (Debian's ovs-vswitchd-dpdk, default settings, the second
in a network namespace of its own), each with `vucompat agent` (enforcement on), and
two QEMU/TCG guests (vucompat/guest.py): one on a port in a mode (the agent puts a
relay on each side's port), one on a passthrough port (no relay). They migrate back
and forth, alternating relay / no relay, ROUNDS times each (default 8). Each migration
is done as Nova does it: plug the destination port, start the destination QEMU
(-incoming), QMP migrate, unplug the source port. Figures from QMP query-migrate:
total time and downtime, median of each, and the ratio relay / no relay.
Target (issue 12): downtime ratio <= 1.10.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vucompat_testing.vswitchd import Vswitchd
from vucompat_testing.guest import Guest, GuestImage, ensure_guest
from vucompat_testing.ovsdb_server import OvsdbSandbox
from vucompat_testing.processes import stop_pid

VUCOMPAT = str(Path(sys.executable).parent / "vucompat")
ENV = {k: v for k, v in os.environ.items() if k != "VUCOMPAT_TABLES"}
MODE = "upstream.ovs-dpdk.v2.15"


@dataclass
class Host:
    name: str
    directory: Path
    server: OvsdbSandbox
    switch: Vswitchd
    agent: subprocess.Popen

    def vsctl(self, *args: str) -> str:
        return self.switch.vsctl(*args)

    def plug(self, port: str, mode: str) -> Path:
        """Add a dpdkvhostuser port in `mode`; the socket QEMU must connect to."""
        self.vsctl("add-port", "br0", port, "--", "set", "Interface", port, "type=dpdkvhostuser",
                   f"options:vhost-compat={mode}")
        return self.switch.frontend_socket(port)

    def unplug(self, port: str) -> None:
        self.vsctl("--if-exists", "del-port", port)

    def stop(self) -> None:
        stop_pid(self.agent.pid)
        self.switch.stop()
        self.server.stop()


def start_host(name: str, own_netns: bool) -> Host:
    directory = Path(tempfile.mkdtemp(prefix=f"vuc-bench-{name}-", dir="/tmp"))
    server = OvsdbSandbox(directory)
    server.start()
    subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote, "--host-name", name], check=True,
                   capture_output=True, env=ENV)
    switch = Vswitchd(directory, server.unix_remote, own_netns=own_netns)
    switch.start()
    agent = subprocess.Popen([VUCOMPAT, "agent", "--db", server.unix_remote, "--log-file", str(directory / "agent.log"),
                              "--relay-dir", str(directory / "relays"), "--ovs-rundir", str(directory)], env=ENV)
    return Host(name, directory, server, switch, agent)


@dataclass
class Vm:
    port: str
    mode: str
    guest: Guest
    host: Host


def boot(image: GuestImage, host: Host, port: str, mode: str, mac: str) -> Vm:
    guest = Guest(image, host.directory / "guests", host.plug(port, mode), name=f"{port}-0", mac=mac)
    guest.start()
    guest.wait_booted()
    return Vm(port, mode, guest, host)


def migrate(image: GuestImage, vm: Vm, destination: Host, index: int) -> dict:
    """Nova's flow; query-migrate's answer. `vm` then runs on `destination`."""
    target = Guest(image, destination.directory / "guests", destination.plug(vm.port, vm.mode),
                   name=f"{vm.port}-{index}", mac=vm.guest.mac, incoming=True)
    target.start()
    target.wait_ready()
    before = vm.guest.ticks()[-1]
    info = vm.guest.migrate_to(target, timeout=180)
    if info.get("status") != "completed":
        raise SystemExit(f"bench: migration of {vm.port} failed: {info}")
    target.wait_ticks(after=before, timeout=90)
    vm.guest.stop()
    vm.host.unplug(vm.port)
    vm.guest, vm.host = target, destination
    return info


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    image = ensure_guest()
    a, b = start_host("bench-a", own_netns=False), start_host("bench-b", own_netns=True)
    vms: list[Vm] = []
    try:
        time.sleep(3)  # the agents' probes
        relayed = boot(image, a, "vm-relay", MODE, "52:54:00:00:00:11")
        plain = boot(image, a, "vm-plain", "passthrough", "52:54:00:00:00:12")
        vms = [relayed, plain]
        results: dict[str, list[dict]] = {"relay": [], "no relay": []}
        for i in range(1, rounds + 1):
            for kind, vm in (("relay", relayed), ("no relay", plain)):
                destination = b if vm.host is a else a
                results[kind].append(migrate(image, vm, destination, i))
            print(f"round {i}: " + ", ".join(f"{k} total {r[-1]['total-time']} ms downtime {r[-1]['downtime']} ms"
                                             for k, r in results.items()), flush=True)
        medians = {kind: {field: statistics.median(r[field] for r in runs) for field in ("total-time", "downtime")}
                   for kind, runs in results.items()}
        print(f"\nlive migration between two identical backends, {rounds} rounds each, alternating:")
        for kind, figures in medians.items():
            print(f"  {kind:9s} total time median {figures['total-time']:7.0f} ms   downtime median "
                  f"{figures['downtime']:6.0f} ms")
        for field in ("total-time", "downtime"):
            ratio = medians["relay"][field] / medians["no relay"][field]
            print(f"  ratio relay / no relay, {field}: {ratio:.2f}")
        return 0
    finally:
        for vm in vms:
            vm.guest.stop()
        for host in (a, b):
            host.stop()
            shutil.rmtree(host.directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
