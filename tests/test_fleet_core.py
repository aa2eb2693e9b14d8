"""The fleet's pure parts: the publish transaction (what changes, what not), and
the scheduler answers over fleet hosts (digests, staleness, pools)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vucompat.core.fleet import FleetHost, active_modes_report, hosts_that_can_run, select_fleet_mode
from vucompat.core.migration import Scope
from vucompat_testing.fleetgen import FleetShape, synthetic_record
from vucompat.ovsdb.codec import canonical
from vucompat.ovsdb.fleet_rows import Published, heartbeat_operations, publish_operations, published_after
from vucompat.ovsdb.fleet_rows import _same as same
from vucompat.core.modeset import Host, ModeSet

SHAPE = FleetShape(hosts=8, modes_per_host=5, ports_per_host=3)


def as_server_sends(ops: list[dict]) -> Published:
    """What the fleet would hold after `ops` (a first publish), as a select returns it:
    one-element sets bare, uuids for the named ones."""
    host = port_rows = None
    uuids = {}
    modes = {}
    for i, op in enumerate(o for o in ops if "uuid-name" in o):
        uuids[op["uuid-name"]] = f"00000000-0000-0000-0000-{i:012d}"
        if op["table"] == "Compat_Mode":
            modes[(op["row"]["name"], op["row"]["digest"])] = uuids[op["uuid-name"]]

    def served(value):
        if isinstance(value, list) and value[0] == "named-uuid":
            return ["uuid", uuids[value[1]]]
        if isinstance(value, list) and value[0] == "set":
            items = [served(v) for v in value[1]]
            return items[0] if len(items) == 1 else ["set", items]
        return value

    port_rows = {}
    for op in ops:
        row = {c: served(v) for c, v in op.get("row", {}).items()}
        row["_uuid"] = ["uuid", uuids.get(op.get("uuid-name"), "10000000-0000-0000-0000-000000000000")]
        if op["table"] == "Host":
            host = row
        elif op["table"] == "Port":
            port_rows[row["interface_name"]] = row
    return Published(host=host, ports=port_rows, modes=modes)


def test_first_publish_inserts_everything_then_nothing_changes():
    record = synthetic_record(1, SHAPE)
    ops = publish_operations(record, Published(), now_ms=1000)
    tables = [op["table"] for op in ops]
    assert tables.count("Compat_Mode") == 5 and tables.count("Host") == 1 and tables.count("Port") == 3
    current = as_server_sends(ops)
    assert publish_operations(record, current, now_ms=2000) == []
    # a heartbeat touches last_seen only (if the row is still there)
    wait, beat = publish_operations(record, current, now_ms=3000, heartbeat=True)
    assert wait["op"] == "wait" and wait["where"] == [["_uuid", "==", current.host["_uuid"]]]
    assert wait["rows"] == [{"name": record.name}]
    assert beat["op"] == "update" and beat["row"] == {"last_seen": 3000} and beat["where"] == wait["where"]
    assert publish_operations(record, current, now_ms=3000, heartbeat=True) == \
        heartbeat_operations(record.name, current.host["_uuid"], 3000)


def test_a_changed_port_and_a_removed_port_are_one_small_transaction():
    record = synthetic_record(2, SHAPE)
    current = as_server_sends(publish_operations(record, Published(), now_ms=1000))
    ports = dict(record.ports)
    first, second, _ = sorted(ports)
    ports[first] = replace(ports[first], state="nonconformant", verification="negotiated beyond the mode")
    del ports[second]
    ops = publish_operations(replace(record, ports=ports), current, now_ms=2000)
    # the removed port is dropped from the host's references (the server deletes its row)
    assert [(op["op"], op["table"]) for op in ops] == [("wait", "Host"), ("update", "Host"), ("update", "Port")]
    assert set(ops[1]["row"]) == {"ports", "last_seen"}
    assert canonical(ops[1]["row"]["ports"]) == {tuple(current.ports[n]["_uuid"]) for n in ports}
    assert set(ops[2]["row"]) == {"state", "verification"}
    assert ops[2]["where"] == [["_uuid", "==", current.ports[first]["_uuid"]]]


def fleet_host(record, last_seen: int, **changes) -> FleetHost:
    host = replace(record.host, **changes)
    caps = host.capabilities.abi
    runnable = frozenset(m.name for m in host.modeset.modes.values()
                         if m.abi.max_queue_pairs <= caps.max_queue_pairs)
    return FleetHost(host, record.pool, "3.1.0", None, last_seen, record.heartbeat_interval, runnable,
                     {m: "max_queue_pairs" for m in set(host.modeset.modes) - runnable})


def test_can_run_groups_by_digest_and_leaves_stale_hosts_out():
    now = 10_000_000
    records = [synthetic_record(i, SHAPE) for i in (0, 4, 8, 12)]  # lineage 0; offered 5, 4, 3, 2 queue pairs
    hosts = [fleet_host(r, now) for r in records]
    name = "synthetic0.ovs-dpdk.v2"  # needs 3 queue pairs
    answer = hosts_that_can_run(hosts, name, now)
    assert answer.all_hosts == ["host-00000", "host-00004", "host-00008"]
    assert answer.lacking == {"host-00012": "max_queue_pairs"}
    # host-00004 stops publishing: after 3 heartbeats it is stale and left out, not dropped
    hosts[1] = replace(hosts[1], last_seen=now - 3 * 60_000 - 1)
    answer = hosts_that_can_run(hosts, name, now)
    assert "host-00004" not in answer.all_hosts and answer.stale == ("host-00004",)
    assert "host-00004" in hosts_that_can_run(hosts, name, now, include_stale=True).all_hosts
    # the same name with another meaning on one host: two digests, a warning, and NAME@DIGEST narrows it
    other = hosts[0].host.modeset.modes[name]
    redefined = replace(other, abi=replace(other.abi, max_rx_queue_size=1024))
    hosts[2] = replace(hosts[2], host=Host(hosts[2].name, ModeSet({**hosts[2].host.modeset.modes,
                                                                     name: redefined}), hosts[2].host.capabilities))
    answer = hosts_that_can_run(hosts, name, now)
    assert len(answer.hosts) == 2 and "different digests" in answer.sentence()
    assert hosts_that_can_run(hosts, f"{name}@{other.digest}", now).all_hosts == ["host-00000"]


def test_report_flags_pools_with_too_many_active_modes():
    records = [synthetic_record(i, SHAPE) for i in range(8)]
    ports = [(r.name, p.mode) for r in records for p in r.ports.values()]
    reports = {r.pool: r for r in active_modes_report({r.name: r.pool for r in records}, ports, max_active=2)}
    assert set(reports) == {f"pool-{i}" for i in range(8)}
    pool0 = reports["pool-0"]  # host 0 alone: its 3 ports on its 3 newest runnable modes
    assert pool0.hosts == 1 and sum(pool0.active.values()) == 3 and len(pool0.active) == 3 and pool0.at_risk
    assert "3 active modes" in pool0.why()


def test_report_flags_a_name_with_two_meanings_in_one_pool():
    """Two hosts of one pool run ports in "the same" mode, defined differently on each
    (two digests): the pool is at risk whatever its count, and the report says which name."""
    records = [synthetic_record(i, SHAPE) for i in range(2)]
    mode = next(p.mode for p in records[0].ports.values() if p.mode is not None)
    redefined = replace(mode, abi=replace(mode.abi, max_rx_queue_size=mode.abi.max_rx_queue_size // 2 or 1))
    assert redefined.name == mode.name and redefined.digest != mode.digest
    pools = {records[0].name: "east", records[1].name: "east"}
    (report,) = active_modes_report(pools, [(records[0].name, mode), (records[1].name, redefined)], max_active=5)
    assert report.ambiguous == (mode.name,) and report.at_risk and len(report.active) == 2
    assert report.why() == f"same name, different meaning: {mode.name}"
    assert report.as_dict()["ambiguous_names"] == [mode.name]
    (fine,) = active_modes_report(pools, [(records[0].name, mode), (records[1].name, mode)], max_active=5)
    assert fine.ambiguous == () and not fine.at_risk


def test_select_mode_for_a_lineage_takes_the_hosts_that_run_it():
    records = [synthetic_record(i, SHAPE) for i in range(8)]
    hosts = [fleet_host(r, 0) for r in records]
    selection = select_fleet_mode(Scope("lineage", "synthetic1.ovs-dpdk"), hosts)
    # hosts 1 and 5 run lineage 1 and offer 5 and 4 queue pairs: v3 (4 queue pairs) is the newest for both
    assert selection.hosts == ("host-00001", "host-00005") and selection.mode.name == "synthetic1.ovs-dpdk.v3"
    with pytest.raises(ValueError, match="no host"):
        select_fleet_mode(Scope("lineage", "nobody.ovs-dpdk"), hosts)


def results_of(ops: list[dict]) -> list[dict]:
    """What a server answers to `ops`: a fresh uuid per insert, a count per update."""
    return [{"uuid": ["uuid", f"20000000-0000-0000-0000-{i:012d}"]} if op["op"] == "insert" else
            {"count": 1} if op["op"] in ("update", "delete") else {} for i, op in enumerate(ops)]


def test_the_state_after_a_publish_lets_the_next_one_skip_the_read():
    record = synthetic_record(3, SHAPE)
    first = publish_operations(record, Published(), now_ms=1000)
    state = published_after(record, Published(), first, results_of(first))
    assert publish_operations(record, state, now_ms=2000) == []  # nothing changed: nothing to write
    # it matches what a read would have found (but for the uuids, which this simulation draws apart)
    read = as_server_sends(first)
    for column, value in state.host.items():
        if column not in ("_uuid", "modes", "runnable", "ports"):
            assert same(column, value, read.host), column
    assert len(state.host["modes"][1]) == 5 and len(state.host["runnable"][1]) == 5 - len(state.host["unavailable"][1])
    assert state.modes.keys() == read.modes.keys() and state.ports.keys() == read.ports.keys()
    # a change: one port's update, by the uuid its insert got
    name = sorted(record.ports)[1]
    changed = replace(record, ports={**record.ports, name: replace(record.ports[name], state="nonconformant")})
    ops = publish_operations(changed, state, now_ms=3000)
    (port_update,) = [op for op in ops if op["table"] == "Port"]
    inserted = next(r for op, r in zip(first, results_of(first))
                    if op["table"] == "Port" and op["row"]["interface_name"] == name)
    assert port_update["where"] == [["_uuid", "==", inserted["uuid"]]] and port_update["row"] == {"state": "nonconformant"}
    state = published_after(changed, state, ops, results_of(ops))
    assert publish_operations(changed, state, now_ms=4000) == []


def test_a_host_publishes_each_port_types_offer_and_readers_get_it_back():
    from vucompat.core import catalog
    from vucompat.core.mode import Capabilities
    from vucompat.ovsdb.codec import decode_row
    from vucompat.ovsdb.rows import host_capabilities

    record = synthetic_record(2, SHAPE)
    csum = catalog.lookup("VIRTIO_NET_F_CSUM").value
    offer = record.host.capabilities.abi
    client, common = replace(offer, virtio=offer.virtio | csum), replace(offer, virtio=offer.virtio & ~csum)
    caps = Capabilities.of_types({"dpdkvhostuser": common, "dpdkvhostuserclient": client}, source="probe")
    record = replace(record, host=replace(record.host, capabilities=caps))
    current = as_server_sends(publish_operations(record, Published(), now_ms=1000))
    read = host_capabilities(decode_row(current.host, "Host", "fleet"), "fleet")
    assert read.offer("dpdkvhostuserclient") == client and read.offer("dpdkvhostuser") == common
    assert read.abi == common and read.types_differ
    assert publish_operations(record, current, now_ms=2000) == []  # published as it reads back
