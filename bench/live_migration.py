#!/usr/bin/env python3
"""Live migration with vucompat's relays on both sides against without: figures, not
a test.

Run: make bench-live   (or .venv/bin/python bench/live_migration.py [ROUNDS])
Two identical real backends (Debian's ovs-vswitchd-dpdk, default settings, the second
in a network namespace of its own), each with `vucompat agent` (enforcement on), and
two QEMU/TCG guests (vucompat_testing.guest): one on a port in a mode (the agent puts a
relay on each side's port), one on a passthrough port (no relay). They migrate back
and forth, alternating relay / no relay, ROUNDS times each (default 8). Each migration
is done as Nova does it: plug the destination port, start the destination QEMU
(-incoming), QMP migrate, unplug the source port. Figures from QMP query-migrate:
total time and downtime, median of each, and the ratio relay / no relay.
Target (issue 12): downtime ratio <= 1.10.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from dataclasses import dataclass

from vucompat_testing.guest import Guest, GuestImage, ensure_guest
from vucompat_testing.switch import Switch, start_host

MODE = "upstream.ovs-dpdk.v2.15"


@dataclass
class Vm:
    port: str
    mode: str
    guest: Guest
    host: Switch


def boot(image: GuestImage, host: Switch, port: str, mode: str, mac: str) -> Vm:
    guest = host.guest(image, port, host.plug(port, {"vhost-compat": mode}), name=f"{port}-0", mac=mac)
    guest.wait_booted()
    return Vm(port, mode, guest, host)


def migrate(image: GuestImage, vm: Vm, destination: Switch, index: int) -> dict:
    """Nova's flow; query-migrate's answer. `vm` then runs on `destination`."""
    target = destination.guest(image, vm.port, destination.plug(vm.port, {"vhost-compat": vm.mode}),
                               name=f"{vm.port}-{index}", mac=vm.guest.mac, incoming=True)
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
    hosts: list[Switch] = []
    try:
        hosts.append(start_host("bench-a"))
        hosts.append(start_host("bench-b", own_netns=True))
        a, b = hosts
        relayed = boot(image, a, "vm-relay", MODE, "52:54:00:00:00:11")
        plain = boot(image, a, "vm-plain", "passthrough", "52:54:00:00:00:12")
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
        for host in hosts:  # its guests first
            host.stop()
            shutil.rmtree(host.directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
