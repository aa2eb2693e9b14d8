#!/usr/bin/env python3
"""The fleet database at scale: benchmarks. Prints figures; not a test.

Run: make bench-fleet   (or .venv/bin/python bench/fleet.py [HOSTS ...], default 1000 3000 10000)
For each fleet size: a fresh 3-server cluster (raft and listeners over SSL, ovs-pki
certificates), the load generator (`python -m vucompat_testing.fleetgen`) publishing
HOSTS x 50 modes x 20 ports through the servers' admin sockets, a heartbeat of every
host, a port change published with and without reading first, one-shot CLI queries,
then a warm scheduler asking hosts --can-run and select-mode.
Readers go where docs/fleet.md puts them (issue 16): a read relay (ovsdb-server with a
relay: source, on the members' read-only listener) runs from before the load and
follows it; the warm scheduler, the one-pool replica and the cold CLI queries read
through it over SSL with the scheduler's certificate (`fleet hosts` is also asked of
the members, for comparison). Measured on the relay: its RSS once the fleet is
loaded, how long a write on the leader takes to show in it, and how long a fresh
relay takes to hold the whole fleet.
Targets (issue 7): warm `hosts --can-run` and `select-mode` p99 < 50 ms.
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from vucompat.core.fleet import hosts_that_can_run, select_fleet_mode
from vucompat_testing.fleetgen import FleetShape, lineage_modes, synthetic_record
from vucompat.core.migration import Scope
from vucompat_testing.fleet_cluster import FleetCluster, Relay
from vucompat_testing.pki import Pki
from vucompat.ovsdb.cluster import change_election_timer, cluster_status
from vucompat.ovsdb.fleet_config import configure
from vucompat.ovsdb.fleet_publish import publish
from vucompat.ovsdb.fleet_read import FleetView, read_can_run
from vucompat.ovsdb.fleet_rows import heartbeat_operations, now_ms
from vucompat.ovsdb.rpc import OvsdbError
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions
from vucompat.ovsdb.schema import FLEET_DB

READERS = "pssl:0:127.0.0.2"
RELAY_LISTENER = "pssl:0:127.0.0.3"
VUCOMPAT = str(Path(sys.executable).parent / "vucompat")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


def rss_mb(pid: int) -> float:
    return int(subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout) / 1024


def pool_replica(remotes: str, ssl: SslOptions, pool: str = "pool-3") -> tuple[float, float, int]:
    """A scheduler that cares about one pool: (sync seconds, retained KB per host, hosts held)."""
    start = time.perf_counter()
    view = FleetView(remotes, 120, ssl, pools=[pool])
    held = len(view.hosts())
    sync = time.perf_counter() - start
    view.close()
    return sync, retained_kb_per_host(remotes, ssl, [pool]), held


def retained_kb_per_host(remotes: str, ssl: SslOptions, pools: list[str] | None) -> float:
    """What a FleetView of `pools` keeps once synced, per host it holds (tracemalloc:
    the memory still allocated after the sync, not the peak of reading it)."""
    import gc
    import tracemalloc

    tracemalloc.start()
    view = FleetView(remotes, 120, ssl, pools=pools)
    held = len(view.hosts())
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    view.close()
    return kept / 1024 / max(1, held)


def host_count(remote: str) -> int:
    """How many Host rows the server at `remote` holds (0 while it has no fleet yet)."""
    session = Session(remote, FLEET_DB, 60)
    try:
        return len(session.transact([{"op": "select", "table": "Host", "where": [], "columns": ["name"]}])[0]["rows"])
    except OvsdbError:
        return 0
    finally:
        session.close()


def relay_lag(session: Session, relay: Relay, uuids: dict[str, str], samples: int = 20) -> list[float]:
    """Seconds from a heartbeat committed by the cluster to the same value read from
    `relay` (polled every millisecond on its admin socket), for `samples` hosts."""
    reader = Session(relay.admin_remote, FLEET_DB, 60)
    lags = []
    try:
        for name in list(uuids)[:: max(1, len(uuids) // samples)][:samples]:
            stamp = now_ms() + 10**6  # a value no earlier heartbeat wrote
            session.transact(heartbeat_operations(name, uuids[name], stamp))
            start = time.perf_counter()
            where = [["_uuid", "==", uuids[name]], ["last_seen", "==", stamp]]
            while not reader.transact([{"op": "select", "table": "Host", "where": where, "columns": ["name"]}])[0]["rows"]:
                if time.perf_counter() - start > 60:
                    raise RuntimeError(f"{relay.directory}: heartbeat of {name} not relayed within 60 s")
                time.sleep(0.001)
            lags.append(time.perf_counter() - start)
    finally:
        reader.close()
    return lags


def fresh_relay_sync(source: str, directory: Path, ssl: SslOptions, hosts: int, limit: float) -> tuple[float | None, int]:
    """A new relay of a loaded fleet, from `source`: (seconds until it holds every
    host, or None when it did not within `limit` s; how many times it was dropped by
    its probe of a silent source meanwhile, from its log)."""
    relay = Relay(directory, source, (RELAY_LISTENER,), ssl)
    start = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    relay.launch(60)  # (not start(): it waits for a relay that may never sync)
    try:
        while host_count(relay.admin_remote) < hosts:
            if time.perf_counter() - start > limit:
                return None, relay.log.read_text().count("no response to inactivity probe")
            time.sleep(0.05)
        return time.perf_counter() - start, relay.log.read_text().count("no response to inactivity probe")
    finally:
        relay.stop()


def run(hosts: int, files: dict[str, SslOptions], root: Path) -> dict[str, float]:
    shape = FleetShape(hosts=hosts)
    cluster = FleetCluster(root / f"cluster-{hosts}", ssl=files["fleet-server"])
    cluster.start()
    relay = None
    try:
        configure(cluster.leader().admin_remote, ["pssl:0:127.0.0.1"], [READERS])
        admin = ",".join(m.admin_remote for m in cluster.members)
        source = cluster.remotes(READERS)
        # the relay the schedulers read through, up before the load, as in a running region
        relay = Relay(root / f"relay-{hosts}", source, (RELAY_LISTENER,), files["fleet-relay"])
        relay.start(60)
        relayed = relay.remotes()
        # the load generator as docs/fleet.md runs it: one pipelined connection through the admin sockets
        done = subprocess.run([sys.executable, "-m", "vucompat_testing.fleetgen", "--fleet", admin, "--hosts",
                               str(hosts), "--timeout", "60"], capture_output=True, text=True, check=True)
        progress = json.loads(done.stdout)
        assert progress["hosts"] == hosts, progress
        records = [synthetic_record(i, shape) for i in range(hosts)]  # the same hosts, to heartbeat and change
        session = Session(admin, FLEET_DB, 60)
        rows = session.transact([{"op": "select", "table": "Host", "where": [], "columns": ["_uuid", "name"]}])[0]
        uuids = {r["name"]: r["_uuid"] for r in rows["rows"]}
        beat = [heartbeat_operations(r.name, uuids[r.name], now_ms()) for r in records]  # as agents send them
        start = time.perf_counter()
        assert all(session.transact_many(beat))
        heartbeat_s = time.perf_counter() - start
        lags = relay_lag(session, relay, uuids)
        relay_rss = rss_mb(relay.pid)
        # one port of a host changes: publish after reading the fleet's rows, or from what the last
        # publish wrote (the agent's way), alternating over 50 hosts
        with_read, from_state = [], []
        for rec in records[:: max(1, hosts // 50)][:50]:
            state = publish(session, rec).state
            for flip, times in ((True, with_read), (False, from_state)):
                port = sorted(rec.ports)[0]
                rec = replace(rec, ports={**rec.ports, port: replace(rec.ports[port], error=None if flip else "x")})
                start = time.perf_counter()
                state = publish(session, rec, known=None if flip else state).state
                times.append(time.perf_counter() - start)
        one_shot = []
        for mode in random.Random(1).sample([m.name for lin in range(4) for m in lineage_modes(lin, 50)], 7):
            start = time.perf_counter()
            read_can_run(session, mode)
            one_shot.append(time.perf_counter() - start)
        session.close()
        cli = {}
        scheduler = files["scheduler"]
        tls = scheduler.cli_args()
        start = time.perf_counter()
        done = subprocess.run([VUCOMPAT, "fleet", "hosts", "--fleet", admin, "--timeout", "120"], capture_output=True)
        assert done.returncode == 0, done.stderr
        cli["hosts (members)"] = time.perf_counter() - start
        for what, args in (("hosts --can-run", ["hosts", "--can-run", "synthetic1.ovs-dpdk.v45"]),
                           ("hosts --pool", ["hosts", "--pool", "pool-3"]), ("hosts", ["hosts"]),
                           ("select-mode --pool", ["select-mode", "--scope", "everywhere", "--pool", "pool-3"]),
                           ("check-migration", ["check-migration", "--port", "vhu00001-00", "--source", "host-00001",
                                                "--dest", "host-00005"]),
                           ("report", ["report"])):
            start = time.perf_counter()
            done = subprocess.run([VUCOMPAT, "fleet", *args, "--fleet", relayed, *tls, "--timeout", "120"],
                                  capture_output=True)
            assert done.returncode in (0, 1), done.stderr
            cli[what] = time.perf_counter() - start
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        view = FleetView(relayed, 120, scheduler)
        view.hosts()
        sync = time.perf_counter() - start
        replica = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        rng = random.Random(7)
        names = [m.name for lin in range(4) for m in lineage_modes(lin, 50)]
        can_run, select = [], []
        for _ in range(200):
            start = time.perf_counter()
            mode = rng.choice(names)
            hosts_that_can_run(view.hosts(defining=mode), mode, now_ms())
            can_run.append(time.perf_counter() - start)
            pool = f"pool-{rng.randrange(shape.pools)}"
            start = time.perf_counter()
            selection = select_fleet_mode(Scope("everywhere"), view.hosts(pool=pool))
            select.append(time.perf_counter() - start)
            assert selection.mode is not None
        view.close()
        pool_sync, pool_kb, pool_hosts = pool_replica(relayed, scheduler)
        whole_kb = retained_kb_per_host(relayed, scheduler, None)
        servers = [rss_mb(m.pid) for m in cluster.members]
        db_mb = max(m.db_file.stat().st_size for m in cluster.members) / 2**20
        relay.stop()
        relay = None
        # fresh relays of the loaded fleet, with the election timer docs/fleet.md asks for at this size (a
        # member composing the relay's first copy stays busy ~0.7 s per 1,000 hosts): from the members'
        # reader listener over SSL, and from a member's machine over a unix socket (its admin socket
        # stands in for a read-only punix: reader listener: the same stream, without probes)
        leader = cluster.leader()
        change_election_timer(leader.ctl, 32_000)
        term = cluster_status(leader.ctl)["term"]
        fresh_ssl = fresh_relay_sync(source, root / f"relay-{hosts}-ssl", files["fleet-relay"], hosts, 90)
        fresh_unix = fresh_relay_sync(cluster.members[1].admin_remote, root / f"relay-{hosts}-unix", files["fleet-relay"],
                                    hosts, 300)
        elections = cluster_status(leader.ctl)["term"] - term
    finally:
        if relay is not None:
            relay.stop()
        cluster.stop()
    return {"hosts": hosts, "publish_s": progress["seconds"], "hosts_per_s": hosts / progress["seconds"],
            "heartbeats_per_s": hosts / heartbeat_s, "change_read_ms": statistics.median(with_read) * 1e3,
            "change_state_ms": statistics.median(from_state) * 1e3,
            "server_rss_mb": max(servers), "db_file_mb": db_mb, "one_shot_can_run_ms": statistics.median(one_shot) * 1e3,
            "sync_s": sync, "replica_mb": replica, "cli": cli, "pool_sync_s": pool_sync, "pool_kb": pool_kb,
            "pool_hosts": pool_hosts, "whole_kb": whole_kb, "relay_rss_mb": relay_rss,
            "relay_lag_p50_ms": pct(lags, 0.5), "relay_lag_max_ms": max(lags) * 1e3, "relay_sync_ssl": fresh_ssl,
            "relay_sync_unix": fresh_unix, "elections": elections,
            "can_run_p50": pct(can_run, 0.5), "can_run_p99": pct(can_run, 0.99),
            "select_p50": pct(select, 0.5), "select_p99": pct(select, 0.99)}


def synced(found: tuple[float | None, int]) -> str:
    seconds, dropped = found
    return (f"{seconds:.1f} s" if seconds is not None else "not synced") + (f" ({dropped} dropped by its probe)"
                                                                          if dropped else "")


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 3000, 10000]
    with tempfile.TemporaryDirectory(prefix="vuc-bench-fleet-", dir="/tmp") as tmp:
        root = Path(tmp)
        pki = Pki(root / "pki")
        files = {name: pki.identity(name) for name in ("fleet-server", "fleet-relay", "scheduler")}
        rows = []
        for hosts in sizes:
            row = run(hosts, files, root)
            rows.append(row)
            print(f"{hosts:6} hosts ({hosts * 50:,} host-modes, {hosts * 20:,} ports): publish {row['publish_s']:.1f} s "
                  f"({row['hosts_per_s']:.0f} hosts/s); one heartbeat of every host: {row['heartbeats_per_s']:.0f}/s; "
                  f"server RSS max {row['server_rss_mb']:.0f} MB, db file "
                  f"{row['db_file_mb']:.0f} MB; one-shot --can-run (server filters) {row['one_shot_can_run_ms']:.0f} ms; "
                  f"warm replica sync {row['sync_s']:.1f} s, +{row['replica_mb']:.0f} MB (peak RSS), keeps "
                  f"{row['whole_kb']:.1f} KB/host", flush=True)
            print(f"        read relay (followed the load): RSS {row['relay_rss_mb']:.0f} MB; a heartbeat shows in it "
                  f"{row['relay_lag_p50_ms']:.1f} ms after commit (median of 20, max {row['relay_lag_max_ms']:.1f} ms); "
                  f"a fresh relay holds the fleet after: {synced(row['relay_sync_ssl'])} (ssl: source), "
                  f"{synced(row['relay_sync_unix'])} (unix: source); elections meanwhile {row['elections']}", flush=True)
            print(f"        a one-pool replica ({row['pool_hosts']} hosts): sync {row['pool_sync_s']:.2f} s, keeps "
                  f"{row['pool_kb']:.1f} KB/host   [targets < 2 s at 10,000 hosts, <= 10 KB/host]", flush=True)
            print(f"        a port changes, one publish: reading the fleet first {row['change_read_ms']:.1f} ms, "
                  f"from what the last publish wrote {row['change_state_ms']:.1f} ms (medians of 50)", flush=True)
            print("        one-shot CLI (a cold `vucompat fleet` process; through the relay over SSL but the first): " +
                  ", ".join(f"{what} {s:.2f} s" for what, s in row["cli"].items()), flush=True)
            print(f"        warm --can-run p50 {row['can_run_p50']:.2f} ms p99 {row['can_run_p99']:.2f} ms; "
                  f"select-mode (a pool, everywhere) p50 {row['select_p50']:.2f} ms p99 {row['select_p99']:.2f} ms"
                  "   [target p99 < 50 ms]", flush=True)
        if len(rows) > 1:
            first, last = rows[0], rows[-1]
            factor = last["hosts"] / first["hosts"]
            print(f"growth {first['hosts']} -> {last['hosts']} hosts (x{factor:g}): "
                  + ", ".join(f"{k} x{last[k] / first[k]:.1f}" for k in
                              ("publish_s", "heartbeats_per_s", "server_rss_mb", "relay_rss_mb", "db_file_mb",
                               "sync_s", "can_run_p99", "select_p99")))


if __name__ == "__main__":
    main()
