#!/usr/bin/env python3
"""`ovs-vsctl add-port` of a vhost-user client port with the agent (enforcement on)
against without, side by side, on real parts (ovsdb-server, ovs-vswitchd-dpdk 3.1).
Prints figures; not a test.

Run: make bench   (or .venv/bin/python bench/plug.py [ROUNDS] [PORTS])
Each round adds PORTS ports one by one, as os-vif does (no frontend listening yet),
in three ways, then deletes them:
- without the agent, the plain form (type=dpdkvhostuserclient, vhost-server-path);
- with the agent, the plain form: the agent moves each port onto its relay by
  re-creating it (the type flip), which ovs-vswitchd applies while later add-ports wait;
- with the agent, the held form (no vhost-server-path, the frontend's socket in
  external_ids:vhost-compat-frontend-path): the agent sets the relay's path once.
- with the agent, a port it leaves alone (marked as its own probe port): what the agent's
  mere presence costs an add-port (its monitor, its wake-ups), before it does anything.
Target (issue 14): held form with the agent <= 1.2x the plain form without it (p50).
Also: from add-port returning to the port's relay path being set (held form).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

from vucompat.core.mode import PROBE_MARK
from vucompat_testing.ovsdb_server import select
from vucompat_testing.switch import Switch, start_host


def add(switch: Switch, name: str, held: bool, ignored: bool = False) -> float:
    """Add one port; return how long ovs-vsctl took (it waits for ovs-vswitchd). `ignored`:
    marked as a probe port, which the agent leaves alone (what its mere presence costs)."""
    socket = switch.directory / f"{name}.qemu.sock"
    settings = [f"external_ids:vhost-compat-frontend-path={socket}" if held else f"options:vhost-server-path={socket}",
                f"external_ids:iface-id={name}", *([f"external_ids:{PROBE_MARK}=bench"] if ignored else [])]
    start = time.perf_counter()
    switch.vswitchd.vsctl("add-port", switch.vswitchd.bridge, name, "--", "set", "Interface", name,
                          "type=dpdkvhostuserclient", *settings)
    return time.perf_counter() - start


def relay_path_set(switch: Switch, name: str) -> bool:
    (row,) = select(switch.remote, "Interface", ["options"], "Open_vSwitch", [["name", "==", name]])
    return "vhost-server-path" in dict(row["options"][1])


def clear(switch: Switch, names: list[str]) -> None:
    args = [arg for name in names for arg in ("--", "--if-exists", "del-port", name)]
    switch.vswitchd.vsctl(*args[1:])


#: seconds between two plugs in a round: each add-port alone, as Nova plugs one VM's ports
#: (0: back to back, where each add-port also waits for what vswitchd does for the last one)
GAP = float(os.environ.get("GAP", "0.3"))
#: the agent runs at the priority contrib/vucompat-agent.service gives it (Nice=)
UNIT = Path(__file__).resolve().parents[1] / "contrib" / "vucompat-agent.service"
NICE = int(os.environ.get("NICE") or re.search(r"^Nice=(-?\d+)", UNIT.read_text(), re.M).group(1))


def main(rounds: int = 5, ports: int = 20) -> None:
    switch = start_host("bench-plug")
    times: dict[str, list[float]] = {"plain, no agent": [], "plain, agent": [], "held, agent": [],
                                     "ignored by agent": []}
    held_ready: list[float] = []
    try:
        for r in range(rounds):
            switch.agent.stop(keep_relay=True)
            names = [f"p{r}n{i}" for i in range(ports)]
            times["plain, no agent"] += [add(switch, n, held=False) for n in names if not time.sleep(GAP)]
            clear(switch, names)
            switch.agent.start()
            if NICE:
                os.setpriority(os.PRIO_PROCESS, switch.agent.pid, NICE)
            time.sleep(1)  # connected and idle
            names = [f"p{r}a{i}" for i in range(ports)]
            times["plain, agent"] += [add(switch, n, held=False) for n in names if not time.sleep(GAP)]
            clear(switch, names)
            names = [f"p{r}i{i}" for i in range(ports)]
            times["ignored by agent"] += [add(switch, n, False, ignored=True) for n in names if not time.sleep(GAP)]
            clear(switch, names)
            for i in range(ports):
                name = f"p{r}h{i}"
                time.sleep(GAP)
                times["held, agent"].append(add(switch, name, held=True))
                returned = time.perf_counter()
                while not relay_path_set(switch, name):
                    if time.perf_counter() - returned > 10:
                        raise SystemExit(f"bench: {name}'s relay path not set within 10 s")
                held_ready.append(time.perf_counter() - returned)
            clear(switch, [f"p{r}h{i}" for i in range(ports)])
    finally:
        switch.stop()
        shutil.rmtree(switch.directory, ignore_errors=True)
    base = statistics.median(times["plain, no agent"])
    print(f"`ovs-vsctl add-port` of a dpdkvhostuserclient port, {rounds} alternating rounds of {ports} ports, "
          f"{GAP:g} s apart (the agent at nice {NICE}):")
    for what, values in times.items():
        values = sorted(values)
        p50, p99 = statistics.median(values), values[min(len(values) - 1, int(0.99 * (len(values) - 1)))]
        print(f"  {what:16} p50 {p50 * 1000:6.1f} ms   p99 {p99 * 1000:6.1f} ms   ratio of p50s {p50 / base:.2f}"
              + ("   [target <= 1.2]" if what == "held, agent" else ""))
    print(f"  held form: add-port return -> relay path set: p50 {statistics.median(held_ready) * 1000:.1f} ms   "
          f"max {max(held_ready) * 1000:.1f} ms (polled with one `select` after another)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
