"""The fleet database on a real 3-server OVSDB cluster (Raft over SSL on loopback,
certificates from ovs-pki): agents publish over SSL with RBAC, schedulers query
read-only, the leader is killed mid-publish, a follower restarts and catches up."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import build_host, capabilities_toml
from vucompat_testing.ovsdb_server import select
from vucompat_testing.switch import VUCOMPAT, AgentProcess, eventually
from vucompat.core.fleet import HostRecord, hosts_that_can_run, unavailable_features
from vucompat.cli.hosts import load_host
from vucompat_testing.fleetgen import FleetShape, generate, synthetic_record
from vucompat.core.migration import Scope, check_migration, select_mode
from vucompat_testing.fleet_cluster import FleetCluster
from vucompat_testing.pki import Pki
from vucompat.ovsdb.fleet_publish import FleetPublisher, publish
from vucompat.ovsdb.fleet_read import FleetView
from vucompat.ovsdb.fleet_rows import now_ms
from vucompat.ovsdb.rpc import OvsdbError
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.schema import FLEET_DB, shipped_schema
from vucompat.core.mode import CLIENT_TYPE
from vucompat.core.portview import PortView
from vucompat.core.resolve import APPLIED

HOSTS_LISTENER, READERS_LISTENER = "pssl:0:127.0.0.1", "pssl:0:127.0.0.2"


class Fleet:
    def __init__(self, cluster: FleetCluster, pki: Pki) -> None:
        self.cluster, self.pki = cluster, pki

    @property
    def admin(self) -> str:
        return ",".join(m.admin_remote for m in self.cluster.members if m.pid is not None)

    def agents(self) -> str:
        return self.cluster.remotes(HOSTS_LISTENER)

    def readers(self) -> str:
        return self.cluster.remotes(READERS_LISTENER)

    def ssl_args(self, name: str) -> list[str]:
        return self.pki.identity(name).cli_args()

    def cli(self, *args: str, identity: str = "scheduler", check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([VUCOMPAT, "fleet", *args, *self.ssl_args(identity), "--timeout", "20"],
                              capture_output=True, text=True, timeout=120)
        if check and done.returncode not in (0, 1):
            raise AssertionError(f"vucompat fleet {' '.join(args)}: {done.returncode}: {done.stderr}")
        return done

    def rows(self, table: str, where: list | None = None) -> list[dict]:
        session = Session(self.admin, FLEET_DB, 20)
        try:
            return session.transact([{"op": "select", "table": table, "where": where or []}])[0]["rows"]
        finally:
            session.close()


@pytest.fixture(scope="module")
def fleet():
    directory = Path(tempfile.mkdtemp(prefix="vuc-fleet-", dir="/tmp"))
    pki = Pki(directory)
    cluster = FleetCluster(directory / "cluster", ssl=pki.identity("fleet-server"))
    cluster.start()
    try:
        subprocess.run([VUCOMPAT, "fleet", "configure", "--db", cluster.leader().admin_remote,
                        "--host-listener", HOSTS_LISTENER, "--reader-listener", READERS_LISTENER],
                       check=True, capture_output=True)
        yield Fleet(cluster, pki)
    finally:
        cluster.stop()
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def record(directory: Path, name: str, pool: str, ports: dict[str, str]) -> HostRecord:
    """The host a table directory describes, named `name`, with ports on named modes."""
    host = replace(load_host(directory), name=name)
    views = {}
    for iface, mode_name in ports.items():
        mode = host.modeset.expand(mode_name)
        views[iface] = PortView(name=iface, interface_uuid="", requested=mode_name, resolved=mode_name,
                                state=APPLIED, error=None, mode=mode, negotiated_features=mode.abi.virtio,
                                interface_type=CLIENT_TYPE)
    return HostRecord(host=host, ports=views, pool=pool, ovs_version="3.1.0", dpdk_version="22.11.4",
                      capabilities_source="declared" if host.capabilities else "none", heartbeat_interval=30)


def test_three_servers_elect_a_leader_and_status_says_so(fleet: Fleet):
    roles = []
    for member in fleet.cluster.members:
        done = subprocess.run([VUCOMPAT, "fleet", "status", "--ctl", str(member.ctl), "--format", "json"],
                              capture_output=True, text=True, check=True)
        status = json.loads(done.stdout)
        assert status["status"] == "cluster member" and len(status["servers"]) == 3
        roles.append(status["role"])
    assert sorted(roles) == ["follower", "follower", "leader"]


def test_the_fleet_schema_means_what_the_host_schema_means():
    host, fleet_schema = shipped_schema("registry")["tables"], shipped_schema("fleet")["tables"]
    for table in ("Compat_Mode", "Host", "Port"):
        shared = set(host[table]["columns"]) & set(fleet_schema[table]["columns"])
        assert len(shared) >= 9
        for column in shared:
            assert host[table]["columns"][column] == fleet_schema[table]["columns"][column], (table, column)


@pytest.fixture(scope="module")
def published(fleet: Fleet, tmp_path_factory) -> dict[str, HostRecord]:
    """host-a (tables up to 3.2, a backend without CSUM) and host-b (tables up to
    2.13), each published over SSL with its own certificate."""
    from vucompat.core import catalog

    root = tmp_path_factory.mktemp("hosts")
    virtio = [f.name for f in catalog.FEATURES if f.mask == "virtio" and f.name != "VIRTIO_NET_F_CSUM"]
    protocol = [f.name for f in catalog.FEATURES if f.mask == "protocol"]
    host_a = record(build_host(root, "a", capabilities=capabilities_toml(virtio, protocol), distro=False),
                    "host-a", "rack-1", {"vm1-eth0": "upstream.ovs-dpdk.v2.13", "vm2-eth0": "upstream.ovs-dpdk.v2.9",
                                         "vm4-eth0": "upstream.ovs-dpdk.v2.15"})
    host_b = record(build_host(root, "b", upstream_until="2.13", distro=False), "host-b", "rack-1",
                    {"vm3-eth0": "upstream.ovs-dpdk.v2.13"})
    for rec in (host_a, host_b):
        session = Session(fleet.agents(), FLEET_DB, 20, fleet.pki.identity(rec.name))
        try:
            assert publish(session, rec).written > 0
            assert publish(session, rec).written == 0  # nothing changed: nothing written
        finally:
            session.close()
    return {"host-a": host_a, "host-b": host_b}


def test_scheduler_queries_give_the_per_host_answers(fleet: Fleet, published: dict[str, HostRecord]):
    a, b = published["host-a"].host, published["host-b"].host
    # which hosts can run 2.13: both; 3.2: neither (host-a lacks CSUM, host-b does not define it)
    done = fleet.cli("hosts", "--fleet", fleet.readers(), "--can-run", "upstream.ovs-dpdk.v2.13", "--format", "json")
    answer = json.loads(done.stdout)
    assert done.returncode == 0 and answer["hosts"] == ["host-a", "host-b"]
    assert list(answer["by_digest"]) == [a.modeset.modes["upstream.ovs-dpdk.v2.13"].digest]
    done = fleet.cli("hosts", "--fleet", fleet.readers(), "--can-run", "upstream.ovs-dpdk.v3.2", "--format", "json")
    answer = json.loads(done.stdout)
    assert done.returncode == 1 and answer["hosts"] == []
    assert "VIRTIO_NET_F_CSUM" in answer["lacking"]["host-a"]
    # select-mode: the same selection the core makes from the hosts themselves
    done = fleet.cli("select-mode", "--fleet", fleet.readers(), "--scope", "hosts=host-a,host-b", "--format", "json")
    expected = select_mode(Scope("hosts"), [a, b])
    assert json.loads(done.stdout)["mode"] == expected.mode.name and expected.mode is not None
    done = fleet.cli("select-mode", "--fleet", fleet.readers(), "--scope", "everywhere", "--pool", "rack-1",
                     "--format", "json")
    assert json.loads(done.stdout)["mode"] == expected.mode.name
    done = fleet.cli("hosts", "--fleet", fleet.readers(), "--pool", "rack-1", "--format", "json")
    assert [h["name"] for h in json.loads(done.stdout)["hosts"]] == ["host-a", "host-b"]
    # bad input: a clear error, exit 2
    done = fleet.cli("select-mode", "--fleet", fleet.readers(), "--scope", "hosts=host-a,host-q", check=False)
    assert done.returncode == 2 and "no host host-q in the fleet database" in done.stderr
    done = fleet.cli("check-migration", "--fleet", fleet.readers(), "--port", "nope", "--source", "host-a",
                     "--dest", "host-b", check=False)
    assert done.returncode == 2 and "no port nope of host-a" in done.stderr
    done = fleet.cli("hosts", "--fleet", "ssl:127.0.0.1:1,ssl:127.0.0.1:2", check=False)
    assert done.returncode == 2 and "no server answers" in done.stderr
    # check-migration: the same verdict as the per-host API, by feature name
    verdicts = {}
    for port, src, dst in (("vm1-eth0", "host-a", "host-b"), ("vm3-eth0", "host-b", "host-a"),
                           ("vm4-eth0", "host-a", "host-b")):
        done = fleet.cli("check-migration", "--fleet", fleet.readers(), "--port", port, "--source", src,
                         "--dest", dst, "--format", "json")
        verdict = verdicts[port] = json.loads(done.stdout)
        want = check_migration(published[src].ports[port], published[src].host, published[dst].host)
        assert {k: v for k, v in verdict.items() if k not in ("stale", "freshness")} == want.as_dict()
        assert verdict["freshness"]["stale_source"] is False and verdict["freshness"]["model"] == "clustered"
        assert done.returncode == (0 if want.allowed else 1)
    # ... and what those verdicts are, as a user would check them: 2.13 moves both ways; host-b
    # does not define 2.15, so vm4 stays
    assert [verdicts[p]["allowed"] for p in ("vm1-eth0", "vm3-eth0", "vm4-eth0")] == [True, True, False]
    assert verdicts["vm1-eth0"]["level"] == "contract" and verdicts["vm1-eth0"]["mode"] == "upstream.ovs-dpdk.v2.13"
    assert verdicts["vm4-eth0"]["mode"] == "upstream.ovs-dpdk.v2.15" and "host-b" in verdicts["vm4-eth0"]["sentence"]
    assert "not defined" in verdicts["vm4-eth0"]["sentence"] or "does not define" in verdicts["vm4-eth0"]["sentence"]
    # the per-pool report: rack-1 runs 3 modes (2.13 on two ports, 2.9 and 2.15 on one each)
    done = fleet.cli("report", "--fleet", fleet.readers(), "--max-active", "1", "--format", "json")
    (pool,) = [p for p in json.loads(done.stdout)["pools"] if p["pool"] == "rack-1"]
    assert pool["active_modes"] == 3 and pool["at_risk"] and done.returncode == 1
    assert sum(pool["ports"].values()) == 4
    done = fleet.cli("report", "--fleet", fleet.readers(), "--pool", "rack-1", "--max-active", "3", "--format", "json")
    assert json.loads(done.stdout)["pools"] == [{**pool, "at_risk": False, "why": ""}] and done.returncode == 0


def test_a_warm_scheduler_sees_changes(fleet: Fleet, published: dict[str, HostRecord]):
    view = FleetView(fleet.readers(), 20, fleet.pki.identity("scheduler"))
    try:
        now = now_ms()
        mode = "upstream.ovs-dpdk.v2.13"
        assert hosts_that_can_run(view.hosts(defining=mode), mode, now).all_hosts == ["host-a", "host-b"]
        assert {h.name for h in view.hosts(pool="rack-1")} >= {"host-a", "host-b"}
        assert "host-b" not in {h.name for h in view.hosts(defining="upstream.ovs-dpdk.v3.2")}
        # host-b's backend loses MRG_RXBUF: the replica follows, 2.13 moves to "lacking"
        from vucompat.core.mode import Capabilities

        rec = published["host-b"]
        modes = rec.host.modeset.modes
        caps = Capabilities(replace(modes["upstream.ovs-dpdk.v2.13"].abi, virtio=modes[
            "upstream.ovs-dpdk.v2.13"].abi.virtio & ~(1 << 15)))
        changed = replace(rec, host=replace(rec.host, capabilities=caps), capabilities_source="probed")
        session = Session(fleet.agents(), FLEET_DB, 20, fleet.pki.identity("host-b"))
        try:
            assert publish(session, changed).written == 1  # one update of the Host row
            eventually(lambda: "host-b" in hosts_that_can_run(view.hosts(defining=mode), mode, now_ms()).lacking,
                       what="the replica to follow")
            publish(session, rec)
        finally:
            session.close()
    finally:
        view.close()


def _summary(host) -> tuple:
    return (host.name, host.pool, tuple(sorted(host.host.modeset.modes)), tuple(sorted(host.runnable)),
            tuple(sorted(host.unavailable.items())), host.host.capabilities.abi if host.host.capabilities else None)


def test_a_pool_replica_holds_its_pool_only_and_follows_hosts_in_and_out(fleet: Fleet,
                                                                          published: dict[str, HostRecord]):
    """FleetView(pools=...) monitors only the hosts of its pools (the server filters),
    and answers for them exactly as a full read does; a host that moves into the pool
    appears, one that moves out goes."""
    whole = FleetView(fleet.readers(), 20, fleet.pki.identity("scheduler"))
    rack2 = FleetView(fleet.readers(), 20, fleet.pki.identity("scheduler"), pools=["rack-2"])
    rec = replace(published["host-b"], pool="rack-2")
    session = Session(fleet.agents(), FLEET_DB, 20, fleet.pki.identity("host-b"))
    try:
        assert {h.name for h in whole.hosts()} >= {"host-a", "host-b"}
        assert [h.name for h in rack2.hosts()] == []
        publish(session, rec)  # host-b moves to rack-2
        eventually(lambda: [h.name for h in rack2.hosts()] == ["host-b"], what="host-b in the rack-2 replica")
        eventually(lambda: [h.pool for h in whole.hosts() if h.name == "host-b"] == ["rack-2"],
                   what="the whole replica to follow")
        (mine,) = rack2.hosts(pool="rack-2")
        (full,) = [h for h in whole.hosts() if h.name == "host-b"]
        assert _summary(mine) == _summary(full)
        mode = "upstream.ovs-dpdk.v2.13"
        assert hosts_that_can_run(rack2.hosts(defining=mode), mode, now_ms()).all_hosts == ["host-b"]
        publish(session, published["host-b"])  # and back to rack-1: it leaves the rack-2 replica
        eventually(lambda: rack2.hosts() == [], what="host-b to leave the rack-2 replica")
    finally:
        session.close()
        whole.close()
        rack2.close()


def test_what_the_fleet_holds_is_what_the_host_published_after_every_change(fleet: Fleet,
                                                                            published: dict[str, HostRecord]):
    """40 random changes to host-a (ports added, removed, re-stated; its backend
    changing), each published as one transaction, diffed against what the previous
    publish wrote (as the agent's publisher does; every 5th against a fresh read),
    and read back as a scheduler would."""
    import random

    from vucompat.core.compare import fits
    from vucompat.ovsdb.fleet_read import read_fleet, read_fleet_ports
    from vucompat.core.resolve import NONCONFORMANT, REJECTED

    rng = random.Random(20261122)
    rec = published["host-a"]
    modes = list(rec.host.modeset.modes.values())
    session = Session(fleet.agents(), FLEET_DB, 20, fleet.pki.identity("host-a"))
    written_state = None
    try:
        for step in range(40):
            ports = dict(rec.ports)
            action = rng.choice(["add", "add", "remove", "restate", "backend"])
            if action == "add" or not ports:
                mode = rng.choice(modes)
                name = f"p{step}"
                ports[name] = PortView(name=name, interface_uuid="", requested=mode.name, resolved=mode.name,
                                       state=APPLIED, error=None, mode=mode, negotiated_features=mode.abi.virtio,
                                       interface_type=CLIENT_TYPE)
            elif action == "remove":
                del ports[rng.choice(sorted(ports))]
            elif action == "restate":
                name = rng.choice(sorted(ports))
                state = rng.choice([NONCONFORMANT, REJECTED])
                ports[name] = replace(ports[name], state=state, mode=None if state == REJECTED else ports[name].mode,
                                      resolved=None if state == REJECTED else ports[name].resolved,
                                      error="changed in step %d" % step, violation=None)
            host = rec.host
            if action == "backend":
                abi = rng.choice(modes).abi
                host = replace(host, capabilities=replace(host.capabilities, abi=abi))
            rec = replace(rec, host=host, ports=ports)
            result = publish(session, rec, known=written_state if step % 5 else None)
            assert result.written >= 1
            written_state = result.state
            (seen,) = read_fleet(session, names=["host-a"])
            assert seen.host.capabilities.abi == rec.host.capabilities.abi
            assert {n: m.digest for n, m in seen.host.modeset.modes.items()} == {m.name: m.digest for m in modes}
            assert seen.runnable == {m.name for m in modes if fits(m.abi, rec.host.capabilities.abi)}
            assert set(seen.unavailable) == {m.name for m in modes} - seen.runnable
            held = {p.name: p for _, p in read_fleet_ports(session, host="host-a")}
            assert held.keys() == ports.keys(), step
            for name, port in ports.items():
                got = held[name]
                assert (got.state, got.resolved, got.error, got.negotiated_features) == \
                    (port.state, port.resolved, port.error, port.negotiated_features), (step, name)
                assert (got.mode.digest if got.mode else None) == (port.mode.digest if port.mode else None)
    finally:
        publish(session, published["host-a"])  # as the other tests expect it
        session.close()


def test_rbac_a_host_writes_only_its_own_rows(fleet: Fleet, published: dict[str, HostRecord]):
    before = fleet.rows("Host", [["name", "==", "host-b"]])
    session = Session(fleet.agents(), FLEET_DB, 20, fleet.pki.identity("host-a"))
    try:
        forged = [
            [{"op": "update", "table": "Host", "where": [["name", "==", "host-b"]], "row": {"pool": "stolen"}}],
            [{"op": "delete", "table": "Port", "where": [["host", "==", "host-b"]]}],
            [{"op": "insert", "table": "Host", "row": {"name": "host-z", "capabilities_source": "none",
                                                       "default_policy": "latest", "last_seen": 1,
                                                       "heartbeat_interval": 30}}],
            [{"op": "update", "table": "Compat_Mode", "where": [], "row": {"note": "forged"}}],
        ]
        for ops in forged:
            with pytest.raises(OvsdbError, match="permission error"):
                session.transact(ops)
        # modes are shared: a host may add one, but not remove one another host refers to
        with pytest.raises(OvsdbError, match="referential integrity violation"):
            session.transact([{"op": "delete", "table": "Compat_Mode", "where": []}])
        # a forged mode (its digest does not match its contents) under host-a's own row: every reader
        # leaves it out, with a warning, and answers the rest as before
        (good,) = fleet.rows("Compat_Mode", [["name", "==", "upstream.ovs-dpdk.v2.13"]])
        forged = {k: v for k, v in good.items() if k not in ("_uuid", "_version")}
        forged.update(name="upstream.ovs-dpdk.v9.9", max_queue_pairs=1)
        session.transact([{"op": "insert", "table": "Compat_Mode", "row": forged, "uuid-name": "f"},
                          {"op": "mutate", "table": "Host", "where": [["name", "==", "host-a"]],
                           "mutations": [["modes", "insert", ["set", [["named-uuid", "f"]]]],
                                         ["runnable", "insert", ["set", [["named-uuid", "f"]]]]]}])
        # its own row: allowed
        session.transact([{"op": "update", "table": "Host", "where": [["name", "==", "host-a"]],
                           "row": {"pool": "rack-1"}}])
    finally:
        session.close()
    assert fleet.rows("Host", [["name", "==", "host-b"]]) == before
    assert len(fleet.rows("Port", [["host", "==", "host-b"]])) == 1
    assert not fleet.rows("Host", [["name", "==", "host-z"]])
    done = fleet.cli("hosts", "--fleet", fleet.readers(), "--can-run", "upstream.ovs-dpdk.v9.9", "--format", "json")
    assert done.returncode == 1 and json.loads(done.stdout)["hosts"] == [] and "does not match" in done.stderr
    done = fleet.cli("hosts", "--fleet", fleet.readers(), "--can-run", "upstream.ovs-dpdk.v2.13", "--format", "json")
    assert json.loads(done.stdout)["hosts"] == ["host-a", "host-b"]
    session = Session(fleet.agents(), FLEET_DB, 20, fleet.pki.identity("host-a"))
    try:  # host-a's next publish drops the forged reference; the orphaned row is collected
        assert publish(session, published["host-a"]).written == 1
    finally:
        session.close()
    assert not fleet.rows("Compat_Mode", [["name", "==", "upstream.ovs-dpdk.v9.9"]])
    # a scheduler's listener is read-only, whatever it sends
    reader = Session(fleet.readers(), FLEET_DB, 20, fleet.pki.identity("scheduler"))
    try:
        with pytest.raises(OvsdbError):
            reader.transact([{"op": "update", "table": "Host", "where": [["name", "==", "host-b"]],
                              "row": {"pool": "stolen"}}])
        assert reader.transact([{"op": "select", "table": "Host", "where": [], "columns": ["name"]}])
    finally:
        reader.close()
    assert fleet.rows("Host", [["name", "==", "host-b"]]) == before
    # an agent that publishes under another name than its certificate's is told why it is refused
    publisher = FleetPublisher(fleet.agents(), 10, fleet.pki.identity("host-a"))
    try:
        publisher.offer(published["host-b"])
        eventually(lambda: publisher.last_error, what="the refusal")
        assert publisher.config_error == publisher.last_error  # a configuration error (test_fleet_operator.py)
        assert "it publishes as 'host-b', but its certificate" in publisher.last_error and \
            "has CN 'host-a'" in publisher.last_error
    finally:
        publisher.stop()
    assert fleet.rows("Host", [["name", "==", "host-b"]]) == before


def test_a_publish_built_on_a_stale_read_writes_nothing(fleet: Fleet, published: dict[str, HostRecord]):
    """The admin forgets host-b between the agent's read and its write: the write
    fails as a whole (its `wait`), and the next publish puts the host back whole."""
    from vucompat.ovsdb.fleet_publish import read_published
    from vucompat.ovsdb.fleet_rows import publish_operations

    rec = published["host-b"]
    session = Session(fleet.agents(), FLEET_DB, 20, fleet.pki.identity("host-b"))
    try:
        current = read_published(session, rec)
        moved = replace(rec, pool="rack-9")
        subprocess.run([VUCOMPAT, "fleet", "forget", "--db", fleet.admin, "host-b"], check=True, capture_output=True)
        with pytest.raises(OvsdbError, match="timed out"):
            session.transact(publish_operations(moved, current, now_ms()))
        assert not fleet.rows("Host", [["name", "==", "host-b"]]) and not fleet.rows("Port", [["host", "==", "host-b"]])
        assert publish(session, rec).written > 0
    finally:
        session.close()
    (row,) = fleet.rows("Host", [["name", "==", "host-b"]])
    assert row["pool"] == "rack-1" and len(fleet.rows("Port", [["host", "==", "host-b"]])) == 1


def test_publisher_heartbeats_and_puts_back_a_forgotten_host(fleet: Fleet, published: dict[str, HostRecord]):
    def host_b() -> list[dict]:
        return fleet.rows("Host", [["name", "==", "host-b"]])

    publisher = FleetPublisher(fleet.agents(), 10, fleet.pki.identity("host-b"))
    try:
        publisher.offer(replace(published["host-b"], heartbeat_interval=1))
        eventually(lambda: publisher.published >= 1, what="a first publish")
        seen = host_b()[0]["last_seen"]
        eventually(lambda: host_b()[0]["last_seen"] > seen, timeout=10, what="a heartbeat")
        subprocess.run([VUCOMPAT, "fleet", "forget", "--db", fleet.admin, "host-b"], check=True, capture_output=True)
        eventually(lambda: host_b() and len(fleet.rows("Port", [["host", "==", "host-b"]])) == 1, timeout=10,
                   what="the next heartbeat to put the forgotten host back, whole")
        assert publisher.last_error is None
    finally:
        publisher.stop()
    publish_back = Session(fleet.agents(), FLEET_DB, 20, fleet.pki.identity("host-b"))
    try:
        publish(publish_back, published["host-b"])  # heartbeat_interval 30 again
    finally:
        publish_back.close()


def test_the_fleet_generator_publishes_synthetic_hosts_over_two_connections(fleet: Fleet):
    done = subprocess.run([sys.executable, "-m", "vucompat_testing.fleetgen", "--fleet", fleet.admin, "--hosts", "24",
                           "--first", "90000", "--modes", "6", "--ports", "2", "--connections", "2"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["hosts"] == 24
    assert _counts(fleet, "host-9") == (24, 24, 48, 48)
    for n in range(90000, 90024):
        subprocess.run([VUCOMPAT, "fleet", "forget", "--db", fleet.admin, f"host-{n}"], check=True, capture_output=True)
    assert _counts(fleet, "host-9") == (0, 0, 0, 0)


def _counts(fleet: Fleet, prefix: str, remote: str | None = None) -> tuple[int, int, int, int]:
    """(host rows, distinct host names, port rows, distinct (host, port)) of the hosts named prefix*."""
    session = Session(remote or fleet.admin, FLEET_DB, 20)
    try:
        hosts, ports = session.transact([
            {"op": "select", "table": "Host", "where": [], "columns": ["name", "modes"]},
            {"op": "select", "table": "Port", "where": [], "columns": ["host", "interface_name"]}])
    finally:
        session.close()
    names = [r["name"] for r in hosts["rows"] if r["name"].startswith(prefix)]
    keys = [(r["host"], r["interface_name"]) for r in ports["rows"] if r["host"].startswith(prefix)]
    return len(names), len(set(names)), len(keys), len(set(keys))


def test_leader_killed_mid_publish_loses_and_duplicates_nothing(fleet: Fleet):
    shape = FleetShape(hosts=600, modes_per_host=50, ports_per_host=20)
    records = [synthetic_record(i, shape) for i in range(shape.hosts)]
    leader = fleet.cluster.leader()
    session = Session(fleet.admin, FLEET_DB, 20)
    progress: dict = {}
    halfway = threading.Event()

    def run() -> None:
        try:
            progress["done"] = generate(session, records, window=32, batch=64,
                                        on_batch=lambda n: n >= 150 and halfway.set())
        except Exception as err:  # noqa: BLE001 - reported below
            progress["error"] = err
            halfway.set()

    thread = threading.Thread(target=run)
    thread.start()
    readers = fleet.readers()  # the killed server's listener first or not: clients move on to the next
    view = FleetView(readers, 20, fleet.pki.identity("scheduler"))  # a warm scheduler, connected to one of them
    assert halfway.wait(120)
    fleet.cluster.kill(leader)  # SIGKILL, mid-publish
    at_kill = _counts(fleet, "host-0")[0]
    thread.join(300)
    session.close()
    assert "error" not in progress, progress.get("error")
    done = progress["done"]
    assert done.published == shape.hosts and 150 <= at_kill < shape.hosts
    print(f"killed the leader at {at_kill} hosts; {done.retried} publish(es) read back and finished")
    new_leader = fleet.cluster.wait_for_leader()
    assert new_leader is not leader
    # every host once, every port once: nothing lost, nothing duplicated
    assert _counts(fleet, "host-0") == (600, 600, 600 * 20, 600 * 20)
    for rec in records[::97]:  # and each as published (nothing half-written)
        (row,) = fleet.rows("Host", [["name", "==", rec.name]])
        assert len(row["modes"][1]) == 50 and row["pool"] == rec.pool
    # a scheduler given all three remotes is answered by a survivor
    done = fleet.cli("hosts", "--fleet", readers, "--can-run", "synthetic0.ovs-dpdk.v40", "--format", "json")
    assert len(json.loads(done.stdout)["hosts"]) == 150  # the 150 lineage-0 hosts, all able
    try:  # and the warm replica, whichever server it was on, has every host
        eventually(lambda: len(view.hosts(defining="synthetic0.ovs-dpdk.v40")) == 150, timeout=30,
                   what="the warm replica to have every host")
    finally:
        view.close()
    # the killed server comes back as a follower and catches up from the log
    fleet.cluster.start_member(leader)
    assert leader.status()["role"] == "follower"
    eventually(lambda: _counts(fleet, "host-0", leader.admin_remote) == (600, 600, 12000, 12000), timeout=60,
               what="the restarted server to catch up")
    # a follower stopped while 60 more hosts are published catches up when it is back
    follower = next(m for m in fleet.cluster.members if m.pid is not None and m.status()["role"] == "follower")
    fleet.cluster.kill(follower, signal.SIGTERM)
    more = [synthetic_record(i, FleetShape(hosts=660)) for i in range(600, 660)]
    session = Session(fleet.admin, FLEET_DB, 20)
    try:
        assert generate(session, more).published == 60
    finally:
        session.close()
    fleet.cluster.start_member(follower)
    eventually(lambda: _counts(fleet, "host-0", follower.admin_remote) == (660, 660, 13200, 13200), timeout=60,
               what="the restarted follower to catch up")


def test_agent_publishes_keeps_working_while_the_fleet_is_down_and_goes_stale(fleet: Fleet, ovsdb_servers,
                                                                               tmp_path: Path):
    """The last test on the shared cluster: it freezes the whole cluster for a while."""
    server = ovsdb_servers("agent-host")
    subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote, "--host-name", "host-c"], check=True,
                   capture_output=True)

    def vsctl(*args: str) -> None:
        subprocess.run(["ovs-vsctl", f"--db={server.unix_remote}", "--no-wait", *args], check=True,
                       capture_output=True)

    def add_port(name: str, mode: str) -> None:
        vsctl("add-port", "br0", name, "--", "set", "Interface", name, "type=dpdkvhostuserclient",
              f"options:vhost-server-path={tmp_path / name}.sock", f"options:vhost-compat={mode}")

    def fleet_ports() -> set[str]:
        return {r["interface_name"] for r in fleet.rows("Port", [["host", "==", "host-c"]])}

    vsctl("init")
    vsctl("add-br", "br0")
    add_port("c1", "upstream.ovs-dpdk.v2.13")
    agent = AgentProcess(tmp_path, server.unix_remote, enforce=False,
                         extra=["--fleet", fleet.agents(), "--fleet-name", "host-c", "--pool", "rack-2",
                                "--heartbeat", "1", "--timeout", "2", *fleet.ssl_args("host-c")])
    agent.start()
    try:
        eventually(lambda: fleet_ports() == {"c1"}, timeout=30, what="host-c and its port in the fleet")
        (row,) = fleet.rows("Host", [["name", "==", "host-c"]])
        assert row["pool"] == "rack-2" and len(row["modes"][1]) == len(load_host_modes(server.unix_remote))
        # the whole cluster hangs: the agent warns, goes on resolving ports, and catches up after
        for member in fleet.cluster.members:
            os.kill(member.pid, signal.SIGSTOP)
        try:
            add_port("c2", "upstream.ovs-dpdk.v2.9")
            eventually(lambda: any(r["interface_name"] == "c2" and r["state"] == "applied"
                                   for r in select(server.unix_remote, "Port")), what="c2 resolved locally")
            eventually(lambda: "fleet database unreachable" in agent.text(), timeout=30, what="the warning")
        finally:
            for member in fleet.cluster.members:
                os.kill(member.pid, signal.SIGCONT)
        eventually(lambda: fleet_ports() == {"c1", "c2"}, timeout=60, what="the agent to catch up")
        eventually(lambda: "reachable again" in agent.text(), what="the agent to say the fleet is back")
    finally:
        agent.stop()
    # it stops publishing: after 3 heartbeats it is stale, marked, kept, and not offered for placement
    time.sleep(3.5)
    done = fleet.cli("hosts", "--fleet", fleet.readers(), "--format", "json")
    (listed,) = [h for h in json.loads(done.stdout)["hosts"] if h["name"] == "host-c"]
    assert listed["stale"] is True
    done = fleet.cli("hosts", "--fleet", fleet.readers(), "--can-run", "upstream.ovs-dpdk.v2.13", "--format",
                     "json")
    answer = json.loads(done.stdout)
    assert "host-c" in answer["stale"] and "host-c" not in answer["hosts"]
    # leave the fleet as this test found it, whatever runs next: a leader again, and no host-c
    fleet.cluster.wait_for_leader()
    session = Session(fleet.admin, FLEET_DB, 20)
    try:
        session.transact([{"op": "delete", "table": "Host", "where": [["name", "==", "host-c"]]}])
    finally:
        session.close()
    assert not fleet.rows("Host", [["name", "==", "host-c"]])


def load_host_modes(remote: str) -> list[str]:
    return [r["name"] for r in select(remote, "Compat_Mode") if not r["derived_from"][1]]


def test_the_documented_cli_steps_build_a_cluster(tmp_path: Path):
    """create-cluster, join-cluster, start and status, as docs/fleet.md runs them."""
    from vucompat_testing.net import free_port
    from vucompat_testing.processes import stop_pid

    run = Path(tempfile.mkdtemp(prefix="vuc-steps-", dir="/tmp"))  # short: unix socket paths
    first, second = f"tcp:127.0.0.1:{free_port()}", f"tcp:127.0.0.1:{free_port()}"
    pids = []
    try:
        def vuc(*args: str, expect: int = 0) -> str:
            done = subprocess.run([VUCOMPAT, "fleet", *args], capture_output=True, text=True, timeout=60)
            assert done.returncode == expect, done.stderr
            return done.stdout + done.stderr

        vuc("create-cluster", "--db-file", str(run / "a.db"), "--local", first)
        assert "already exists" in vuc("create-cluster", "--db-file", str(run / "a.db"), "--local", first, expect=2)
        assert "not a raft address" in vuc("join-cluster", "--db-file", str(run / "b.db"), "--local", "127.0.0.1:1",
                                           "--remote", first, expect=2)
        assert not (run / "b.db").exists()  # a refused step leaves nothing behind
        vuc("join-cluster", "--db-file", str(run / "b.db"), "--local", second, "--remote", first)
        for name in ("a", "b"):
            assert "ovsdb-server" in vuc("start", "--db-file", str(run / f"{name}.db"), "--rundir", str(run / name),
                                         "--dry-run")
            vuc("start", "--db-file", str(run / f"{name}.db"), "--rundir", str(run / name))
            pids.append(int((run / name / "fleet.pid").read_text()))

        def joined() -> bool:
            status = json.loads(vuc("status", "--ctl", str(run / "b" / "fleet.ctl"), "--format", "json"))
            return status["status"] == "cluster member" and len(status["servers"]) == 2

        eventually(joined, timeout=30, what="the second server to join")
    finally:
        for pid in pids:
            stop_pid(pid)
        subprocess.run(["rm", "-rf", str(run)], check=False)


def test_a_fleet_from_before_the_counts_lists_right_and_upgrades_online(tmp_path: Path, caplog):
    """`fleet hosts` reads the counts hosts publish, not every host's mode references.
    A fleet on schema 1.1 (no counts) takes today's agents all the same (they leave
    out what it lacks, and say so once), and its hosts are listed right; `vucompat
    fleet upgrade` converts it online and keeps its listeners."""
    old_schema = Path(__file__).parent / "fixtures" / "vucompat-fleet-1.1.0.ovsschema"
    run = Path(tempfile.mkdtemp(prefix="vuc-upg-", dir="/tmp"))
    cluster = FleetCluster(run, size=1, schema=old_schema)
    cluster.start()
    try:
        admin = cluster.members[0].admin_remote
        subprocess.run([VUCOMPAT, "fleet", "configure", "--db", admin, "--host-listener", "ptcp:0:127.0.0.1"],
                       check=True, capture_output=True)
        shape = FleetShape(hosts=3)
        records = [synthetic_record(i, shape) for i in range(3)]
        # today's agents publish before the fleet is upgraded (the wrong order, as a rolling upgrade may
        # go): without the columns the fleet lacks, said once, instead of failing every publish
        with caplog.at_level(logging.WARNING, logger="vucompat.fleet"):
            publishers = [FleetPublisher(admin, 10) for _ in records]
            try:
                for publisher, rec in zip(publishers, records):
                    publisher.offer(rec)
                eventually(lambda: all(p.published for p in publishers), what="every host published")
                assert not any(p.last_error for p in publishers)
                assert publishers[0].lacking == {"Host": frozenset({"mode_count", "runnable_count"})}
            finally:
                for publisher in publishers:
                    publisher.stop()
        said = [r.getMessage() for r in caplog.records if "schema is older" in r.getMessage()]
        assert len(said) == 3 and "it has no Host.mode_count, Host.runnable_count" in said[0] and \
            "run `vucompat fleet upgrade`" in said[0]
        want = [{"name": r.name, "modes": len(r.host.modeset.modes),
                 "runnable": len(r.host.modeset.modes) - len(unavailable_features(r))} for r in records]
        assert 0 < want[0]["runnable"] <= want[0]["modes"]

        def listed() -> list[dict]:
            done = subprocess.run([VUCOMPAT, "fleet", "hosts", "--fleet", admin, "--format", "json"],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return [{k: h[k] for k in ("name", "modes", "runnable")} for h in json.loads(done.stdout)["hosts"]]

        assert listed() == want  # schema 1.1: the references are counted
        done = subprocess.run([VUCOMPAT, "fleet", "upgrade", "--db", admin], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "converted from schema 1.1.0 to 1.2.0" in done.stdout and "agents on ptcp:0:127.0.0.1" in done.stdout
        (connection,) = Fleet(cluster, None).rows("Connection")  # type: ignore[arg-type]
        assert connection["target"] == "ptcp:0:127.0.0.1"
        assert listed() == want  # converted, rows without counts: the references are counted
        session = Session(admin, FLEET_DB, 20)
        publish(session, records[0])  # published again by today's agent: the counts are written
        (row,) = session.transact([{"op": "select", "table": "Host", "where": [["name", "==", records[0].name]],
                                    "columns": ["mode_count", "runnable_count"]}])[0]["rows"]
        session.close()
        assert (row["mode_count"], row["runnable_count"]) == (want[0]["modes"], want[0]["runnable"])
        assert listed() == want
        again = subprocess.run([VUCOMPAT, "fleet", "upgrade", "--db", admin], capture_output=True, text=True,
                               timeout=60)
        assert again.returncode == 0 and "already at schema 1.2.0" in again.stdout
    finally:
        cluster.stop()
        subprocess.run(["rm", "-rf", str(run)], check=False)
