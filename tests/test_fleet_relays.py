"""Read relays of the fleet (ovsdb-server with a relay:VuCompat_Fleet database, as
OVN runs relays) on a real 3-server cluster over SSL with RBAC: a relay answers the
scheduler's questions exactly as the cluster does, is read-only with the reader's
role whatever certificate a client shows, and follows the cluster through a leader
kill and through the loss of its own source."""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import build_host, capabilities_toml
from test_fleet import HOSTS_LISTENER, READERS_LISTENER, Fleet, record
from vucompat.core import catalog
from vucompat.core.fleet import HostRecord, hosts_that_can_run
from vucompat.ovsdb.fleet_publish import publish
from vucompat.ovsdb.fleet_read import FleetView
from vucompat.ovsdb.fleet_relay import running_pid
from vucompat.ovsdb.fleet_rows import now_ms
from vucompat.ovsdb.rpc import OvsdbError
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.ovsdb.session import Session
from vucompat_testing.fleet_cluster import FleetCluster, Relay
from vucompat_testing.pki import Pki
from vucompat_testing.processes import stop_pid
from vucompat_testing.switch import VUCOMPAT, eventually

#: the relays' own listeners (port 0: the kernel picks one per relay)
RELAY_LISTENER = "pssl:0:127.0.0.3"


class Relayed(Fleet):
    def __init__(self, cluster: FleetCluster, pki: Pki, relays: list[Relay]) -> None:
        super().__init__(cluster, pki)
        self.relays = relays

    def relayed(self) -> str:
        """What a scheduler is given: the relays' listeners."""
        return ",".join(r.remotes() for r in self.relays)

    def member_of(self, remote: str):
        """The member whose reader listener is `remote` (ssl:127.0.0.2:PORT)."""
        port = int(remote.rsplit(":", 1)[1])
        return next(m for m in self.cluster.members
                    if m.pid is not None and self.cluster.listener_ports(m, [READERS_LISTENER])[READERS_LISTENER] == port)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory):
    """A 3-server cluster over SSL, two relays of it (each with its own certificate,
    sourced from the members' read-only reader listener), and host-a and host-b
    published by their agents' certificates."""
    directory = Path(tempfile.mkdtemp(prefix="vuc-relays-", dir="/tmp"))
    pki = Pki(directory)
    cluster = FleetCluster(directory / "cluster", ssl=pki.identity("fleet-server"))
    relays: list[Relay] = []
    cluster.start()
    try:
        subprocess.run([VUCOMPAT, "fleet", "configure", "--db", cluster.leader().admin_remote,
                        "--host-listener", HOSTS_LISTENER, "--reader-listener", READERS_LISTENER],
                       check=True, capture_output=True)
        source = cluster.remotes(READERS_LISTENER)
        for i in (1, 2):
            relays.append(Relay(directory / f"relay{i}", source, (RELAY_LISTENER,), pki.identity(f"fleet-relay{i}")))
            relays[-1].start(60)
        fleet = Relayed(cluster, pki, relays)
        root = tmp_path_factory.mktemp("relay-hosts")

        virtio = [f.name for f in catalog.FEATURES if f.mask == "virtio" and f.name != "VIRTIO_NET_F_CSUM"]
        protocol = [f.name for f in catalog.FEATURES if f.mask == "protocol"]
        fleet.records = {
            "host-a": record(build_host(root, "a", capabilities=capabilities_toml(virtio, protocol), distro=False),
                             "host-a", "rack-1", {"vm1-eth0": "upstream.ovs-dpdk.v2.13",
                                                  "vm4-eth0": "upstream.ovs-dpdk.v2.15"}),
            "host-b": record(build_host(root, "b", upstream_until="2.13", distro=False), "host-b", "rack-1",
                             {"vm3-eth0": "upstream.ovs-dpdk.v2.13"})}
        for rec in fleet.records.values():
            publish_as(fleet, rec)
        yield fleet
    finally:
        for relay in relays:
            relay.stop()
        cluster.stop()
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def publish_as(fleet: Fleet, rec: HostRecord) -> None:
    """Publish `rec` as its agent does: over SSL with its own certificate, to the members."""
    session = Session(fleet.agents(), FLEET_DB, 20, fleet.pki.identity(rec.name))
    try:
        publish(session, rec)
    finally:
        session.close()


def answer(fleet: Fleet, remotes: str, *args: str) -> tuple[int, dict]:
    """(exit code, the JSON answer without its freshness) of a fleet query."""
    done = fleet.cli(*args, "--fleet", remotes, "--format", "json")
    data = json.loads(done.stdout)
    assert data.pop("freshness")["stale_source"] is False
    return done.returncode, data


QUERIES = [
    ("hosts",),
    ("hosts", "--pool", "rack-1"),
    ("hosts", "--can-run", "upstream.ovs-dpdk.v2.13"),
    ("hosts", "--can-run", "upstream.ovs-dpdk.v3.2"),
    ("select-mode", "--scope", "hosts=host-a,host-b"),
    ("select-mode", "--scope", "everywhere", "--pool", "rack-1"),
    ("check-migration", "--port", "vm1-eth0", "--source", "host-a", "--dest", "host-b"),
    ("check-migration", "--port", "vm4-eth0", "--source", "host-a", "--dest", "host-b"),
    ("report", "--max-active", "1"),
]


def _same(code_data: tuple[int, dict]) -> tuple[int, dict]:
    """An answer without what differs between two reads a moment apart (the age of each host's publish)."""
    code, data = code_data
    for host in data.get("hosts", []):
        if isinstance(host, dict):
            host.pop("seconds_since_publish")
    return code, data


def test_a_relay_answers_as_the_cluster(relayed: Relayed):
    for relay in relayed.relays:
        for query in QUERIES:
            over_relay, over_member = (_same(answer(relayed, r, *query)) for r in (relay.remotes(), relayed.readers()))
            assert over_relay == over_member, query
    # the answers are the right ones, not only the same ones
    code, data = answer(relayed, relayed.relayed(), "hosts", "--can-run", "upstream.ovs-dpdk.v2.13")
    assert code == 0 and data["hosts"] == ["host-a", "host-b"]
    code, data = answer(relayed, relayed.relayed(), "check-migration", "--port", "vm4-eth0", "--source", "host-a",
                        "--dest", "host-b")
    assert code == 1 and data["allowed"] is False  # host-b does not define 2.15
    # each answer says who gave it: a relay, connected to its source
    done = relayed.cli("hosts", "--fleet", relayed.relays[0].remotes(), "--format", "json")
    freshness = json.loads(done.stdout)["freshness"]
    assert freshness["model"] == "relay" and freshness["connected"] and freshness["index"] is None
    done = relayed.cli("hosts", "--fleet", relayed.readers(), "--format", "json")
    freshness = json.loads(done.stdout)["freshness"]
    assert freshness["model"] == "clustered" and freshness["connected"] and freshness["index"] > 0
    # a warm replica on the relays holds what one on the members holds
    views = [FleetView(r, 20, relayed.pki.identity("scheduler")) for r in (relayed.relayed(), relayed.readers())]
    try:
        mode = "upstream.ovs-dpdk.v2.13"
        on_relay, on_member = (hosts_that_can_run(v.hosts(defining=mode), mode, now_ms()).as_dict() for v in views)
        assert on_relay == on_member and on_relay["hosts"] == ["host-a", "host-b"]
        assert views[0].freshness.model == "relay" and not views[0].freshness.stale_source
    finally:
        for view in views:
            view.close()


def test_a_relay_is_read_only_with_the_reader_role(relayed: Relayed):
    before = relayed.rows("Host", [["name", "==", "host-a"]])
    update = [{"op": "update", "table": "Host", "where": [["name", "==", "host-a"]], "row": {"pool": "stolen"}}]
    # whatever certificate the client shows, even host-a's own: the relay's listener has the reader role
    for identity in ("scheduler", "host-a"):
        session = Session(relayed.relayed(), FLEET_DB, 20, relayed.pki.identity(identity))
        try:
            with pytest.raises(OvsdbError, match="permission error"):
                session.transact(update)
            assert session.transact([{"op": "select", "table": "Host", "where": [], "columns": ["name"]}])
        finally:
            session.close()
    # the relay's own admin socket (no role) forwards writes to its source, the members' reader listener: refused
    relay = relayed.relays[0]
    session = Session(relay.admin_remote, FLEET_DB, 20)
    try:
        with pytest.raises(OvsdbError, match="permission error"):
            session.transact(update)
    finally:
        session.close()
    assert relayed.rows("Host", [["name", "==", "host-a"]]) == before
    # relay-status: connected, its source answers, its listener with the reader's role, read-only, bound
    done = subprocess.run([VUCOMPAT, "fleet", "relay-status", "--rundir", str(relay.directory), "--format", "json"],
                          capture_output=True, text=True, check=True)
    status = json.loads(done.stdout)
    assert status["connected"] and status["source_answers"] and status["pid"] == relay.pid
    (listener,) = status["listeners"]
    assert listener["target"] == RELAY_LISTENER and listener["role"] == "vucompat-reader" and listener["read_only"]
    assert relay.remotes() == f"ssl:127.0.0.3:{listener['bound_port']}"
    assert status["source"] == relay.cluster


def test_relays_follow_the_cluster_through_a_leader_kill_and_the_loss_of_their_source(relayed: Relayed):
    cluster = relayed.cluster
    view = FleetView(relayed.relayed(), 20, relayed.pki.identity("scheduler"))  # a warm scheduler, on a relay
    rec = relayed.records["host-b"]
    late = []

    def publish_late(name: str) -> None:
        from dataclasses import replace

        late.append(name)
        session = Session(relayed.admin, FLEET_DB, 20)
        try:  # as its agent would, through any member (the admin socket: no certificate for each name)
            publish(session, replace(rec, host=replace(rec.host, name=name), ports={}))
        finally:
            session.close()

    def every_relay_has(name: str) -> None:
        for relay in relayed.relays:
            eventually(lambda: name in [h["name"] for h in json.loads(
                relayed.cli("hosts", "--fleet", relay.remotes(), "--format", "json").stdout)["hosts"]],
                timeout=30, what=f"{relay.directory.name} to show {name}")
        eventually(lambda: name in {h.name for h in view.hosts()}, timeout=30, what=f"the replica to show {name}")
        assert not view.freshness.stale_source

    try:
        assert {h.name for h in view.hosts()} >= {"host-a", "host-b"}
        # the leader is killed (SIGKILL); the other two elect a new one; a host published then reaches the relays
        leader = cluster.leader()
        cluster.kill(leader)
        assert cluster.wait_for_leader() is not leader
        publish_late("host-late1")
        every_relay_has("host-late1")
        cluster.start_member(leader)  # back as a follower, on new listener ports (port 0) the relays do not know
        # the member relay1 reads from is killed (SIGKILL): it moves to the one member of its list left, and follows
        relay = relayed.relays[0]
        source = relay.source()
        member = relayed.member_of(source)
        assert member is not leader
        cluster.kill(member)
        cluster.wait_for_leader()
        publish_late("host-late2")
        every_relay_has("host-late2")
        assert relay.source() not in (None, source)
        cluster.start_member(member)
        for relay in relayed.relays:
            assert relay.status()["connected"]
    finally:
        view.close()
        for name in late:
            subprocess.run([VUCOMPAT, "fleet", "forget", "--db", relayed.admin, name], check=False,
                           capture_output=True)


def test_the_documented_relay_commands(relayed: Relayed):
    """start-relay (--dry-run, a second start refused), relay-status, as docs/fleet.md runs them."""
    run = Path(tempfile.mkdtemp(prefix="vuc-relay-cli-", dir="/tmp"))
    ssl = relayed.pki.identity("fleet-relay3").cli_args()
    args = ["fleet", "start-relay", "--rundir", str(run), "--cluster", relayed.readers(),
            "--reader-listener", "pssl:0:127.0.0.4", *ssl]

    def vuc(*extra: str, expect: int = 0, command: list[str] = args) -> str:
        done = subprocess.run([VUCOMPAT, *command, *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == expect, done.stderr
        return done.stdout + done.stderr

    pid = None
    try:
        dry = vuc("--dry-run")
        assert f"relay:{FLEET_DB}:{relayed.readers()}" in dry and "--remote=db:VuCompat_Fleet_Server,Server,connections" \
            in dry and not (run / "relay.pid").exists()
        assert "not a passive remote" in vuc(command=["fleet", "start-relay", "--rundir", str(run), "--cluster",
                                                      relayed.readers(), "--reader-listener", "6651", *ssl], expect=2)
        assert "--ssl-key" in vuc(command=["fleet", "start-relay", "--rundir", str(run), "--cluster",
                                           relayed.readers(), "--reader-listener", "pssl:6651"], expect=2)
        assert "started relay" in vuc()
        pid = running_pid(run)
        assert pid is not None
        assert f"already (pid {pid})" in vuc(expect=2)
        status = ["fleet", "relay-status", "--rundir", str(run)]
        eventually(lambda: subprocess.run([VUCOMPAT, *status], capture_output=True).returncode == 0, timeout=30,
                   what="the relay to connect")
        text = vuc(command=status)
        assert "connected to its source" in text and "pssl:0:127.0.0.4: role vucompat-reader, read-only, bound port" \
            in text
        # stopped: relay-status cannot reach it (exit 2)
        subprocess.run(["ovs-appctl", "-t", str(run / "relay.ctl"), "exit"], check=True, capture_output=True)
        eventually(lambda: running_pid(run) is None, what="the relay to exit")
        pid = None
        vuc(command=status, expect=2)
    finally:
        stop_pid(pid)
        subprocess.run(["rm", "-rf", str(run)], check=False)


def test_relay_status_says_when_the_source_stops_answering(relayed: Relayed):
    """A relay sourced from one member only: that member frozen (SIGSTOP), the relay
    still says it is connected (for 30 s, as OVS's relays do), but relay-status
    sees that its source does not answer and exits 1."""
    member = next(m for m in relayed.cluster.members if m.pid is not None)
    only = f"ssl:127.0.0.2:{relayed.cluster.listener_ports(member, [READERS_LISTENER])[READERS_LISTENER]}"
    relay = Relay(relayed.cluster.directory.parent / "relay-one", only, (RELAY_LISTENER,),
                  relayed.pki.identity("fleet-relay1"))
    relay.start(60)
    try:
        member.kill(signal.SIGSTOP)
        try:
            done = subprocess.run([VUCOMPAT, "fleet", "relay-status", "--rundir", str(relay.directory), "--format",
                                   "json"], capture_output=True, text=True)
            status = json.loads(done.stdout)
            assert done.returncode == 1 and status["connected"] and not status["source_answers"]
        finally:
            member.kill(signal.SIGCONT)
        eventually(lambda: relay.status()["source_answers"], timeout=30, what="the source to answer again")
    finally:
        relay.stop()
