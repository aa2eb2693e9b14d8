"""Functional tests of the registry against real ovsdb-servers (Debian's
openvswitch-switch) on private sockets, stopped by pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import FIXTURES
from vucompat_testing import EXAMPLES
from vucompat_testing.ovsdb_server import select
from vucompat_testing.tablegen import table_text_until
from vucompat.cli import main
from vucompat.ovsdb import rpc
from vucompat.ovsdb.schema import shipped_schema
from vucompat.core.catalog import bits_of

VUCOMPAT = str(Path(sys.executable).parent / "vucompat")
CURRENT = shipped_schema()["version"]
SHIPPED_COUNT = 9


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + result.stderr


def names(remote: str) -> list[str]:
    return sorted(r["name"] for r in select(remote, "Compat_Mode", ["name"]))


def older_tables(tmp_path: Path, shipped: Path, until: str = "2.13") -> Path:
    """A tables directory whose upstream lineage stops at `until` (it shadows the shipped one)."""
    directory = tmp_path / f"until-{until}"
    directory.mkdir()
    (directory / "upstream.ovs-dpdk.toml").write_text(
        table_text_until((shipped / "upstream.ovs-dpdk.toml").read_text(), until))
    return directory


def test_load_then_reload_is_a_no_op(ovsdb_servers):
    server = ovsdb_servers("host")
    code, out = run("load", "--db", server.unix_remote, "--host-name", "compute-1")
    assert code == 0 and f"added {SHIPPED_COUNT}" in out
    rows = select(server.unix_remote, "Compat_Mode")
    assert len(rows) == SHIPPED_COUNT
    v213 = next(r for r in rows if r["name"] == "upstream.ovs-dpdk.v2.13")
    assert sorted(v213["virtio_features"][1]) == bits_of(0xD7C66A7CA)
    assert v213["digest"].startswith("sha256:c8c4ea60325b")
    (host,) = select(server.unix_remote, "Host")
    assert host["name"] == "compute-1" and host["capabilities_source"] == "none"
    code, out = run("load", "--db", server.unix_remote, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["written"] is False and data["added"] == [] and len(data["unchanged"]) == SHIPPED_COUNT
    code, out = run("load", "--db", server.unix_remote)
    assert "nothing to do" in out
    assert len(select(server.unix_remote, "Compat_Mode")) == SHIPPED_COUNT


def test_reading_commands_work_against_a_database(ovsdb_servers):
    server = ovsdb_servers("host", tcp=True)
    run("load", "--db", server.unix_remote)
    code, out = run("list", "--db", server.tcp_remote, "--format", "json")
    assert code == 0 and [m["name"] for m in json.loads(out)][0] == "upstream.ovs-dpdk.v3.2"
    code, out = run("show", "upstream.ovs-dpdk.v2.13", "--db", server.tcp_remote, "--format", "json")
    assert code == 0 and json.loads(out)["digest"].startswith("sha256:c8c4ea60325b")
    code, out = run("compare", "upstream.ovs-dpdk.v3.2", "upstream.ovs-dpdk.v2.13", "--db", server.unix_remote)
    assert code == 0 and "+ VIRTIO_NET_F_CSUM" in out


ACME = """lineage = "acme.vswitch"
summary = "test lineage"

[[mode]]
version = "1.0"
released = 2020-01-01
virtio_features = ["VIRTIO_NET_F_CTRL_VQ", "VIRTIO_NET_F_MQ", "VHOST_USER_F_PROTOCOL_FEATURES", "VIRTIO_F_VERSION_1"]
protocol_features = ["VHOST_USER_PROTOCOL_F_MQ"]
max_queue_pairs = 8
max_rx_queue_size = 1024
max_tx_queue_size = 1024
"""


def tables_dir(tmp_path: Path, name: str, text: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "acme.vswitch.toml").write_text(text)
    return directory


def test_a_redefinition_is_refused_and_nothing_is_written(ovsdb_servers, tmp_path: Path):
    server = ovsdb_servers("host")
    assert run("load", "--db", server.unix_remote, "--tables", str(tables_dir(tmp_path, "a", ACME)))[0] == 0
    before = select(server.unix_remote, "Compat_Mode")
    hosts_before = select(server.unix_remote, "Host")
    other = ACME.replace('"VIRTIO_NET_F_MQ", ', "").replace("max_queue_pairs = 8", "max_queue_pairs = 4") + \
        '\n[[mode]]\nversion = "1.1"\nreleased = 2021-01-01\nenable = ["VIRTIO_NET_F_MTU"]\n'
    code, out = run("load", "--db", server.unix_remote, "--tables", str(tables_dir(tmp_path, "b", other)),
                    "--capabilities", str(EXAMPLES / "capabilities-ovs-2.13.toml"))
    assert code == 2
    assert "refusing to load" in out and "Nothing was written" in out
    assert "acme.vswitch.v1.0 (-VIRTIO_NET_F_MQ, max_queue_pairs 8 -> 4)" in out
    assert select(server.unix_remote, "Compat_Mode") == before  # not even the new v1.1
    assert select(server.unix_remote, "Host") == hosts_before


def test_prune_removes_unused_modes_and_keeps_those_in_use(ovsdb_servers, tmp_path: Path, shipped: Path):
    server = ovsdb_servers("host")
    run("load", "--db", server.unix_remote)
    (v32,) = [r for r in select(server.unix_remote, "Compat_Mode", ["_uuid", "name"])
              if r["name"] == "upstream.ovs-dpdk.v3.2"]
    rpc.transact(server.unix_remote, "VuCompat", [{"op": "insert", "table": "Port", "row": {
        "interface_name": "vhu0", "interface_uuid": ["uuid", "6f1a3e5c-6d8e-4d5b-9c1e-0a4b8e1d2c3f"],
        "interface_type": "dpdkvhostuserclient", "requested": "latest", "mode": v32["_uuid"],
        "state": "applied"}}])
    older = older_tables(tmp_path, shipped, "2.13")
    code, out = run("load", "--db", server.unix_remote, "--tables", str(older), "--prune", "--format", "json")
    data = json.loads(out)
    assert code == 0
    # the older tables shadow only the upstream lineage: fc26's modes are still defined (not pruned),
    # v3.2 is in use (kept), v2.15 is neither
    assert data["pruned"] == ["upstream.ovs-dpdk.v2.15"]
    assert data["kept_in_use"] == {"upstream.ovs-dpdk.v3.2": ["vhu0"]}
    assert "upstream.ovs-dpdk.v3.2" in names(server.unix_remote)
    assert "upstream.ovs-dpdk.v2.15" not in names(server.unix_remote)
    code, out = run("load", "--db", server.unix_remote, "--tables", str(older), "--prune")
    assert "kept upstream.ovs-dpdk.v3.2: still used by port(s) vhu0" in out
    # the schema's strong reference holds even for a client that bypasses vucompat
    with pytest.raises(rpc.OvsdbError, match="referential integrity"):
        rpc.transact(server.unix_remote, "VuCompat", [
            {"op": "delete", "table": "Compat_Mode", "where": [["name", "==", "upstream.ovs-dpdk.v3.2"]]}])


def test_schema_constraints_refuse_nonsense_from_any_client(ovsdb_servers):
    server = ovsdb_servers("host")
    row = {"name": "x.y.v1", "lineage": "x.y", "version": "1", "digest": "sha256:" + "0" * 64,
           "max_queue_pairs": 1, "max_rx_queue_size": 1000, "max_tx_queue_size": 256}
    with pytest.raises(rpc.OvsdbError, match="constraint violation"):
        rpc.transact(server.unix_remote, "VuCompat", [{"op": "insert", "table": "Compat_Mode", "row": row}])
    row.update(max_rx_queue_size=256, virtio_features=64)
    with pytest.raises(rpc.OvsdbError, match="constraint violation"):
        rpc.transact(server.unix_remote, "VuCompat", [{"op": "insert", "table": "Compat_Mode", "row": row}])
    assert select(server.unix_remote, "Compat_Mode") == []


def test_a_row_written_outside_vucompat_is_called_out(ovsdb_servers):
    server = ovsdb_servers("host")
    run("load", "--db", server.unix_remote)
    rpc.transact(server.unix_remote, "VuCompat", [{"op": "update", "table": "Compat_Mode",
                                                   "where": [["name", "==", "upstream.ovs-dpdk.v2.6"]],
                                                   "row": {"max_queue_pairs": 4}}])
    code, out = run("list", "--db", server.unix_remote)
    assert code == 2 and "upstream.ovs-dpdk.v2.6 holds a digest that does not match" in out


def test_two_concurrent_loaders_never_duplicate(ovsdb_servers):
    env = {k: v for k, v in os.environ.items() if k != "VUCOMPAT_TABLES"}
    for _round in range(3):
        server = ovsdb_servers("race")
        procs = [subprocess.Popen([VUCOMPAT, "load", "--db", server.unix_remote, "--format", "json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        results = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        added = sorted(len(json.loads(out)["added"]) for out, _err in results)
        assert added in ([0, SHIPPED_COUNT],), results  # one loader wrote them all, the other none
        rows = names(server.unix_remote)
        assert len(rows) == len(set(rows)) == SHIPPED_COUNT
        assert len(select(server.unix_remote, "Host")) == 1
        server.stop()


def test_upgrade_converts_offline_and_online_keeping_rows(ovsdb_servers, tmp_path: Path):
    old_schema = FIXTURES / "vucompat-0.9.0.ovsschema"
    server = ovsdb_servers("old", schema=old_schema)
    code, out = run("load", "--db", server.unix_remote)
    assert code == 2 and "lacks Compat_Mode columns derived_from" in out and "vucompat db upgrade" in out
    rpc.transact(server.unix_remote, "VuCompat", [{"op": "insert", "table": "Compat_Mode", "row": {
        "name": "acme.vswitch.v1.0", "lineage": "acme.vswitch", "version": "1.0", "digest": "sha256:" + "a" * 64,
        "max_queue_pairs": 8, "max_rx_queue_size": 256, "max_tx_queue_size": 256, "note": "kept"}}])
    # online, through the running server
    code, out = run("db", "upgrade", "--db", server.unix_remote)
    assert code == 0 and f"converted from schema 0.9.0 to {CURRENT}" in out
    (row,) = select(server.unix_remote, "Compat_Mode")
    assert row["name"] == "acme.vswitch.v1.0" and row["note"] == "kept"
    assert f"already at schema {CURRENT}" in run("db", "upgrade", "--db", server.unix_remote)[1]
    server.stop()
    # offline, a file no server holds
    old_file = tmp_path / "old.db"
    subprocess.run(["ovsdb-tool", "create", str(old_file), str(old_schema)], check=True)
    subprocess.run(["ovsdb-tool", "transact", str(old_file), json.dumps(["VuCompat", {
        "op": "insert", "table": "Host", "row": {"name": "compute-9", "capabilities_source": "none",
                                                  "default_policy": "latest"}}])], check=True, capture_output=True)
    code, out = run("db", "upgrade", str(old_file))
    assert code == 0 and f"converted from schema 0.9.0 to {CURRENT}" in out
    dump = subprocess.run(["ovsdb-tool", "query", str(old_file), json.dumps(
        ["VuCompat", {"op": "select", "table": "Host", "where": []}])], capture_output=True, text=True, check=True)
    assert json.loads(dump.stdout)[0]["rows"][0]["name"] == "compute-9"


def test_db_create_and_attach_to_a_running_server(ovsdb_servers, tmp_path: Path):
    fresh = tmp_path / "registry.db"
    code, out = run("db", "create", str(fresh))
    assert code == 0 and f"schema {CURRENT}" in out
    code, out = run("db", "create", str(fresh))
    assert code == 2 and "already exists" in out
    # a server that serves only Open_vSwitch: the error says how to add the registry
    vswitch_only = ovsdb_servers("vsonly")
    subprocess.run(["ovs-appctl", "-t", str(vswitch_only.ctl), "ovsdb-server/remove-db", "VuCompat"], check=True)
    code, out = run("list", "--db", vswitch_only.unix_remote)
    assert code == 2 and "does not serve the VuCompat database" in out and "vucompat db attach" in out
    code, out = run("db", "attach", str(fresh), "--ctl", str(vswitch_only.ctl))
    assert code == 0
    assert run("load", "--db", vswitch_only.unix_remote)[0] == 0
    assert len(names(vswitch_only.unix_remote)) == SHIPPED_COUNT


def test_unreachable_servers_fail_fast_with_exit_2(tmp_path: Path):
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts connections (backlog) but never answers
    port = silent.getsockname()[1]
    try:
        for remote, reason in [(f"unix:{tmp_path}/none.sock", "cannot reach ovsdb-server: No such file or directory "
                                "(ENOENT), after 0.0"),  # at once: how long it took, not the timeout
                               ("tcp:127.0.0.1:1", "cannot reach ovsdb-server: Connection refused (ECONNREFUSED), "
                                "after 0.0"),
                               (f"tcp:127.0.0.1:{port}", "cannot reach ovsdb-server within 1s: no answer to transact")]:
            start = time.monotonic()
            code, out = run("list", "--db", remote, "--timeout", "1")
            assert code == 2 and f"{remote}: {reason}" in out, out
            assert time.monotonic() - start < 3
    finally:
        silent.close()


def test_a_server_killed_mid_load_holds_the_old_or_the_new_set(ovsdb_servers, tmp_path: Path):
    """SIGKILL aimed at the commit: as soon as ovsdb-server starts appending the load's
    transaction to its file (the file grows while the loader still waits for its
    answer). After each restart the database holds the old set or the new one, never a
    mix, and the file reads back with ovsdb-tool; at least one kill must land while the
    record was being written, or the test proves nothing."""
    big = tmp_path / "big"
    big.mkdir()
    from vucompat_testing.tablegen import lineage_toml

    (big / "bench.vswitch.toml").write_text(lineage_toml(1500))
    env = {k: v for k, v in os.environ.items() if k != "VUCOMPAT_TABLES"}
    server = ovsdb_servers("crash")
    run("load", "--db", server.unix_remote)
    old = set(names(server.unix_remote))
    in_window = 0
    for attempt in range(6):
        before = server.registry_db.stat().st_size
        loader = subprocess.Popen([VUCOMPAT, "load", "--db", server.unix_remote, "--tables", str(big),
                                   "--timeout", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 30
        while server.registry_db.stat().st_size == before and loader.poll() is None and time.monotonic() < deadline:
            pass  # busy-wait: the write window is milliseconds
        grown, waiting = server.registry_db.stat().st_size > before, loader.poll() is None
        server.kill(signal.SIGKILL)
        in_window += grown and waiting
        loader.communicate(timeout=30)
        server.stop()
        check = subprocess.run(["ovsdb-tool", "db-version", str(server.registry_db)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        server.start()
        now = set(names(server.unix_remote))
        assert now == old or (old < now and len(now) == len(old) + 1500), (attempt, len(now))
        if now != old:  # the load made it: start again from the old set
            rpc.transact(server.unix_remote, "VuCompat", [
                {"op": "delete", "table": "Compat_Mode", "where": [["lineage", "==", "bench.vswitch"]]}])
    assert in_window >= 1, "no kill landed while the transaction was being written"


def test_negotiate_between_two_real_servers(ovsdb_servers, tmp_path: Path, shipped: Path):
    new = ovsdb_servers("compute-new", tcp=True)
    old = ovsdb_servers("compute-old", tcp=True)
    run("load", "--db", new.unix_remote, "--host-name", "compute-new")
    run("load", "--db", old.unix_remote, "--host-name", "compute-old", "--tables", str(older_tables(tmp_path, shipped)),
        "--capabilities", str(EXAMPLES / "capabilities-ovs-2.13.toml"))
    code, out = run("negotiate", "--source", new.tcp_remote, "--dest", old.tcp_remote, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["mode"] == "upstream.ovs-dpdk.v2.13"
    assert data["source"] == "compute-new" and data["destination"] == "compute-old"
    assert [c["reasons"] for c in data["candidates"][:2]] == [[{"kind": "missing", "side": "destination"}]] * 2
    code, out = run("list", "--host", old.unix_remote)
    assert "upstream.ovs-dpdk.v2.11" in out and "no: missing VIRTIO_NET_F_HOST_UFO" in out
    # a directory on one side and a database on the other work together too
    code, out = run("negotiate", "--source", str(shipped), "--dest", old.tcp_remote)
    assert code == 0 and "mode: upstream.ovs-dpdk.v2.13" in out


def test_host_row_records_the_ovs_and_dpdk_versions(ovsdb_servers):
    server = ovsdb_servers("versions")
    subprocess.run(["ovs-vsctl", f"--db={server.unix_remote}", "--no-wait", "init", "--", "set", "Open_vSwitch",
                    ".", "ovs_version=2.13.0", 'dpdk_version="DPDK 19.11.0"'], check=True)
    run("load", "--db", server.unix_remote)
    (host,) = select(server.unix_remote, "Host")
    assert host["ovs_version"] == "2.13.0" and host["dpdk_version"] == "DPDK 19.11.0"


def test_a_loader_whose_reads_went_stale_retries_instead_of_duplicating(ovsdb_servers, shipped: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """Deterministic version of the race: loader B reads the table, then loader A
    commits all the modes before B does. B's `wait` precondition fails on the server,
    B reads again, plans again and writes nothing."""
    from vucompat.ovsdb import load as load_module
    from vucompat.ovsdb.connection import Connection
    from vucompat.core.tables import load_modeset

    server = ovsdb_servers("stale")
    tables = load_modeset([shipped])
    real_read = load_module.read_modes_and_ports
    reads: list[int] = []

    def read_then_lose_the_race(conn):
        digests, ports, marked = real_read(conn)
        if conn is not second:
            return digests, ports, marked
        reads.append(len(digests))
        if len(reads) == 1:  # A commits between B's read and B's commit
            with Connection(server.unix_remote, tables=load_module.LOAD_COLUMNS) as first:
                assert load_module.load(first, tables).written
        return digests, ports, marked

    with Connection(server.unix_remote, tables=load_module.LOAD_COLUMNS) as second:
        monkeypatch.setattr(load_module, "read_modes_and_ports", read_then_lose_the_race)
        result = load_module.load(second, tables)
    assert reads == [0, SHIPPED_COUNT]  # planned on an empty table, refused, planned again
    assert not result.written and result.plan.insert == () and len(result.plan.unchanged) == SHIPPED_COUNT
    rows = names(server.unix_remote)
    assert len(rows) == len(set(rows)) == SHIPPED_COUNT


def test_the_one_shot_reader_and_the_monitoring_client_agree(ovsdb_servers):
    from vucompat.ovsdb.registry import RemoteHost, read_remote_host

    server = ovsdb_servers("agree")
    run("load", "--db", server.unix_remote, "--capabilities", str(EXAMPLES / "capabilities-ovs-2.13.toml"))
    once = read_remote_host(server.unix_remote)
    client = RemoteHost(server.unix_remote)
    try:
        warm = client.host()
        assert once.name == warm.name and once.capabilities == warm.capabilities is not None
        assert {n: m.as_dict() for n, m in once.modeset.modes.items()} == \
            {n: m.as_dict() for n, m in warm.modeset.modes.items()}
        assert client.host() is warm  # nothing changed: the value is reused
        run("load", "--db", server.unix_remote, "--tables", str(tables_dir(Path(server.directory), "more", ACME)))
        deadline = time.monotonic() + 5
        while "acme.vswitch.v1.0" not in client.host().modeset.modes:
            assert time.monotonic() < deadline, "the monitoring client never saw the new mode"
            time.sleep(0.01)
    finally:
        client.close()


def test_ssl_remotes_with_ovs_pki_certificates(ovsdb_servers, tmp_path: Path):
    from vucompat_testing.pki import Pki

    pki = Pki(tmp_path / "pki")
    server_files = pki.identity("server")
    import tempfile

    from vucompat_testing.ovsdb_server import OvsdbSandbox

    server = OvsdbSandbox(Path(tempfile.mkdtemp(prefix="vuc-ssl-", dir="/tmp")), tcp=True, ssl=server_files)
    server.start()
    try:
        assert server.tcp_remote.startswith("ssl:127.0.0.1:")
        client = pki.identity("client").cli_args()
        done = subprocess.run([VUCOMPAT, "load", "--db", server.tcp_remote, *client], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        done = subprocess.run([VUCOMPAT, "list", "--db", server.tcp_remote, "--format", "json", *client],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and len(json.loads(done.stdout)) == SHIPPED_COUNT
        # without the client files: a clear error, not a traceback
        done = subprocess.run([VUCOMPAT, "list", "--db", server.tcp_remote], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "needs --ssl-key, --ssl-cert and --ssl-ca" in done.stderr
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
