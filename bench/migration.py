#!/usr/bin/env python3
"""Migration decisions: benchmarks. Prints figures; not a test.

Run: make bench   (or .venv/bin/python bench/migration.py)
Targets (issue 6): check-migration over loopback TCP against warm connections
< 5 ms median; select_mode over 1,000 hosts whose mode sets are already fetched
< 100 ms.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from pathlib import Path

from vucompat.core import catalog
from vucompat.api import Client
from vucompat.core.migration import Scope, select_mode
from vucompat.core.mode import Capabilities
from vucompat.ovsdb import rpc
from vucompat_testing.ovsdb_server import OvsdbSandbox
from vucompat.core.modeset import Host, ModeSet
from vucompat.core.tables import read_table
from vucompat_testing.tablegen import lineage_toml
from vucompat_testing.timing import ms, timed

REPO = Path(__file__).resolve().parent.parent
VUCOMPAT = str(Path(sys.executable).parent / "vucompat")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="vuc-bench-mig-", dir="/tmp") as tmp:
        root = Path(tmp)
        with OvsdbSandbox(root / "src", vswitch=False, tcp=True) as src, \
                OvsdbSandbox(root / "dst", vswitch=False, tcp=True) as dst:
            for server in (src, dst):
                subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote, "--capabilities",
                                str(REPO / "examples" / "capabilities-ovs-2.13.toml")], check=True, capture_output=True)
            (modes,) = rpc.transact(src.unix_remote, "VuCompat", [{"op": "select", "table": "Compat_Mode", "where": [
                ["name", "==", "upstream.ovs-dpdk.v2.13"]], "columns": ["_uuid"]}])
            rpc.transact(src.unix_remote, "VuCompat", [{"op": "insert", "table": "Port", "row": {
                "interface_name": "vhu0", "interface_uuid": ["uuid", "6f1a3e5c-6d8e-4d5b-9c1e-0a4b8e1d2c3f"],
                "interface_type": "dpdkvhostuserclient", "requested": "latest", "resolved": "upstream.ovs-dpdk.v2.13",
                "mode": modes["rows"][0]["_uuid"], "state": "applied",
                "negotiated_features": ["set", catalog.bits_of(0x150448000)]}}])
            with Client(timeout=5) as client:
                client.check_migration("vhu0", src.tcp_remote, dst.tcp_remote)  # connect once
                warm = timed(lambda: client.check_migration("vhu0", src.tcp_remote, dst.tcp_remote), 500)
            print(f"check_migration over loopback TCP, warm connections: {ms(warm)}   [target < 5 ms]")
            cold = timed(lambda: subprocess.run([VUCOMPAT, "check-migration", "--port", "vhu0", "--source",
                                                 src.tcp_remote, "--dest", dst.tcp_remote], capture_output=True), 7)
            print(f"`vucompat check-migration` from a cold process: {ms(cold)}")

        # 1,000 hosts, 50 modes each (a shared lineage); each host's backend offers what the
        # lineage's first k versions need (k random, 10..50): select_mode over all of them
        (root / "bench.vswitch.toml").write_text(lineage_toml(50))
        modes_list = list(read_table(root / "bench.vswitch.toml").modes)
        rng = random.Random(3)
        registry = ModeSet({m.name: m for m in modes_list})
        hosts = []
        for i in range(1000):
            older = modes_list[: rng.randint(10, 50)]
            virtio = protocol = 0
            for mode in older:
                virtio |= mode.abi.virtio
                protocol |= mode.abi.protocol
            offer = type(older[0].abi)(virtio, protocol, 256, 32768, 32768)
            hosts.append(Host(f"h{i}", registry, Capabilities(offer)))
        result = select_mode(Scope("everywhere"), hosts)
        fleet = timed(lambda: select_mode(Scope("everywhere"), hosts), 20)
        print(f"select_mode over 1,000 hosts x 50 modes (fetched) -> {result.mode.name if result.mode else None}: "
              f"{ms(fleet)}   [target < 100 ms]")


if __name__ == "__main__":
    main()
