"""Honest reads (docs/fleet.md, "Honest reads"): every answer of the fleet says how
fresh it is, and an answer from a server that is not connected to its cluster (or a
relay not connected to its source) is marked, on a real 3-server cluster and a relay
of it. Servers are killed with SIGKILL: first the relay's only source (the relay
keeps answering from its copy, then says it is disconnected: its answers are marked,
a client given other remotes moves on), then the leader of the two left, so that the
survivor is alone: no answer of it passes unmarked once it says it is disconnected."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from vucompat.ovsdb import rpc
from vucompat.ovsdb.fleet_read import FleetView
from vucompat.ovsdb.freshness import SERVER_STATUS_DB, Freshness, SourceState, status_operations
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.ovsdb.session import Session
from vucompat_testing.fleet_cluster import FleetCluster, Relay
from vucompat_testing.switch import VUCOMPAT, eventually

HOSTS, READERS = "ptcp:0:127.0.0.1", "ptcp:0:127.0.0.2"


def connected(admin_remote: str) -> bool:
    """What a server says of itself now (its _Server row, through its admin socket)."""
    (reply,) = rpc.transact(admin_remote, SERVER_STATUS_DB, status_operations(FLEET_DB), 5)
    return bool(reply["rows"][0]["connected"])


def names(session: Session) -> set[str]:
    (reply,) = session.transact([{"op": "select", "table": "Host", "where": [], "columns": ["name"]}])
    return {row["name"] for row in reply["rows"]}


def cli(remotes: str, *args: str) -> tuple[int, dict, str]:
    done = subprocess.run([VUCOMPAT, "fleet", *args, "--fleet", remotes, "--format", "json", "--timeout", "10"],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(done.stdout) if done.stdout else {}, done.stderr


def publish_hosts(admin: str, first: int, count: int) -> None:
    subprocess.run([sys.executable, "-m", "vucompat_testing.fleetgen", "--fleet", admin, "--hosts", str(count),
                    "--first", str(first), "--modes", "4", "--ports", "1"], check=True, capture_output=True)


class Watch(threading.Thread):
    """Reads the fleet over and over through a reading session on `remotes`, and
    records, for each answer, whether `server` (its admin socket) said it was
    disconnected just before the read, and the answer's freshness."""

    def __init__(self, remotes: str, server: str) -> None:
        super().__init__(daemon=True)
        self.remotes, self.server = remotes, server
        self.seen: list[tuple[bool, Freshness | None, set[str] | None]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                disconnected = not connected(self.server)
            except rpc.OvsdbError:
                disconnected = True
            session = Session(self.remotes, FLEET_DB, 5, check_source=True)
            try:
                found = names(session)
                self.seen.append((disconnected, session.freshness, found))
            except rpc.OvsdbError:
                self.seen.append((disconnected, None, None))
            finally:
                session.close()
            time.sleep(0.05)


@pytest.fixture
def cluster():
    directory = Path(tempfile.mkdtemp(prefix="vuc-fresh-", dir="/tmp"))
    cluster = FleetCluster(directory / "cluster")
    relays: list[Relay] = []
    cluster.start()
    try:
        subprocess.run([VUCOMPAT, "fleet", "configure", "--db", cluster.leader().admin_remote, "--host-listener",
                        HOSTS, "--reader-listener", READERS], check=True, capture_output=True)
        yield cluster, relays, directory
    finally:
        for relay in relays:
            relay.stop()
        cluster.stop()
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def test_no_stale_answer_passes_unmarked(cluster):
    cluster, relays, directory = cluster
    s1, s2, s3 = cluster.members
    publish_hosts(cluster.leader().admin_remote, 0, 8)
    readers = {m.directory.name: f"tcp:127.0.0.2:{cluster.listener_ports(m, [READERS])[READERS]}"
               for m in cluster.members}
    # a relay whose only source is s3's reader listener
    relay = Relay(directory / "relay", readers[s3.directory.name])
    relays.append(relay)
    relay.start(60)
    relay_remote = relay.remotes()
    code, data, _ = cli(relay_remote, "hosts")
    assert code == 0 and len(data["hosts"]) == 8
    assert data["freshness"]["model"] == "relay" and data["freshness"]["stale_source"] is False
    code, data, _ = cli(",".join(readers.values()), "hosts")
    assert data["freshness"]["model"] == "clustered" and data["freshness"]["index"] > 0
    view = FleetView(relay_remote, 10)  # a warm replica on the relay
    assert len(view.hosts()) == 8 and not view.freshness.stale_source

    # 1. the relay's only source is killed: the cluster (s1, s2) goes on, and a host published now never reaches
    # the relay; it says it is connected for 30 s more (OVS's relays ride out a reconnect), then that it is not
    watch = Watch(relay_remote, relay.admin_remote)
    watch.start()
    killed = time.monotonic()
    cluster.kill(s3)
    leader = cluster.wait_for_leader()
    publish_hosts(leader.admin_remote, 100, 1)
    try:
        eventually(lambda: not connected(relay.admin_remote), timeout=60, what="the relay to say it is disconnected")
        said = time.monotonic() - killed
        eventually(lambda: any(d and f is not None for d, f, _ in watch.seen), timeout=10, what="an answer after that")
    finally:
        watch.halt.set()
        watch.join(30)
    answered = [(d, f, n) for d, f, n in watch.seen if f is not None]
    assert answered and all(len(n) == 8 for _, _, n in answered)  # the relay never had the new host
    for disconnected, freshness, _ in answered:
        if disconnected:  # the relay said so before the read: the answer must be marked
            assert freshness.stale_source and freshness.model == "relay" and "relay" in freshness.why
    print(f"the relay said it was disconnected {said:.1f} s after its source was killed; "
          f"{sum(1 for d, f, _ in answered if not f.stale_source)} unmarked answers before, "
          f"{sum(1 for d, f, _ in answered if f.stale_source)} marked after")
    # the CLI: the answer, marked, and exit 3; --allow-stale exits as usual, the mark stays
    code, data, err = cli(relay_remote, "hosts")
    assert code == 3 and len(data["hosts"]) == 8 and data["freshness"]["stale_source"] is True
    assert data["freshness"]["model"] == "relay" and "WARNING: this answer may be stale" in err
    code, data, _ = cli(relay_remote, "hosts", "--allow-stale")
    assert code == 0 and data["freshness"]["stale_source"] is True
    # given other remotes too, a client moves on to a connected member, which has the new host
    code, data, _ = cli(",".join([relay_remote, readers[s1.directory.name], readers[s2.directory.name]]), "hosts")
    assert code == 0 and len(data["hosts"]) == 9 and data["freshness"]["stale_source"] is False
    assert data["freshness"]["model"] == "clustered" and data["freshness"]["source"] in (readers[s1.directory.name], readers[s2.directory.name])
    # the warm replica left the relay, finds no other server, and says its copy is stale
    assert len(view.hosts()) == 8
    eventually(lambda: view.hosts() is not None and view.freshness.stale_source, timeout=10,
               what="the replica to say it is stale")
    assert view.freshness.fresh_at is not None and view.freshness.fresh_at < view.freshness.read_at
    view.close()

    # 2. the leader of the two left is killed: the survivor is alone. It says it is connected until its first
    # election fails (a follower's copy, as raft allows), then that it is not: every answer after that is marked
    survivor = s1 if leader is s2 else s2
    members = f"{readers[s1.directory.name]},{readers[s2.directory.name]}"
    view = FleetView(members, 10)
    assert len(view.hosts()) == 9 and view.freshness.model == "clustered" and not view.freshness.stale_source
    watch = Watch(members, survivor.admin_remote)
    watch.start()
    killed = time.monotonic()
    cluster.kill(leader)
    try:
        eventually(lambda: not connected(survivor.admin_remote), timeout=30, what="the survivor to say it is alone")
        said = time.monotonic() - killed
        eventually(lambda: sum(1 for d, f, _ in watch.seen if d and f is not None) >= 3, timeout=10,
                   what="answers after that")
    finally:
        watch.halt.set()
        watch.join(30)
    answered = [(d, f) for d, f, _ in watch.seen if f is not None]
    marked = [f for d, f in answered if d]
    assert marked and all(f.stale_source and f.model == "clustered" and not f.connected for f in marked)
    assert all(f.source == readers[survivor.directory.name] for f in marked)
    print(f"the survivor said it was disconnected {said:.1f} s after the leader was killed; "
          f"{len(answered) - len(marked)} answers before (unmarked: {sum(1 for _, f in answered if not f.stale_source)}),"
          f" {len(marked)} after, all marked")
    for query in (["hosts"], ["hosts", "--can-run", "synthetic0.ovs-dpdk.v3"], ["report"],
                  ["select-mode", "--scope", "everywhere", "--pool", "pool-0"]):
        code, data, err = cli(members, *query)
        assert code == 3 and data["freshness"]["stale_source"] is True, query
        assert data["freshness"]["source"] == readers[survivor.directory.name] and "not connected to its cluster" in err
    eventually(lambda: view.hosts() is not None and view.freshness.stale_source, timeout=10,
               what="the replica to say it is stale")
    view.close()


def test_what_makes_a_copy_stale():
    """The rules a reading session applies to a server's _Server row, without servers."""
    state = SourceState("tcp:a:1", "clustered", True, True, 10)
    assert state.problem() is None and state.problem(11) is not None and "older copy" in state.problem(11)
    assert "not connected to its cluster" in SourceState("tcp:b:1", "clustered", False, False, 12).problem()
    assert "relay" in SourceState("tcp:c:1", "relay", False, False, None).problem()
    assert SourceState("tcp:d:1", "standalone", True, True, None).problem() is None
    fresh, stale = Freshness.of(state), Freshness.of(SourceState("tcp:b:1", "clustered", False, False, 12))
    assert not fresh.stale_source and fresh.fresh_at == fresh.read_at and stale.stale_source and stale.fresh_at is None
    assert fresh.worst(stale) is stale and stale.worst(fresh) is stale and fresh.worst(None) is fresh
    assert SourceState.from_rows("r", [{"model": "clustered", "connected": True, "leader": False,
                                        "index": ["set", []]}]).index is None
    assert SourceState.from_rows("r", [{"model": "clustered", "connected": True, "leader": False, "index": 7}]).index == 7
