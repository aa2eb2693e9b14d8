"""`vucompat baseline` of hosts: host directories, a real host registry (ovsdb-server),
a fleet pool (a standalone ovsdb-server serving the fleet schema), and the `[[mode]]`
entry `--format toml` prints, read back by the table loader."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import build_host, capabilities_toml
from vucompat_testing import EXAMPLES
from vucompat.core import catalog
from vucompat.cli import main
from vucompat.core.compare import baseline as baseline_of
from vucompat.core.fleet import HostRecord
from vucompat.cli.hosts import load_host
from vucompat.core.mode import Abi
from vucompat.core.tables import read_capabilities, read_table

#: what Debian bookworm's OVS 3.1 + DPDK 22.11 offers (tests/test_agent.py measures it)
OVS31 = capabilities_toml(catalog.mask_to_names(0xD7C66A7CA, "virtio"), catalog.mask_to_names(0x10CBF, "protocol"))
#: a smaller backend: OVS 2.13's features, 8 queue pairs, smaller rings
SMALL = capabilities_toml(catalog.mask_to_names(0xD7C66A7CA, "virtio"), catalog.mask_to_names(0xCB7, "protocol"),
                          queue_pairs=8, rx=512, tx=256)
HEADER = 'lineage = "site.ovs-dpdk"\nsummary = "our compute fleet"\n\n'


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def offer(text: str, tmp_path: Path) -> Abi:
    path = tmp_path / f"offer-{abs(hash(text))}.toml"
    path.write_text(text)
    return read_capabilities(path).abi


def load_entry(tmp_path: Path, entry: str):
    """The entry pasted under a lineage header, read by the table loader: the one mode."""
    table = tmp_path / "site.ovs-dpdk.toml"
    table.write_text(HEADER + entry)
    (mode,) = read_table(table).modes
    return mode


def test_baseline_of_two_host_directories_is_a_table_entry_that_loads_back(make_host, tmp_path: Path):
    a = make_host("host-a", capabilities=OVS31)
    b = make_host("host-b", capabilities=SMALL)
    expected = baseline_of([offer(OVS31, tmp_path), offer(SMALL, tmp_path)]).abi
    code, entry, err = run("baseline", str(a), str(b), "--format", "toml", "--version", "1.0")
    assert code == 0, err
    assert entry.startswith(f"# baseline of {a}, {b} (vucompat baseline, {date.today().isoformat()})")
    assert f'provenance = {{ baseline = "{a}, {b}" }}' in entry
    assert "max_queue_pairs = 8\nmax_rx_queue_size = 512\nmax_tx_queue_size = 256\n" in entry
    assert '    "VHOST_USER_PROTOCOL_F_MQ",\n' in entry and "REPLY_ACK" not in entry  # host-b lacks it
    assert "VIRTIO_NET_F_GSO" not in entry  # deprecated: left out
    mode = load_entry(tmp_path, entry)
    assert mode.name == "site.ovs-dpdk.v1.0" and mode.released == date.today()
    assert mode.abi == expected
    assert mode.provenance == {"baseline": f"{a}, {b}"}
    assert mode.note.startswith(f"baseline of {a}, {b}: virtio {catalog.to_hex(expected.virtio)}")
    # the same answer as json and text give, and the host runs it
    code, out, _ = run("baseline", str(a), str(b), "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["digest"] == expected.digest == mode.digest
    assert data["inputs"] == [{"input": str(a), "kind": "host", "hosts": [str(a)], "skipped": {}},
                              {"input": str(b), "kind": "host", "hosts": [str(b)], "skipped": {}}]
    code, out, _ = run("baseline", str(a), str(b))
    assert code == 0 and out.endswith(f"computed from:\n  {a}  (host)\n  {b}  (host)\n")
    # without --version: today's date
    code, entry, _ = run("baseline", str(a), str(b), "--format", "toml")
    assert load_entry(tmp_path, entry).version == date.today().strftime("%Y.%m.%d")


def test_hosts_modes_and_capability_files_mix(make_host, tmp_path: Path):
    a = make_host("host-a", capabilities=OVS31)
    code, entry, err = run("baseline", str(a), "upstream.ovs-dpdk.v2.13", str(EXAMPLES / "capabilities-ovs-2.13.toml"),
                           "--format", "toml", "--version", "2")
    assert code == 0, err
    mode = load_entry(tmp_path, entry)
    v213 = baseline_of([offer(OVS31, tmp_path), read_capabilities(EXAMPLES / "capabilities-ovs-2.13.toml").abi])
    assert mode.abi.virtio == v213.abi.virtio  # 2.13 offers what its capabilities say
    assert mode.provenance["baseline"] == f"{a}, upstream.ovs-dpdk.v2.13, {EXAMPLES / 'capabilities-ovs-2.13.toml'}"


def test_append_to_writes_the_next_version_as_a_delta(make_host, tmp_path: Path):
    a = make_host("host-a", capabilities=OVS31)
    b = make_host("host-b", capabilities=SMALL)
    table = tmp_path / "site.ovs-dpdk.toml"
    table.write_text(HEADER + run("baseline", str(a), str(b), "--format", "toml", "--version", "1.0")[1])
    # host-b retired: the next version is what host-a alone can run
    code, entry, err = run("baseline", str(a), "--format", "toml", "--version", "1.1", "--append-to", str(table))
    assert code == 0, err
    assert "virtio_features" not in entry and "max_rx_queue_size = 1024" in entry
    assert 'enable = ["VHOST_USER_PROTOCOL_F_REPLY_ACK", "VHOST_USER_PROTOCOL_F_STATUS"]' in entry
    table.write_text(table.read_text() + "\n" + entry)
    _, second = read_table(table).modes
    assert second.name == "site.ovs-dpdk.v1.1" and second.abi == baseline_of([offer(OVS31, tmp_path)]).abi
    # a version the file has already would not load: refused before anything is printed
    code, out, err = run("baseline", str(a), "--format", "toml", "--version", "1.0", "--append-to", str(table))
    assert code == 2 and out == "" and "version 1.0 is listed twice" in err and "give another --version" in err


def test_a_real_host_registry_is_an_input(ovsdb_servers, make_host, tmp_path: Path):
    old = ovsdb_servers("bl-old", tcp=True)
    assert run("load", "--db", old.unix_remote, "--host-name", "compute-old",
               "--capabilities", str(EXAMPLES / "capabilities-ovs-2.13.toml"))[0] == 0
    a = make_host("host-a", capabilities=OVS31)
    code, entry, err = run("baseline", old.tcp_remote, str(a), "--format", "toml", "--version", "1.0")
    assert code == 0, err
    assert f'provenance = {{ baseline = "compute-old, {a}" }}' in entry
    mode = load_entry(tmp_path, entry)
    assert mode.abi == baseline_of([read_capabilities(EXAMPLES / "capabilities-ovs-2.13.toml").abi,
                                    offer(OVS31, tmp_path)]).abi
    code, out, _ = run("baseline", old.unix_remote, str(a))
    assert code == 0 and f"  {old.unix_remote}  (host compute-old)" in out


def test_a_host_without_capabilities_is_an_error_that_says_what_to_do(ovsdb_servers, make_host):
    fresh = ovsdb_servers("bl-none")
    assert run("load", "--db", fresh.unix_remote, "--host-name", "compute-new")[0] == 0
    code, out, err = run("baseline", fresh.unix_remote, "upstream.ovs-dpdk.v2.13", "--format", "toml")
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"host {fresh.unix_remote} (compute-new) does not say what its backend offers" in err
    assert f"vucompat probe --db {fresh.unix_remote}" in err and "--capabilities FILE" in err
    bare = make_host("bare")
    code, _, err = run("baseline", str(bare))
    assert code == 2 and f"add a capabilities.toml to {bare}" in err


# ---- a fleet pool ----------------------------------------------------------------------------------


def _record(directory: Path, name: str, pool: str) -> HostRecord:
    host = replace(load_host(directory), name=name)
    return HostRecord(host=host, pool=pool, ovs_version="3.1.0",
                      capabilities_source="declared" if host.capabilities else "none", heartbeat_interval=30)


@pytest.fixture
def fleet_db(ovsdb_servers, tmp_path: Path) -> str:
    """A standalone ovsdb-server serving the fleet database, with pool east: c1
    (OVS31), c2 (SMALL), c3 (offer not known), c4 (stale, 2 queue pairs); pool west:
    w1 (1 queue pair); pool dark: d1 (offer not known). Published as the agents do."""
    from vucompat.ovsdb.fleet_publish import publish
    from vucompat.ovsdb.session import Session
    from vucompat.ovsdb.schema import FLEET_DB, FLEET_SCHEMA_FILE

    server = ovsdb_servers("bl-fleet", vswitch=False, schema=FLEET_SCHEMA_FILE)
    tiny = capabilities_toml(catalog.mask_to_names(0xD7C66A7CA, "virtio"), catalog.mask_to_names(0xCB7, "protocol"),
                             queue_pairs=1)
    hosts = [("c1", "east", OVS31), ("c2", "east", SMALL), ("c3", "east", None),
             ("c4", "east", SMALL.replace("max_queue_pairs = 8", "max_queue_pairs = 2")), ("w1", "west", tiny),
             ("d1", "dark", None)]
    session = Session(server.unix_remote, FLEET_DB, 10)
    try:
        for name, pool, caps in hosts:
            assert publish(session, _record(build_host(tmp_path, name, capabilities=caps), name, pool)).written
        session.transact([{"op": "update", "table": "Host", "where": [["name", "==", "c4"]], "row": {"last_seen": 0}}])
    finally:
        session.close()
    return server.unix_remote


def test_a_fleet_pool_counts_its_fresh_hosts_with_known_offers(fleet_db: str, tmp_path: Path):
    code, entry, err = run("baseline", "pool:east", "--fleet", fleet_db, "--format", "toml", "--version", "1.0")
    assert code == 0, err
    lines = entry.splitlines()
    assert lines[2:4] == ["# pool:east: used c1, c2", ("#   skipped c3: its backend's offer is not known: probe it "
                          "(`vucompat probe`, or its agent does) or declare it (`vucompat load --capabilities FILE`)")]
    assert lines[4].startswith("#   skipped c4: stale: no publish for ") and "--include-stale counts it" in lines[4]
    assert 'provenance = { baseline = "pool:east (c1, c2)" }' in entry
    mode = load_entry(tmp_path, entry)
    assert mode.abi == baseline_of([offer(OVS31, tmp_path), offer(SMALL, tmp_path)]).abi
    code, out, _ = run("baseline", "pool:east", "--fleet", fleet_db, "--format", "json")
    source = json.loads(out)["inputs"][0]
    assert code == 0 and source["kind"] == "pool" and source["hosts"] == ["c1", "c2"]
    assert sorted(source["skipped"]) == ["c3", "c4"]
    code, out, _ = run("baseline", "pool:east", "--fleet", fleet_db)
    assert "  pool:east  (pool: 2 host(s) used: c1, c2)\n    skipped c3: its backend's offer is not known" in out
    # --include-stale counts c4 (2 queue pairs); VUCOMPAT_FLEET names the fleet too; pools mix with hosts
    code, entry, err = run("baseline", "pool:east", "--include-stale", "--format", "toml",
                           env={"VUCOMPAT_FLEET": fleet_db})
    assert code == 0 and "max_queue_pairs = 2\n" in entry and 'baseline = "pool:east (c1, c2, c4)"' in entry
    code, entry, _ = run("baseline", "pool:east", "pool:west", "--fleet", fleet_db, "--format", "toml")
    assert load_entry(tmp_path, entry).abi.max_queue_pairs == 1


def test_unknown_pool_or_no_fleet_is_an_error(fleet_db: str, monkeypatch: pytest.MonkeyPatch):
    code, out, err = run("baseline", "pool:nope", "--fleet", fleet_db, "--format", "toml")
    assert code == 2 and out == ""
    assert "pool:nope: no host of pool nope in the fleet database (`vucompat fleet hosts` lists" in err
    code, out, err = run("baseline", "pool:dark", "--fleet", fleet_db, "--format", "toml")
    assert code == 2 and out == "" and "pool:dark: no host counts (d1: its backend's offer is not known" in err
    monkeypatch.delenv("VUCOMPAT_FLEET", raising=False)
    code, _, err = run("baseline", "pool:east")
    assert code == 2 and "pool:east is read from the fleet database: give --fleet REMOTES" in err
    code, _, err = run("baseline", "pool:east", "--fleet", "unix:/nonexistent/fleet.sock", "--timeout", "0.5")
    assert code == 2 and "Traceback" not in err and err.startswith("error: ")
