#!/usr/bin/env python3
"""Benchmarks of the OVSDB registry against real ovsdb-servers. Prints figures; not a test.

Run: make bench   (or .venv/bin/python bench/registry.py)
Targets (issue 3): loading 1,000 modes in-process <= 1.5x one raw JSON-RPC transact
of the same rows over the same socket; the whole `vucompat load` from a cold process
< 1 s; negotiate between two 200-mode hosts over loopback TCP, cold process < 300 ms,
warm process (connections open) < 5 ms median.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ovs.jsonrpc
import ovs.stream

from vucompat.core.negotiate import negotiate
from vucompat.ovsdb import fastjson
from vucompat.ovsdb.connection import Connection
from vucompat.ovsdb.load import LOAD_COLUMNS, load
from vucompat.ovsdb.registry import RemoteHost
from vucompat.ovsdb.rows import mode_row
from vucompat_testing.ovsdb_server import OvsdbSandbox
from vucompat.core.tables import load_modeset
from vucompat_testing.tablegen import lineage_toml
from vucompat_testing.timing import ms, timed

VUCOMPAT = str(Path(sys.executable).parent / "vucompat")


def raw_rows(registry) -> list[dict]:
    """The same rows as `load` inserts, as raw OVSDB insert operations."""
    return [{"op": "insert", "table": "Compat_Mode", "row": mode_row(m)}
            for m in registry.modes.values()]


def raw_transact(rpc: ovs.jsonrpc.Connection, ops: list[dict]) -> None:
    error, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("transact", ["VuCompat", *ops]))
    assert not error and not any("error" in r for r in reply.result if r), reply


def clear(remote_rpc: ovs.jsonrpc.Connection) -> None:
    raw_transact(remote_rpc, [{"op": "delete", "table": "Compat_Mode", "where": []},
                              {"op": "delete", "table": "Host", "where": []}])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="vuc-bench-", dir="/tmp") as tmp:
        root = Path(tmp)
        tables = root / "tables"
        tables.mkdir()
        (tables / "bench.vswitch.toml").write_text(lineage_toml(1000))
        registry = load_modeset([tables])
        only_bench = {n: m for n, m in registry.modes.items() if n.startswith("bench.")}
        registry = type(registry)(modes=only_bench)
        ops = raw_rows(registry)

        with OvsdbSandbox(root / "a", vswitch=False, tcp=True) as server:
            fastjson.install()  # the raw connection parses as vucompat's own do
            error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(server.unix_remote))
            assert not error
            rpc = ovs.jsonrpc.Connection(stream)
            conn = Connection(server.unix_remote, timeout=30, tables=LOAD_COLUMNS)
            idl_times, raw_times = [], []
            for _ in range(7):  # side by side, alternating, on the same server and socket path
                clear(rpc)
                conn._wait_until(lambda: not conn.rows("Host"), "the cleared Host row")
                start = time.perf_counter()
                load(conn, registry)
                idl_times.append(time.perf_counter() - start)
                clear(rpc)
                start = time.perf_counter()
                raw_transact(rpc, ops)
                raw_times.append(time.perf_counter() - start)
            conn.close()
            ratio = statistics.median(idl_times) / statistics.median(raw_times)
            print(f"load 1,000 modes in-process (plan + IDL transaction + commit): {ms(idl_times)}")
            print(f"the same rows as one raw JSON-RPC transact:                    {ms(raw_times)}")
            print(f"  ratio {ratio:.2f}   [target <= 1.5]")

            cold = []
            for _ in range(5):
                clear(rpc)
                start = time.perf_counter()
                subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote, "--tables", str(tables)],
                               check=True, capture_output=True)
                cold.append(time.perf_counter() - start)
            print(f"`vucompat load` of the 1,000-mode table + shipped tables, cold process: {ms(cold)}"
                  "   [target < 1 s]")
            rpc.close()

        two = root / "two"
        two.mkdir()
        (two / "bench.vswitch.toml").write_text(lineage_toml(200))
        with OvsdbSandbox(root / "src", vswitch=False, tcp=True) as src, \
                OvsdbSandbox(root / "dst", vswitch=False, tcp=True) as dst:
            for server in (src, dst):
                subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote, "--tables", str(two)],
                               check=True, capture_output=True)
            cold = timed(lambda: subprocess.run([VUCOMPAT, "negotiate", "--source", src.tcp_remote, "--dest",
                                                 dst.tcp_remote], check=True, capture_output=True), 7)
            print(f"negotiate over loopback TCP, two hosts of {200 + 9} modes, cold process: {ms(cold)}"
                  "   [target < 300 ms]")
            a, b = RemoteHost(src.tcp_remote), RemoteHost(dst.tcp_remote)
            warm = timed(lambda: negotiate(a.host(), b.host()), 500)
            print(f"  warm process (connections open, RemoteHost): {ms(warm)}   [target < 5 ms]")
            warm_all = timed(lambda: negotiate(a.host(), b.host()).as_dict(), 200)
            print(f"  warm, with the full JSON explanation: {ms(warm_all)}")
            a.close()
            b.close()


if __name__ == "__main__":
    main()
