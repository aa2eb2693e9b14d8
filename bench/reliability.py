#!/usr/bin/env python3
"""Fault figures (issue 15, item 4): the faults users fear, on real parts, repeated,
with what held and what was lost. Prints figures; not a test.

Run: make bench-reliability [ROUNDS=10] [QUICK=1]
     (or .venv/bin/python bench/reliability.py [--rounds N] [--quick] [--only FAULT ...];
     a FAULT is a name below, or storm-flood, storm-connect, storm-hold for one kind of storm)
under `flock` when other users of this machine start OVS daemons too. ROUNDS rounds of
each fault (default 10; --quick: 2, and 3 s storms instead of 5 s); each kind of
storm runs half as many (at least 1): a storm lasts 5 s, and a relay that stops
answering costs a minute more. The default run takes about 10 minutes on 2 cores
(bench/README.md has the figures of a run).

Faults (one line each in the summary; a round is "held" when the promise was kept):
  kill-load      ovsdb-server SIGKILLed while `vucompat load` writes 2,000 modes, aimed
                 at the commit (as soon as the database file grows while the loader
                 waits), then 1-5 ms and 10-40 ms later: 3 kills a round. Held: the
                 old set or the new one after the restart, never a mix, and the file
                 reads back with `ovsdb-tool query` (also reported: right after the kill).
  loaders        2, 3, 4 concurrent `vucompat load`s of the same 509 modes into a
                 fresh server. Held: all succeed, one writes every mode, the others
                 none, no duplicate row, one Host row.
  agent-kill     the agent SIGKILLed twice a round (restarted at once, 0-50 ms after an
                 add-port returned) while 300 client ports are added with ovs-vsctl
                 (30 transactions of 10, ovs-vswitchd-dpdk, relays on; the relay
                 process, which outlives the agent, is left running). Held: every
                 port resolved exactly once (one Port row uuid ever seen, at most one
                 "requested" line in the agent's log), in its mode, still a
                 dpdkvhostuserclient port, moved onto its relay.
  db-restart     ovsdb-server stopped (SIGTERM) or killed (SIGKILL) and restarted under
                 the agent; a port added 0, 1 or 3 s after ovs-vswitchd is back.
                 Held: no port lost or resolved again, the new port resolved (figure:
                 how long after add-port, against the same without a restart).
  storm-flood    a hostile peer on one port's relay socket: 20 connections sending
                 need-reply requests, never reading an answer;
  storm-connect  unpaced bursts of 1,000 connects;
  storm-hold     600 connections opened and held silent (fd exhaustion).
                 The process that owns the relay sockets (found by the sockets'
                 inodes: the agent today, a relay process of its own later) gets the
                 open-file limit its shipped unit gives it (contrib/*.service; systemd's
                 default soft limit of 1,024 when the unit sets none). Meanwhile an
                 honest port's vhost-user set-up (6 messages through its relay to OVS)
                 is timed over and over, and a dpdk-testpmd frontend negotiates on a
                 third port. Held: every honest set-up answered within 1 s, testpmd
                 negotiated within its normal time (2x the slowest of 3 without a
                 storm, + 0.5 s), the honest port answers within 2 s after the peer
                 left, that process's fds back to their baseline (+2) within 10 s
                 and its RSS within 16 MB. A relay that does not answer 30 s after a
                 storm gets a new switch for the next round.
  fleet-stop     the fleet cluster's leader (3 ovsdb-servers, raft over SSL) SIGSTOPped
                 for 4 s, then SIGCONTed;
  fleet-kill     the leader SIGKILLed, restarted 1 s later;
                 while 3 real agents publish (heartbeat 1 s; a port added or deleted
                 on one of their hosts every 0.15 s, from 1 s before the fault to 1 s
                 after). The agents reach the cluster through the servers' unix
                 sockets: a restarted server keeps their paths, while its SSL listener
                 would get a new port from the kernel on this one machine. Held: once
                 the churn stops, every host's ports in the fleet are exactly those of
                 its registry within 60 s (nothing lost, duplicated or stale).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vucompat.ovsdb import rpc
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.ovsdb.session import Session
from vucompat_testing import REPO
from vucompat_testing.fleet_cluster import FleetCluster
from vucompat_testing.ovsdb_server import OvsdbSandbox, select
from vucompat_testing.peers import handshake
from vucompat_testing.pki import Pki
from vucompat_testing.procinfo import apply_nofile, describe, open_fds, rss_kb, socket_owners, unit_nofile
from vucompat_testing.processes import ENV, VUCOMPAT, alive
from vucompat_testing.switch import LATEST, AgentProcess, Switch, eventually, start_host
from vucompat_testing.tablegen import lineage_toml
from vucompat_testing.vswitchd import Testpmd

UNITS = REPO / "contrib"
FAULTS = ["kill-load", "loaders", "agent-kill", "db-restart", "storm", "fleet"]
#: the kinds of storm, each with its peers' arguments; `--only storm-KIND` runs one kind
STORM_KINDS = {"flood": ["--peers", "20"], "connect": ["--burst", "1000"], "hold": ["--connections", "600"]}


@dataclass
class Outcome:
    """One summary line: `rounds` injections, `held` of them kept the promise."""

    fault: str
    rounds: int = 0
    held: int = 0
    notes: str = ""
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return self.rounds - self.held


def say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def spread(values: list[float]) -> str:
    """'median X, max Y (n=N)' of durations in seconds."""
    if not values:
        return "none"
    return f"median {ms(statistics.median(values))}, max {ms(max(values))} (n={len(values)})"


def vucompat(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([VUCOMPAT, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def mode_names(remote: str) -> list[str]:
    return [r["name"] for r in select(remote, "Compat_Mode", ["name"])]


# ---------------------------------------------------------------------------------------------
# ovsdb-server SIGKILLed mid-load


def file_modes(db: Path) -> tuple[set[str] | None, str]:
    """The mode names `ovsdb-tool query` reads from the database file, or None and its error."""
    query = subprocess.run(["ovsdb-tool", "query", str(db), json.dumps(
        ["VuCompat", {"op": "select", "table": "Compat_Mode", "where": [], "columns": ["name"]}])],
                           capture_output=True, text=True)
    if query.returncode != 0:
        return None, query.stderr.strip()
    return {r["name"] for r in json.loads(query.stdout)[0]["rows"]}, ""


def kill_load(rounds: int, root: Path) -> list[Outcome]:
    tables = root / "tables-2000"
    tables.mkdir()
    (tables / "bench.vswitch.toml").write_text(lineage_toml(2000))
    server = OvsdbSandbox(root / "kill-load", vswitch=False)
    server.start()
    kills = in_window = old_set = new_set = mixed = read_back = strict = 0
    when = ("at the growth", "+1-5 ms", "+10-40 ms")
    by_when: dict[str, dict[str, int]] = {w: {"old": 0, "new": 0, "mixed": 0, "half-written": 0} for w in when}
    loader_exits: dict[int, int] = {}
    loader_waits: list[float] = []
    strict_errors: set[str] = set()
    outcome = Outcome("kill-load", rounds)
    try:
        done = vucompat("load", "--db", server.unix_remote, "--host-name", "kill-load")
        assert done.returncode == 0, done.stderr
        old = set(mode_names(server.unix_remote))
        rng = random.Random(15)
        for _round in range(rounds):
            round_held = True
            for label, delay in zip(when, (0.0, rng.uniform(0.001, 0.005), rng.uniform(0.010, 0.040))):
                before = server.registry_db.stat().st_size
                loader = subprocess.Popen([VUCOMPAT, "load", "--db", server.unix_remote, "--tables", str(tables),
                                           "--timeout", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env=ENV)
                deadline = time.monotonic() + 30
                while (server.registry_db.stat().st_size == before and loader.poll() is None
                       and time.monotonic() < deadline):
                    pass  # busy-wait: the write window is milliseconds
                if delay:
                    time.sleep(delay)
                grown, waiting = server.registry_db.stat().st_size > before, loader.poll() is None
                server.kill(signal.SIGKILL)
                killed = time.monotonic()
                kills += 1
                loader.communicate(timeout=60)
                # the record was being written, or written and not yet answered: the loader got no answer
                in_window += grown and waiting and loader.returncode != 0
                if waiting:
                    loader_waits.append(time.monotonic() - killed)
                loader_exits[loader.returncode] = loader_exits.get(loader.returncode, 0) + 1
                server.stop()
                on_file, error = file_modes(server.registry_db)  # the file as the crash left it
                if on_file is not None:
                    strict += 1
                else:
                    by_when[label]["half-written"] += 1
                    strict_errors.add(re.sub(r"\d+", "N", error.replace(str(server.registry_db), "FILE")))
                server.start()
                now = set(mode_names(server.unix_remote))
                rows = len(mode_names(server.unix_remote))
                if now == old:
                    old_set += 1
                    by_when[label]["old"] += 1
                elif old < now and len(now) == len(old) + 2000 == rows:
                    new_set += 1
                    by_when[label]["new"] += 1
                else:
                    mixed += 1
                    by_when[label]["mixed"] += 1
                    round_held = False
                # back to the old set, in a write either way: the server's next write is where it
                # drops a half-written record left by the crash
                rpc.transact(server.unix_remote, "VuCompat", [
                    {"op": "delete", "table": "Compat_Mode", "where": [["lineage", "==", "bench.vswitch"]]},
                    {"op": "update", "table": "Host", "where": [],
                     "row": {"external_ids": ["map", [["bench-kills", str(kills)]]]}}])
                on_file, error = file_modes(server.registry_db)
                if on_file == set(mode_names(server.unix_remote)) == old:
                    read_back += 1
                else:
                    round_held = False
                    say(f"  kill {kills} (+{delay * 1e3:.0f} ms): after the next write ovsdb-tool query "
                        + (f"read {len(on_file)} modes" if on_file is not None else f"failed: {error[:300]}"))
            outcome.held += round_held
    finally:
        server.stop()
    outcome.notes = (f"{kills} kills, {in_window} in the write window (the loader got no answer); old set "
                     f"{old_set}, new set {new_set}, mixed {mixed}; ovsdb-tool reads the file: right after the kill "
                     f"{strict}/{kills}, after the server's next write {read_back}/{kills}")
    say(f"  kills {kills} (3 a round: as the file grows, +1-5 ms, +10-40 ms); in the write window (the file had "
        f"grown, the loader got no answer) {in_window}",
        f"  after the restart: old set {old_set}, new set {new_set}, mixed {mixed}; by when the kill landed: "
        + "; ".join(f"{w}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for w, c in by_when.items()),
        f"  ovsdb-tool query reads the file as the crash left it: {strict}/{kills}"
        + (f"; the others: {'; '.join(sorted(strict_errors))}" if strict_errors else ""),
        f"  ovsdb-tool query reads the file after the server's next write, equal to what it serves: "
        f"{read_back}/{kills}",
        f"  loader exit codes {dict(sorted(loader_exits.items()))}; a loader whose server was killed while it "
        f"waited exited {spread(loader_waits)} after the kill (its --timeout: 2 s)")
    return [outcome]


# ---------------------------------------------------------------------------------------------
# concurrent loaders


def loaders(rounds: int, root: Path) -> list[Outcome]:
    tables = root / "tables-500"
    tables.mkdir()
    (tables / "bench.vswitch.toml").write_text(lineage_toml(500))
    outcome = Outcome("loaders", rounds)
    shapes: dict[str, int] = {}
    failures: list[str] = []
    expected = None
    for r in range(rounds):
        n = 2 + r % 3
        server = OvsdbSandbox(root / f"loaders-{r}", vswitch=False)
        server.start()
        try:
            start = time.monotonic()
            procs = [subprocess.Popen([VUCOMPAT, "load", "--db", server.unix_remote, "--tables", str(tables),
                                       "--host-name", "loaders", "--format", "json"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(n)]
            results = [p.communicate(timeout=120) for p in procs]
            elapsed = time.monotonic() - start
            codes = [p.returncode for p in procs]
            added = sorted((len(json.loads(out)["added"]) if code == 0 else -1)
                           for (out, _err), code in zip(results, codes))
            names = mode_names(server.unix_remote)
            hosts = len(select(server.unix_remote, "Host"))
            expected = expected or max(added)
            held = (codes == [0] * n and added == [0] * (n - 1) + [expected] and len(names) == len(set(names))
                    == expected and hosts == 1)
            outcome.held += held
            key = f"{n} loaders: added {added}"
            shapes[key] = shapes.get(key, 0) + 1
            if not held:
                failures.append(f"round {r}: exits {codes}, added {added}, rows {len(names)} "
                                f"({len(set(names))} distinct), Host rows {hosts}; "
                                + "; ".join(err.strip()[-200:] for _out, err in results if err.strip()))
            say(f"  round {r}: {n} loaders in {elapsed:.2f} s: exits {codes}, added {added}, rows {len(names)}, "
                f"Host rows {hosts}{'' if held else '  <- NOT HELD'}")
        finally:
            server.stop()
            shutil.rmtree(server.directory, ignore_errors=True)
    outcome.notes = (f"2-4 loaders of {expected} modes; one wrote all, the others none: {outcome.held}/{rounds}; "
                     f"duplicates {'none' if not failures else 'see above'}")
    for line in failures:
        say(f"  {line}")
    return [outcome]


# ---------------------------------------------------------------------------------------------
# a switch host (ovsdb-server, ovs-vswitchd-dpdk, the agent with relays)


def interfaces(host: Switch) -> dict[str, dict]:
    """Interface name -> {type, external_ids, options} of the whole switch, in one select."""
    rows = select(host.remote, "Interface", ["name", "type", "external_ids", "options"], "Open_vSwitch")
    return {r["name"]: {"type": r["type"], "ids": dict(r["external_ids"][1]), "options": dict(r["options"][1])}
            for r in rows}


def port_rows(host: Switch) -> list[tuple[str, str]]:
    """(interface_name, uuid) of every registry Port row."""
    return [(r["interface_name"], r["_uuid"][1]) for r in select(host.remote, "Port", ["_uuid", "interface_name"])]


def add_ports(host: Switch, names: list[str], compat: Callable[[int], str | None]) -> None:
    """One ovs-vsctl transaction adding dpdkvhostuserclient ports `names` (the plain
    form: the frontend's path at creation), waiting for ovs-vswitchd."""
    args: list[str] = []
    for i, name in enumerate(names):
        args += ["--", "add-port", host.vswitchd.bridge, name, "--", "set", "Interface", name,
                 "type=dpdkvhostuserclient", f"options:vhost-server-path={host.directory / 'fe' / name}.sock"]
        if (mode := compat(i)) is not None:
            args.append(f"options:vhost-compat={mode}")
    host.vsctl(*args)


def del_ports(host: Switch, names: list[str], batch: int = 50) -> None:
    for i in range(0, len(names), batch):
        args: list[str] = []
        for name in names[i:i + batch]:
            args += ["--", "--if-exists", "del-port", name]
        host.vsctl(*args)


def resolved_port(found: dict | None, expected_mode: str) -> str:
    """'' when the client Interface `found` is resolved to `expected_mode` and on its
    relay, else what is wrong."""
    if found is None:
        return "no Interface"
    if found["type"] != "dpdkvhostuserclient":
        return f"type {found['type']} (added as dpdkvhostuserclient)"
    ids = found["ids"]
    if ids.get("vhost-compat-state") != "applied":
        return f"state {ids.get('vhost-compat-state')}"
    if ids.get("vhost-compat-mode") != expected_mode:
        return f"mode {ids.get('vhost-compat-mode')}"
    if found["options"].get("vhost-server-path") != ids.get("vhost-compat-relay"):
        return "not on its relay"
    return ""


def agent_kill(rounds: int, root: Path) -> list[Outcome]:
    host = start_host("rel-agent", root / "agent-kill")
    (host.directory / "fe").mkdir()
    outcome = Outcome("agent-kill", rounds)
    once = twice = never = wrong = kills = unsettled_rounds = kills_halfway = ports_halfway = 0
    add_times, settle_times = [], []
    problems: list[str] = []
    rng = random.Random(4)
    try:
        for r in range(rounds):
            names = [f"k{r}p{i}" for i in range(300)]
            seen: dict[str, set[str]] = {}
            stop = threading.Event()

            def observe() -> None:  # every Port row uuid a name ever had, while ports are added
                while not stop.is_set():
                    try:
                        for name, uuid in port_rows(host):
                            seen.setdefault(name, set()).add(uuid)
                    except Exception:  # noqa: BLE001 - a read during a restart: try again
                        pass
                    time.sleep(0.1)

            watcher = threading.Thread(target=observe)
            watcher.start()
            kill_at = set(rng.sample(range(2, 28), 2))
            at_kill: list[int] = []
            start = time.monotonic()
            for b in range(30):
                add_ports(host, names[b * 10:(b + 1) * 10], lambda i: "latest" if i % 2 else None)
                if b in kill_at:
                    time.sleep(rng.uniform(0, 0.05))  # into whatever the agent is doing for this batch
                    host.agent.kill(signal.SIGKILL)
                    host.agent.stop(keep_relay=True)  # the agent alone: the relay process serves on
                    # what the dead agent left: client ports half-way onto their relays (type flipped)
                    halfway = sum(1 for n, i in interfaces(host).items()
                                  if n.startswith(f"k{r}p") and i["type"] == "dpdkvhostuser")
                    at_kill.append(halfway)
                    kills_halfway += halfway > 0
                    ports_halfway += halfway
                    host.agent.start()
                    kills += 1
            add_times.append(time.monotonic() - start)

            def unsettled() -> dict[str, str]:
                found = interfaces(host)
                return {n: why for n in names if (why := resolved_port(found.get(n), LATEST))}

            settled_in: float | None = None
            try:
                eventually(lambda: not unsettled(), timeout=15)
                settled_in = time.monotonic() - start
                settle_times.append(settled_in)
            except AssertionError:
                unsettled_rounds += 1
            # a port added now, once recorded, proves the agent has reconciled everything before it
            sentinel = f"k{r}sentinel"
            add_ports(host, [sentinel], lambda i: "latest")
            host.mirrored(sentinel)
            stop.set()
            watcher.join()
            for name, uuid in port_rows(host):
                seen.setdefault(name, set()).add(uuid)
            rows = port_rows(host)
            found = interfaces(host)
            log = host.agent.text()
            round_once = 0
            grouped: dict[str, list[str]] = {}  # what went wrong -> the ports it happened to
            for name in names:
                uuids = seen.get(name, set())
                lines = log.count(f" {name}: requested ")
                copies = sum(1 for n, _u in rows if n == name)
                problem = resolved_port(found.get(name), LATEST)
                if not uuids:
                    never += 1
                    grouped.setdefault(f"never resolved ({problem})", []).append(name)
                elif len(uuids) > 1 or lines > 1 or copies > 1:
                    twice += 1
                    grouped.setdefault(f"resolved again ({len(uuids)} Port row uuids seen, {lines} 'requested' "
                                       f"lines, {copies} row(s) now){f'; now {problem}' if problem else ''}",
                                       []).append(name)
                elif problem:
                    wrong += 1
                    grouped.setdefault(f"resolved once, but {problem}", []).append(name)
                else:
                    once += 1
                    round_once += 1
            outcome.held += round_once == 300
            settled = "not all resolved and on their relays 15 s later" if settled_in is None else \
                f"all resolved and on their relays {settled_in:.1f} s after the first add"
            say(f"  round {r}: SIGKILLs after batches {sorted(kill_at)} (ports half-way onto a relay at each: "
                f"{at_kill}); 300 ports added in {add_times[-1]:.1f} s, "
                f"{settled}; exactly once {round_once}/300")
            for what, which in grouped.items():
                problems.append(f"round {r}: {len(which)} port(s) {what}: {', '.join(which[:6])}"
                                + (", ..." if len(which) > 6 else ""))
                say(f"    {problems[-1]}")
            del_ports(host, [*names, sentinel])
            eventually(lambda: not any(n.startswith(f"k{r}") for n, _u in port_rows(host)), timeout=60,
                       what="the deleted ports' rows to go")
    finally:
        host.stop()
    total = 300 * rounds
    outcome.notes = (f"{kills} SIGKILLs, {kills_halfway} half-way through moves onto relays ({ports_halfway} "
                     f"ports); {total} ports: exactly once {once}, twice {twice}, never {never}, once but wrong "
                     f"now {wrong}")
    say(f"  {kills} SIGKILLs (each restarted at once) during {rounds} adds of 300 ports; adding took "
        f"{spread(add_times)}; all resolved and on their relays after {spread(settle_times)}, not within 15 s of "
        f"the last add in {unsettled_rounds} round(s)",
        f"  SIGKILLs that left client ports half-way onto their relays (type flipped to dpdkvhostuser, not yet "
        f"back): {kills_halfway} of {kills}, {ports_halfway} ports",
        f"  ports resolved exactly once {once}/{total}, twice {twice}, never {never}, once but wrong now {wrong}")
    return [outcome]


# ---------------------------------------------------------------------------------------------
# ovsdb-server restarted under the agent


def time_to_resolve(host: Switch, name: str, wait: bool, timeout: float = 60) -> tuple[float, float | None]:
    """Add client port `name`, with ovs-vsctl waiting for ovs-vswitchd to apply it
    (`wait`, as ovs-vsctl and os-vif's ovsdbapp do) or not: the seconds add-port
    took, and the seconds from its return to the agent's mirror on the Interface
    (None: not within `timeout`)."""
    start = time.monotonic()
    host.vswitchd.vsctl("add-port", host.vswitchd.bridge, name, "--", "set", "Interface", name,
                        "type=dpdkvhostuserclient", f"options:vhost-server-path={host.directory / 'fe' / name}.sock",
                        "options:vhost-compat=upstream.ovs-dpdk.v2.13", wait=wait)
    added = time.monotonic()
    try:
        eventually(lambda: "vhost-compat-state" in host.external_ids(name), timeout=timeout)
    except AssertionError:
        return added - start, None
    return added - start, time.monotonic() - added


#: how long after the restart the next port is added, in turn
PAUSES = (0.0, 1.0, 3.0)


def db_restart(rounds: int, root: Path) -> list[Outcome]:
    host = start_host("rel-db", root / "db-restart")
    (host.directory / "fe").mkdir()
    outcome = Outcome("db-restart", rounds)
    before_names = [f"r{i}" for i in range(20)]
    lost = again = unresolved = 0
    agent_times: list[float] = []  # a row added without waiting -> resolved
    from_restart: list[float] = []  # the restart -> resolved, for the rows added at once
    waited: list[float] = []  # the restart -> an add-port that waits for ovs-vswitchd returned
    baseline: list[float] = []
    try:
        add_ports(host, before_names, lambda i: "upstream.ovs-dpdk.v2.9")
        eventually(lambda: len({n for n, _u in port_rows(host)} & set(before_names)) == 20, timeout=60,
                   what="the first 20 ports resolved")
        for k in range(5):  # without a restart, for comparison
            time.sleep(0.5)
            if (t := time_to_resolve(host, f"base{k}", wait=False)[1]) is not None:
                baseline.append(t)
        known = dict(port_rows(host))
        for r in range(rounds):
            how = "SIGKILL" if r % 2 else "SIGTERM"
            if how == "SIGKILL":
                host.server.kill(signal.SIGKILL)
            host.server.stop()
            start = time.monotonic()
            host.server.start()
            pause = PAUSES[r % len(PAUSES)]
            time.sleep(pause)
            _adding, took = time_to_resolve(host, f"row{r}", wait=False)
            if took is None:
                unresolved += 1
            else:
                agent_times.append(took)
                if pause == 0:
                    from_restart.append(time.monotonic() - start)
            began = time.monotonic()
            adding, took_too = time_to_resolve(host, f"waited{r}", wait=True)
            waited.append(began + adding - start)
            unresolved += took_too is None
            rows = port_rows(host)
            now = dict(rows)
            found = interfaces(host)
            round_lost = sum(1 for n in known if n not in now or "vhost-compat-state" not in found.get(n, {}).get("ids", {}))
            round_again = sum(1 for n, u in known.items() if n in now and now[n] != u)
            round_again += len(rows) - len(now)  # two rows for one interface
            lost += round_lost
            again += round_again
            outcome.held += round_lost == 0 and round_again == 0 and took is not None and took_too is not None
            say(f"  round {r}: {how}; a port row added {pause:g} s after the restart resolved "
                f"{'never (60 s)' if took is None else f'{took:.2f} s'} later; then an add-port waiting for "
                f"ovs-vswitchd took {adding:.2f} s (returned {waited[-1]:.2f} s after the restart), its port resolved "
                f"{'never (60 s)' if took_too is None else f'{took_too:.2f} s'} after; ports lost {round_lost}, "
                f"resolved again {round_again}")
            known = dict(port_rows(host))
    finally:
        host.stop()
    slow = sum(1 for t in agent_times if t > 2.0)
    outcome.notes = (f"ports lost {lost}, resolved again {again}, never resolved {unresolved}; a port row added after "
                     f"a restart resolved in {spread(agent_times)} (without a restart {spread(baseline)}), over 2 s "
                     f"{slow}")
    say(f"  without a restart, a port row (added without waiting for ovs-vswitchd) is resolved {spread(baseline)} "
        f"after it is added",
        f"  after a restart: {spread(agent_times)}; over 2 s in {slow} of {rounds}, never {unresolved}; from the "
        f"restart itself (rows added at once): {spread(from_restart)}",
        f"  ovs-vswitchd's own reconnection: an add-port that waits for it returned {spread(waited)} after the "
        f"restart",
        f"  ports lost {lost}, resolved again {again} (20 + two per round, checked after every restart)")
    return [outcome]


# ---------------------------------------------------------------------------------------------
# a hostile vhost-user peer storm


STORM_PORTS = {"victim": "upstream.ovs-dpdk.v2.15", "honest": "upstream.ovs-dpdk.v2.9",
               "honestpmd": "upstream.ovs-dpdk.v2.15"}
HONEST_LIMIT = 1.0
#: how much the relays' process may grow over a storm and keep (queues it filled, memory Python keeps)
RSS_SLACK_MB = 16


@dataclass
class StormSite:
    """A switch with three dpdkvhostuser ports on relays: the victim (the hostile
    peer's), the honest one (raw set-ups, timed) and one for testpmd."""

    root: Path
    host: Switch | None = None
    relays: dict[str, str] = field(default_factory=dict)
    owners: list[int] = field(default_factory=list)
    limit_note: str = ""
    builds: int = 0

    def start(self) -> None:
        self.builds += 1
        self.host = start_host("rel-storm", self.root / f"storm-{self.builds}")
        try:
            self._prepare()
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        assert self.host is not None
        for name, mode in STORM_PORTS.items():
            self.host.vswitchd.add_vhost_port(name, compat=mode, client=False)
        self.relays = {name: self.host.mirrored(name)["vhost-compat-relay"] for name in STORM_PORTS}
        eventually(lambda: all(socket_owners(p) for p in self.relays.values()), what="the relays to listen")
        self.owners = sorted({pid for path in self.relays.values() for pid in socket_owners(path)})
        notes = []
        for pid in self.owners:  # the open-file limit the shipped unit would give that process
            limit, why = unit_nofile(UNITS, pid)
            got = apply_nofile(pid, limit)
            capped = f", hard capped at this machine's {got[1]}" if got[1] != limit[1] else ""
            notes.append(f"{describe(pid)}: open files limited to {got[0]} ({why}: {limit[0]}:{limit[1]}{capped})")
        self.limit_note = "; ".join(notes)
        for _ in range(3):  # warm-up
            handshake(self.relays["honest"])

    def stop(self) -> None:
        if self.host is not None:
            self.host.stop()
            self.host = None

    def fds(self) -> int:
        return sum(open_fds(pid) for pid in self.owners if alive(pid))

    def rss_mb(self) -> float:
        return sum(rss_kb(pid) for pid in self.owners if alive(pid)) / 1024

    def added_lines(self) -> int:
        """ovs-vswitchd's 'has been added' lines for the testpmd port's socket."""
        assert self.host is not None
        sock = self.host.directory / "vhost" / "honestpmd"
        return self.host.vswitchd.log.read_text(errors="replace").count(f"vHost Device '{sock}' has been added")

    def negotiate(self, tag: str, timeout: float) -> float | None:
        """Start a testpmd frontend on the testpmd port's relay; the seconds until
        ovs-vswitchd has the device (negotiated through the relay), or None."""
        assert self.host is not None
        before = self.added_lines()
        testpmd = Testpmd(self.host.directory, f"pmd{tag}", socket=Path(self.relays["honestpmd"]), server=False)
        start = time.monotonic()
        testpmd.start()
        try:
            eventually(lambda: self.added_lines() > before, timeout=timeout)
            return time.monotonic() - start
        except AssertionError:
            return None
        finally:
            if self.added_lines() <= before:
                testpmd.kill(signal.SIGKILL)  # stuck in its set-up: quit would not be read
            testpmd.stop()


def honest_loop(path: str, stop: threading.Event, results: list[tuple[float | None, str]]) -> None:
    """Time honest set-ups on `path` until `stop`: (seconds, '') or (None, the error)."""
    while not stop.is_set():
        try:
            results.append((handshake(path, timeout=3.0), ""))
        except Exception as err:  # noqa: BLE001 - a failure is a figure
            results.append((None, type(err).__name__))
        stop.wait(0.1)


@dataclass
class StormRound:
    """What one storm did to the honest port and to the relays' process."""

    peer: dict
    honest: list[tuple[float | None, str]]
    testpmd: float | None
    recovered: float | None
    fds_peak: int
    fds_after: int
    rss_after: float
    owners_after: list[int]

    @property
    def ok(self) -> list[float]:
        return [t for t, _e in self.honest if t is not None]

    @property
    def failed(self) -> list[str]:
        return [e for t, e in self.honest if t is None]


def storm_round(site: StormSite, kind: str, args: list[str], seconds: float, tag: str,
                base_fds: int) -> StormRound:
    """One storm of `kind` on the victim's relay while the honest port is timed and a
    testpmd negotiates; then how soon the honest port answers, and the fds."""
    results: list[tuple[float | None, str]] = []
    stop = threading.Event()
    peak = [0]

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], site.fds())
            except OSError:
                pass
            stop.wait(0.1)

    threads = [threading.Thread(target=honest_loop, args=(site.relays["honest"], stop, results), daemon=True),
               threading.Thread(target=sample, daemon=True)]
    peer = subprocess.Popen([sys.executable, "-m", "vucompat_testing.peers", kind, site.relays["victim"],
                             "--seconds", str(seconds), *args], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        for thread in threads:
            thread.start()
        time.sleep(min(0.5, seconds / 4))
        pmd = site.negotiate(tag, timeout=seconds + 5)
        out, _ = peer.communicate(timeout=seconds + 60)
    finally:
        stop.set()
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        for thread in threads:
            thread.join()
    left = time.monotonic()
    recovered = None  # right after the peer left: does the honest port answer, and when
    while time.monotonic() < left + 30:
        try:
            handshake(site.relays["honest"], timeout=3.0)
            recovered = time.monotonic() - left
            break
        except Exception:  # noqa: BLE001 - not yet
            time.sleep(0.2)
    owners = sorted({pid for path in site.relays.values() for pid in socket_owners(path)})
    if owners and owners != site.owners:  # the relays' process was replaced (restarted by its supervisor)
        site.owners = owners
    if recovered is not None:  # (a relay that does not answer holds what it holds)
        try:
            eventually(lambda: site.fds() <= base_fds + 2, timeout=10)
        except AssertionError:
            pass
    return StormRound(json.loads(out) if out.strip() else {}, results, pmd, recovered, peak[0], site.fds(),
                      site.rss_mb(), owners)


def storm(rounds: int, root: Path, seconds: float, only: str | None = None) -> list[Outcome]:
    site = StormSite(root)
    kinds = {kind: args for kind, args in STORM_KINDS.items() if only in (None, kind)}
    outcomes = []
    try:
        site.start()
        say(f"  relay sockets owned by {site.limit_note}")
        base_hs = [handshake(site.relays["honest"]) for _ in range(40)]
        base_pmd = [t for k in range(3) if (t := site.negotiate(f"b{k}", 30)) is not None]
        base_fds, base_rss = site.fds(), site.rss_mb()
        pmd_limit = 2 * max(base_pmd) + 0.5 if base_pmd else 5.0
        say(f"  without a storm: honest set-up {spread(base_hs)}; testpmd negotiated {spread(base_pmd)} (its normal "
            f"time: up to {pmd_limit:.2f} s); fds {base_fds}, RSS {base_rss:.1f} MB")
        for kind, args in kinds.items():
            outcome = Outcome(f"storm-{kind}", rounds)
            done: list[StormRound] = []
            base_fds_of_round: list[int] = []
            for r in range(rounds):
                if site.host is None:  # the last storm left no relay answering: a new switch
                    site.start()
                    base_fds, base_rss = site.fds(), site.rss_mb()
                first_owners = list(site.owners)
                base_fds_of_round.append(base_fds)
                one = storm_round(site, kind, args, seconds, f"{kind}{r}", base_fds)
                done.append(one)
                replaced = one.owners_after != first_owners
                held = (not one.failed and bool(one.ok) and max(one.ok) <= HONEST_LIMIT
                        and one.testpmd is not None and one.testpmd <= pmd_limit
                        and one.recovered is not None and one.recovered <= 2.0
                        and one.fds_after <= base_fds + 2 and one.rss_after <= base_rss + RSS_SLACK_MB)
                outcome.held += held
                say(f"  {kind} round {r}: peer {one.peer}; honest set-ups {len(one.ok)} ok"
                    f"{f' (median {ms(statistics.median(one.ok))}, max {ms(max(one.ok))})' if one.ok else ''}, "
                    f"{len(one.failed)} failed{f' {sorted(set(one.failed))}' if one.failed else ''}; testpmd "
                    f"{'never negotiated' if one.testpmd is None else f'negotiated in {one.testpmd:.2f} s'}; "
                    f"the honest port answers {'never (30 s)' if one.recovered is None else ms(one.recovered)} "
                    f"after the peer left; fds {base_fds} -> peak {one.fds_peak} -> {one.fds_after}, RSS "
                    f"{base_rss:.1f} -> {one.rss_after:.1f} MB"
                    + ("" if not replaced else f"; the relay socket's owner changed: {first_owners} -> "
                       f"{one.owners_after or 'nobody'}")
                    + ("" if held else "  <- NOT HELD"))
                if one.recovered is None or not one.owners_after:
                    site.stop()
            ok = [t for one in done for t in one.ok]
            failed = sum(len(one.failed) for one in done)
            total = sum(len(one.honest) for one in done)
            pmd = [one.testpmd for one in done if one.testpmd is not None]
            late = sum(1 for one in done if one.testpmd is None or one.testpmd > pmd_limit)
            dead = sum(1 for one in done if one.recovered is None)
            leaked = sum(1 for one, base in zip(done, base_fds_of_round) if one.fds_after > base + 2)
            outcome.notes = (f"honest set-ups during the storm: {len(ok)} ok ({spread(ok)}), {failed} failed of "
                             f"{total}; testpmd negotiated {len(pmd)}/{rounds} ({spread(pmd)}), late or never "
                             f"{late}; no answer 30 s after the storm {dead}/{rounds}; fds not back within 10 s "
                             f"{leaked}/{rounds} (peak {max(one.fds_peak for one in done)}); RSS after each round "
                             f"{', '.join(f'{one.rss_after:.1f}' for one in done)} MB (before {base_rss:.1f})")
            outcomes.append(outcome)
        say(f"  (the switch was built {site.builds} time(s))")
    finally:
        site.stop()
    return outcomes


# ---------------------------------------------------------------------------------------------
# the fleet's leader stopped and killed while agents publish

@dataclass
class AgentHost:
    """An ovsdb-server (Open_vSwitch + registry, no ovs-vswitchd) and its agent
    publishing into the fleet."""

    name: str
    server: OvsdbSandbox
    agent: AgentProcess | None = None
    ports: list[str] = field(default_factory=list)
    serial: int = 0
    changes: int = 0

    def vsctl(self, *args: str) -> None:
        subprocess.run(["ovs-vsctl", f"--db={self.server.unix_remote}", "--no-wait", *args], check=True,
                       capture_output=True, timeout=30)

    def registry_ports(self) -> set[str]:
        return {r["interface_name"] for r in select(self.server.unix_remote, "Port", ["interface_name"])}


def fleet_rows(admin: str) -> tuple[list[str], list[tuple[str, str]]]:
    session = Session(admin, FLEET_DB, 10)
    try:
        hosts, ports = session.transact([
            {"op": "select", "table": "Host", "where": [], "columns": ["name"]},
            {"op": "select", "table": "Port", "where": [], "columns": ["host", "interface_name"]}])
    finally:
        session.close()
    return [r["name"] for r in hosts["rows"]], [(r["host"], r["interface_name"]) for r in ports["rows"]]


def fleet(rounds: int, root: Path) -> list[Outcome]:
    pki = Pki(root / "pki")
    cluster = FleetCluster(root / "cluster", ssl=pki.identity("fleet-server"))
    hosts = [AgentHost(f"rel-host-{i}", OvsdbSandbox(root / f"host-{i}")) for i in range(3)]
    outcomes = [Outcome("fleet-stop", rounds), Outcome("fleet-kill", rounds)]
    figures: dict[str, dict[str, list]] = {o.fault: {"converged": [], "lost": [], "stale": [], "dups": []}
                                           for o in outcomes}
    try:
        cluster.start()
        # the agents publish through the servers' unix sockets: their paths stay when a server restarts,
        # while an SSL listener on this one machine gets a new port from the kernel at every start
        remotes = ",".join(m.admin_remote for m in cluster.members)
        for h in hosts:
            h.server.start()
            done = vucompat("load", "--db", h.server.unix_remote, "--host-name", h.name)
            assert done.returncode == 0, done.stderr
            h.vsctl("init")
            h.vsctl("add-br", "br0")
            h.agent = AgentProcess(h.server.directory, h.server.unix_remote, enforce=False,
                                   extra=["--fleet", remotes, "--pool", "rel", "--heartbeat", "1", "--timeout", "2"])
            h.agent.start()

        def admin() -> str:
            return ",".join(m.admin_remote for m in cluster.members if m.pid is not None)

        def churn(stop: threading.Event) -> None:
            i = 0
            while not stop.is_set():
                h = hosts[i % len(hosts)]
                i += 1
                try:
                    if h.ports and i % 3 == 0:
                        h.vsctl("--if-exists", "del-port", h.ports.pop(0))
                    else:
                        h.serial += 1
                        name = f"{h.name[-1]}p{h.serial}"
                        h.vsctl("add-port", "br0", name, "--", "set", "Interface", name, "type=dpdkvhostuserclient",
                                f"options:vhost-server-path={h.server.directory / name}.sock",
                                f"options:vhost-compat={'upstream.ovs-dpdk.v2.13' if i % 2 else 'latest'}")
                        h.ports.append(name)
                    h.changes += 1
                except subprocess.SubprocessError:
                    pass
                stop.wait(0.15)

        def outages() -> int:
            return sum(h.agent.text().count("fleet database unreachable") for h in hosts if h.agent is not None)

        def compare() -> tuple[int, int, int]:
            """(lost, stale, duplicated) of the fleet against every host's registry."""
            names, rows = fleet_rows(admin())
            lost = stale = 0
            for h in hosts:
                local = h.registry_ports()
                there = {iface for host, iface in rows if host == h.name}
                lost += len(local - there)
                stale += len(there - local)
            dups = (len(rows) - len(set(rows))) + (len(names) - len(set(names)))
            return lost, stale, dups

        def converge(since: float) -> tuple[float | None, tuple[int, int, int]]:
            deadline = time.monotonic() + 60
            while True:
                try:
                    state = compare()
                except Exception:  # noqa: BLE001 - the cluster still electing
                    state = (-1, -1, -1)
                if state == (0, 0, 0):
                    return time.monotonic() - since, state
                if time.monotonic() > deadline:
                    return None, state
                time.sleep(0.2)

        eventually(lambda: all(h.name in fleet_rows(admin())[0] for h in hosts), timeout=60,
                   what="every host in the fleet")
        for r in range(rounds):
            for outcome in outcomes:
                warned = outages()
                changes_before = sum(h.changes for h in hosts)
                stop = threading.Event()
                worker = threading.Thread(target=churn, args=(stop,))
                worker.start()
                time.sleep(1.0)
                leader = cluster.wait_for_leader()
                assert leader.pid is not None
                if outcome.fault == "fleet-stop":
                    os.kill(leader.pid, signal.SIGSTOP)
                    try:
                        time.sleep(4.0)
                    finally:
                        os.kill(leader.pid, signal.SIGCONT)
                else:
                    cluster.kill(leader)
                    time.sleep(1.0)
                    cluster.start_member(leader)
                # the changes stop with the fault: what is left to publish, the agents publish on their own
                ended = time.monotonic()
                stop.set()
                worker.join()
                changes = sum(h.changes for h in hosts) - changes_before
                took, (lost, stale, dups) = converge(ended)
                seen_down = outages() - warned
                after = cluster.wait_for_leader()
                fig = figures[outcome.fault]
                fig["converged"].append(took)
                fig["lost"].append(lost)
                fig["stale"].append(stale)
                fig["dups"].append(dups)
                outcome.held += took is not None and dups == 0
                ports = sum(len(h.ports) for h in hosts)
                say(f"  {outcome.fault} round {r}: leader {leader.directory.name} -> {after.directory.name}; "
                    f"{changes} port changes; agents that logged the fleet unreachable {seen_down}; the fleet equal "
                    f"to the registries ({ports} ports) {'never (60 s)' if took is None else f'{took:.2f} s'} after "
                    f"the fault ended; lost {lost}, stale {stale}, duplicated {dups}")
        for outcome in outcomes:
            fig = figures[outcome.fault]
            times = [t for t in fig["converged"] if t is not None]
            outcome.notes = (f"records lost {sum(x for x in fig['lost'] if x > 0)}, duplicated "
                             f"{sum(x for x in fig['dups'] if x > 0)}, stale {sum(x for x in fig['stale'] if x > 0)}"
                             f"; the fleet equal to the registries {spread(times)} after the fault ended")
    finally:
        for h in hosts:
            if h.agent is not None:
                h.agent.stop()
            h.server.stop()
        for member in cluster.members:
            if member.pid is not None:
                try:
                    os.kill(member.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        cluster.stop()
    return outcomes


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of each fault (default 10; --quick: 2); each storm runs half as many (at least "
                             "1)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of each, shorter storms")
    parser.add_argument("--only", nargs="+", choices=[*FAULTS, *(f"storm-{k}" for k in STORM_KINDS)],
                        help="run only these faults (storm-KIND: one kind of storm)")
    args = parser.parse_args()
    # stopped (make interrupted, a timeout): unwind, so every daemon started here is stopped by its pid
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rounds = args.rounds or (2 if args.quick else 10)
    seconds = 3.0 if args.quick else 5.0
    chosen = args.only or FAULTS
    # a storm round is three storms of 5 s and more (60 s and more each when a relay stops answering)
    scaled = {name: max(1, rounds // 2) for name in ("storm", *(f"storm-{k}" for k in STORM_KINDS))}
    runs: dict[str, Callable[[int, Path], list[Outcome]]] = {
        "kill-load": kill_load,
        "loaders": loaders,
        "agent-kill": agent_kill,
        "db-restart": db_restart,
        "storm": lambda n, root: storm(n, root, seconds),
        **{f"storm-{k}": (lambda kind: lambda n, root: storm(n, root, seconds, kind))(k) for k in STORM_KINDS},
        "fleet": fleet,
    }
    outcomes: list[Outcome] = []
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="vuc-rel-", dir="/tmp"))
    try:
        for name in chosen:
            n = scaled.get(name, rounds)
            say(f"== {name} ({n} round{'s' if n > 1 else ''}{' of each kind' if name == 'storm' else ''})")
            began = time.monotonic()
            (root / name).mkdir(parents=True)
            try:
                done = runs[name](n, root / name)
            except Exception:  # noqa: BLE001 - one fault's failure must not hide the others' figures
                traceback.print_exc()
                done = [Outcome(name, 0, 0, "ERROR: the bench itself failed (traceback above)")]
            for outcome in done:
                outcome.seconds = (time.monotonic() - began) / len(done)
            say(f"   ({time.monotonic() - began:.0f} s)")
            outcomes += done
    finally:
        if os.environ.get("KEEP") == "1":
            say(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say("", f"{'fault':<14} {'rounds':>6} {'held':>5} {'lost':>5}  notes")
    for o in outcomes:
        say(f"{o.fault:<14} {o.rounds:>6} {o.held:>5} {o.lost:>5}  {o.notes}")
    say(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
