#!/usr/bin/env python3
"""The fleet database at scale: benchmarks. Prints figures; not a test.

Run: make bench-fleet   (or .venv/bin/python bench/fleet.py [HOSTS ...], default 1000 3000 10000)
For each fleet size: a fresh 3-server cluster (raft and listeners over SSL, ovs-pki
certificates), the load generator (`python -m vucompat_testing.fleetgen`) publishing
HOSTS x 50 modes x 20 ports through the servers' admin sockets, a heartbeat of every
host, a port change published with and without reading first, one-shot CLI queries,
then a warm scheduler (FleetView over the read-only SSL listener) asking hosts
--can-run and select-mode.
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
from vucompat_testing.fleet_cluster import FleetCluster
from vucompat_testing.pki import Pki
from vucompat.ovsdb.fleet_config import configure
from vucompat.ovsdb.fleet_publish import publish
from vucompat.ovsdb.fleet_read import FleetView, read_can_run
from vucompat.ovsdb.fleet_rows import heartbeat_operations, now_ms
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions
from vucompat.ovsdb.schema import FLEET_DB

READERS = "pssl:0:127.0.0.2"
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


def run(hosts: int, files: dict[str, SslOptions], root: Path) -> dict[str, float]:
    shape = FleetShape(hosts=hosts)
    cluster = FleetCluster(root / f"cluster-{hosts}", ssl=files["fleet-server"])
    cluster.start()
    try:
        configure(cluster.leader().admin_remote, ["pssl:0:127.0.0.1"], [READERS])
        admin = ",".join(m.admin_remote for m in cluster.members)
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
        for what, args in (("hosts --can-run", ["hosts", "--can-run", "synthetic1.ovs-dpdk.v45"]),
                           ("hosts --pool", ["hosts", "--pool", "pool-3"]), ("hosts", ["hosts"]),
                           ("select-mode --pool", ["select-mode", "--scope", "everywhere", "--pool", "pool-3"]),
                           ("check-migration", ["check-migration", "--port", "vhu00001-00", "--source", "host-00001",
                                                "--dest", "host-00005"]),
                           ("report", ["report"])):
            start = time.perf_counter()
            done = subprocess.run([VUCOMPAT, "fleet", *args, "--fleet", admin, "--timeout", "120"], capture_output=True)
            assert done.returncode in (0, 1), done.stderr
            cli[what] = time.perf_counter() - start
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        view = FleetView(cluster.remotes(READERS), 120, files["scheduler"])
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
        pool_sync, pool_kb, pool_hosts = pool_replica(cluster.remotes(READERS), files["scheduler"])
        whole_kb = retained_kb_per_host(cluster.remotes(READERS), files["scheduler"], None)
        servers = [rss_mb(m.pid) for m in cluster.members]
        db_mb = max(m.db_file.stat().st_size for m in cluster.members) / 2**20
    finally:
        cluster.stop()
    return {"hosts": hosts, "publish_s": progress["seconds"], "hosts_per_s": hosts / progress["seconds"],
            "heartbeats_per_s": hosts / heartbeat_s, "change_read_ms": statistics.median(with_read) * 1e3,
            "change_state_ms": statistics.median(from_state) * 1e3,
            "server_rss_mb": max(servers), "db_file_mb": db_mb, "one_shot_can_run_ms": statistics.median(one_shot) * 1e3,
            "sync_s": sync, "replica_mb": replica, "cli": cli, "pool_sync_s": pool_sync, "pool_kb": pool_kb,
            "pool_hosts": pool_hosts, "whole_kb": whole_kb,
            "can_run_p50": pct(can_run, 0.5), "can_run_p99": pct(can_run, 0.99),
            "select_p50": pct(select, 0.5), "select_p99": pct(select, 0.99)}


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 3000, 10000]
    with tempfile.TemporaryDirectory(prefix="vuc-bench-fleet-", dir="/tmp") as tmp:
        root = Path(tmp)
        pki = Pki(root / "pki")
        files = {name: pki.identity(name) for name in ("fleet-server", "scheduler")}
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
            print(f"        a one-pool replica ({row['pool_hosts']} hosts): sync {row['pool_sync_s']:.2f} s, keeps "
                  f"{row['pool_kb']:.1f} KB/host   [targets < 2 s at 10,000 hosts, <= 10 KB/host]", flush=True)
            print(f"        a port changes, one publish: reading the fleet first {row['change_read_ms']:.1f} ms, "
                  f"from what the last publish wrote {row['change_state_ms']:.1f} ms (medians of 50)", flush=True)
            print("        one-shot CLI (a cold `vucompat fleet` process): " +
                  ", ".join(f"{what} {s:.2f} s" for what, s in row["cli"].items()), flush=True)
            print(f"        warm --can-run p50 {row['can_run_p50']:.2f} ms p99 {row['can_run_p99']:.2f} ms; "
                  f"select-mode (a pool, everywhere) p50 {row['select_p50']:.2f} ms p99 {row['select_p99']:.2f} ms"
                  "   [target p99 < 50 ms]", flush=True)
        if len(rows) > 1:
            first, last = rows[0], rows[-1]
            factor = last["hosts"] / first["hosts"]
            print(f"growth {first['hosts']} -> {last['hosts']} hosts (x{factor:g}): "
                  + ", ".join(f"{k} x{last[k] / first[k]:.1f}" for k in
                              ("publish_s", "server_rss_mb", "db_file_mb", "sync_s", "can_run_p99", "select_p99")))


if __name__ == "__main__":
    main()
