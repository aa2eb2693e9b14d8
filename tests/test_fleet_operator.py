"""What an operator meets (issue 16, item 6), on real servers: three fleet servers on
one machine, each with its own fixed ports, and the ports they bound in `fleet
status`; a dead ssl: server is "Connection refused" at once; an agent whose server
lacks Open_vSwitch is told so, once; a certificate whose CN is not the host's fleet name
is a configuration error, said once, tried again slowly."""

from __future__ import annotations

import json
import socket
import ssl
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from conftest import build_host
from vucompat.cli.hosts import load_host
from vucompat.core.fleet import HostRecord
from vucompat.ovsdb.fleet_publish import FleetPublisher, publish
from vucompat.ovsdb.rpc import OvsdbError
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions
from vucompat_testing.net import free_port
from vucompat_testing.ovsdb_server import OvsdbSandbox
from vucompat_testing.pki import Pki
from vucompat_testing.processes import stop_pid
from vucompat_testing.switch import VUCOMPAT, AgentProcess, eventually


def vucompat(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([VUCOMPAT, *args], capture_output=True, text=True, timeout=timeout)


@dataclass
class Server:
    rundir: Path
    #: its own fixed ports: agents, schedulers (0: the kernel picks)
    host_port: int
    reader_port: int

    @property
    def ctl(self) -> str:
        return str(self.rundir / "fleet.ctl")

    @property
    def reader_socket(self) -> Path:
        """Its read-only unix listener: a relay on this machine reads from it (no probes)."""
        return self.rundir / "reader.sock"

    def status(self) -> dict:
        done = vucompat("fleet", "status", "--ctl", self.ctl, "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def own(self) -> dict[str, dict]:
        """Its own listeners (fleet start), by target."""
        return {one["target"]: one for one in self.status()["listeners"] if one["configured"] == "server"}


@dataclass
class OneMachine:
    servers: list[Server]
    pki: Pki

    def agents(self) -> str:
        return ",".join(f"ssl:127.0.0.1:{s.host_port}" for s in self.servers)

    def readers(self) -> str:
        return ",".join(f"ssl:127.0.0.1:{s.reader_port}" for s in self.servers if s.reader_port)


@pytest.fixture(scope="module")
def one_machine():
    """Three fleet servers on this machine, made and started with the documented
    commands, each with its own fixed ports (its agents' and its schedulers'
    listeners given to `fleet start`), except the third's schedulers' listener,
    port 0 (the kernel picks), and a read-only unix listener for a relay on its
    machine; `fleet configure` sets the roles only."""
    base = Path(tempfile.mkdtemp(prefix="vuc-1m-", dir="/tmp"))  # short: unix socket paths
    pki = Pki(base / "pki")
    server_ssl = pki.identity("fleet-server").cli_args()
    servers = [Server(base / f"s{i}", free_port(), free_port() if i < 3 else 0) for i in (1, 2, 3)]
    rafts = [f"ssl:127.0.0.1:{free_port()}" for _ in servers]
    pids = []
    try:
        for i, server in enumerate(servers):
            db = str(base / f"s{i + 1}.db")
            made = vucompat("fleet", "create-cluster", "--db-file", db, "--local", rafts[0]) if i == 0 else \
                vucompat("fleet", "join-cluster", "--db-file", db, "--local", rafts[i], "--remote", rafts[0])
            assert made.returncode == 0, made.stderr
            reader = f"pssl:{server.reader_port}:127.0.0.1"
            started = vucompat("fleet", "start", "--db-file", db, "--rundir", str(server.rundir), *server_ssl,
                               "--host-listener", f"pssl:{server.host_port}:127.0.0.1", "--reader-listener", reader,
                               "--reader-listener", f"punix:{server.reader_socket}")
            assert started.returncode == 0, started.stderr
            assert f"vucompat fleet status --ctl {server.ctl}" in started.stdout
            pids.append(int((server.rundir / "fleet.pid").read_text()))
        eventually(lambda: sorted(s.status().get("role", "") for s in servers) == ["follower", "follower", "leader"],
                   timeout=30, what="a leader")
        done = vucompat("fleet", "configure", "--db", f"unix:{servers[0].rundir / 'fleet.sock'}")
        assert done.returncode == 0, done.stderr
        assert "roles vucompat-host and vucompat-reader" in done.stdout and "agents on (none)" in done.stdout
        yield OneMachine(servers, pki)
    finally:
        for pid in pids:
            stop_pid(pid)
        shutil.rmtree(base, ignore_errors=True)


def record(root: Path, name: str) -> HostRecord:
    directory = root / name
    if not directory.exists():
        build_host(root, name, upstream_until="2.13", distro=False)
    return HostRecord(host=replace(load_host(directory), name=name), ports={}, pool="rack-9", ovs_version="3.1.0",
                      dpdk_version="22.11.4", capabilities_source="none", heartbeat_interval=30)


def test_three_servers_on_one_machine_each_listen_on_their_own_fixed_ports(one_machine: OneMachine,
                                                                          tmp_path: Path):
    fleet = one_machine
    for server in fleet.servers:
        own = eventually(lambda: (o := server.own()) and all("bound_port" in x for t, x in o.items()
                                                             if not t.startswith("punix:")) and o,
                         what="the bound ports")
        host = own[f"pssl:{server.host_port}:127.0.0.1"]
        assert (host["role"], host["read_only"], host["bound_port"]) == ("vucompat-host", False, server.host_port)
        reader = own[f"pssl:{server.reader_port}:127.0.0.1"]
        assert reader["role"] == "vucompat-reader" and reader["read_only"] is True
        if server.reader_port:
            assert reader["bound_port"] == server.reader_port
        else:  # port 0: the port the kernel picked, which only the server knew (and its log said once)
            assert reader["bound_port"] > 0
            assert f"listening on port {reader['bound_port']}" in (server.rundir / "fleet.log").read_text()
            server.reader_port = reader["bound_port"]
        text = vucompat("fleet", "status", "--ctl", server.ctl).stdout
        assert f"pssl:{server.host_port}:127.0.0.1: agents (role vucompat-host); this server's own; bound to port " \
               f"{server.host_port}" in text
        assert "admin (no role: every right; keep it on the machine)" in text
    # agents publish through any server's own listener, with RBAC: host-a writes only its own rows
    identity = fleet.pki.identity("host-a")
    second = f"ssl:127.0.0.1:{fleet.servers[1].host_port}"
    session = Session(second, FLEET_DB, 20, identity)
    try:
        assert publish(session, record(tmp_path, "host-a")).written > 0
        with pytest.raises(OvsdbError, match="permission error"):
            session.transact([{"op": "insert", "table": "Host", "row": {
                "name": "host-z", "capabilities_source": "none", "default_policy": "latest", "last_seen": 1,
                "heartbeat_interval": 30}}])
        # and no client of a listener may change the server's own listeners
        own = Session(second, "VuCompat_Fleet_Server", 20, identity)
        try:
            with pytest.raises(OvsdbError, match="permission error"):
                own.transact([{"op": "delete", "table": "Connection", "where": []}])
        finally:
            own.close()
        # the server counts the agent's connection on its listener (status every 2.5 s)
        eventually(lambda: fleet.servers[1].own()[f"pssl:{fleet.servers[1].host_port}:127.0.0.1"]["connections"] >= 1,
                   timeout=10, what="the connection counted")
    finally:
        session.close()
    # schedulers read through the read-only listeners, the third's port-0 one included
    args = fleet.pki.identity("scheduler").cli_args()
    for reader in fleet.readers().split(","):
        done = vucompat("fleet", "hosts", "--fleet", reader, *args, "--format", "json")
        assert done.returncode == 0 and [h["name"] for h in json.loads(done.stdout)["hosts"]] == ["host-a"], \
            done.stderr
    reader = Session(fleet.readers().split(",")[0], FLEET_DB, 20, fleet.pki.identity("scheduler"))
    try:
        with pytest.raises(OvsdbError, match="permission error"):
            reader.transact([{"op": "delete", "table": "Host", "where": []}])
    finally:
        reader.close()


def test_a_server_whose_fixed_port_is_taken_says_it_does_not_listen(one_machine: OneMachine):
    """A fourth server (a cluster of its own) given a port the first already holds:
    `fleet status` says that listener does not listen, and why to look at the log."""
    taken = one_machine.servers[0].host_port
    base = Path(tempfile.mkdtemp(prefix="vuc-taken-", dir="/tmp"))
    pid = None
    try:
        assert vucompat("fleet", "create-cluster", "--db-file", str(base / "f.db"), "--local",
                        f"tcp:127.0.0.1:{free_port()}").returncode == 0
        start = ["fleet", "start", "--db-file", str(base / "f.db"), "--rundir", str(base / "run"),
                 "--host-listener", f"ptcp:{taken}:127.0.0.1", "--reader-listener", "ptcp:0:127.0.0.1",
                 "--log-file", str(base / "f.log")]
        dry = vucompat(*start, "--dry-run")
        assert dry.returncode == 0 and "--remote=db:VuCompat_Fleet_Server,Server,connections" in dry.stdout
        assert not (base / "run" / "fleet-server.db").exists()  # a dry run writes nothing
        assert vucompat(*start).returncode == 0
        pid = int((base / "run" / "fleet.pid").read_text())
        server = Server(base / "run", taken, 0)
        own = eventually(lambda: (o := server.own()) and any("bound_port" in x for x in o.values()) and o,
                         what="the port-0 listener's bound port")
        assert "bound_port" not in own[f"ptcp:{taken}:127.0.0.1"]
        text = vucompat("fleet", "status", "--ctl", server.ctl).stdout
        assert f"ptcp:{taken}:127.0.0.1: agents (role vucompat-host); this server's own; NOT LISTENING (see the " \
               "server's log: the address may be in use" in text
        assert "Address already in use" in (base / "f.log").read_text()
        refused = vucompat(*start)
        assert refused.returncode == 2 and f"a fleet server already runs from {base / 'run'} (pid {pid})" in \
            refused.stderr
        refused = vucompat(*start[:4], "--rundir", str(base / "other"), "--reader-listener", "tcp:127.0.0.1:6651")
        assert refused.returncode == 2 and "'tcp:127.0.0.1:6651' is not a passive remote" in refused.stderr
        assert not (base / "other").exists()
    finally:
        stop_pid(pid)
        shutil.rmtree(base, ignore_errors=True)


def test_a_dead_ssl_server_is_connection_refused_at_once(one_machine: OneMachine, tmp_path: Path):
    """Before: "Exec format error (ENOEXEC)" "within 5s", after 0.14 s (the ovs
    library's SSL error code read as an errno)."""
    pki = one_machine.pki
    dead = OvsdbSandbox(Path(tempfile.mkdtemp(prefix="vuc-dead-", dir="/tmp")), vswitch=False, tcp=True,
                        ssl=pki.identity("fleet-server"))
    dead.start()
    remote = dead.tcp_remote
    dead.stop()  # a server that was there and died
    shutil.rmtree(dead.directory, ignore_errors=True)
    args = pki.identity("scheduler").cli_args()
    for what, command in (("a fleet query", ["fleet", "hosts", "--fleet", remote, *args, "--timeout", "5"]),
                          ("a registry read", ["list", "--db", remote, *args, "--timeout", "5"])):
        began = time.monotonic()
        done = vucompat(*command)
        took = time.monotonic() - began
        assert done.returncode == 2, (what, done.stderr)
        assert remote in done.stderr and "cannot reach ovsdb-server: Connection refused (ECONNREFUSED), after 0.0" \
            in done.stderr, (what, done.stderr)
        assert "ENOEXEC" not in done.stderr and "within 5s" not in done.stderr and took < 4, (what, took)
    # the same for tcp: (as it was), and the TLS failures in their own words
    tcp = f"tcp:127.0.0.1:{remote.rsplit(':', 1)[1]}"
    done = vucompat("list", "--db", tcp, "--timeout", "5")
    assert done.returncode == 2 and "Connection refused (ECONNREFUSED), after 0.0" in done.stderr
    live = f"ssl:127.0.0.1:{one_machine.servers[0].reader_port}"
    other = Pki(tmp_path / "other-ca").identity("scheduler")
    done = vucompat("fleet", "hosts", "--fleet", live, *other.cli_args(), "--timeout", "5")
    assert done.returncode == 2 and "reached ovsdb-server" in done.stderr and \
        "the server's certificate is not trusted" in done.stderr and "--ssl-ca" in done.stderr, done.stderr
    ours_ca = SslOptions(other.private_key, other.certificate, pki.identity("scheduler").ca_cert)
    done = vucompat("fleet", "hosts", "--fleet", live, *ours_ca.cli_args(), "--timeout", "5")
    assert done.returncode == 2 and "the server refused the TLS handshake" in done.stderr and \
        "UNKNOWN_CA" in done.stderr.upper() and "Operation not permitted" not in done.stderr, done.stderr


def test_an_agent_without_open_vswitch_is_told_what_is_missing(ovsdb_servers, tmp_path: Path):
    server = ovsdb_servers("noovs", vswitch=False)  # the registry alone
    assert vucompat("load", "--db", server.unix_remote, "--host-name", "host-q").returncode == 0
    agent = AgentProcess(tmp_path, server.unix_remote, enforce=False, extra=["--timeout", "2"])
    agent.start()
    try:
        eventually(lambda: "does not serve the Open_vSwitch database" in agent.text(), timeout=20,
                   what="the agent to say what is missing")
        time.sleep(5)  # retries after 0.25, 0.5, 1 and 2 s, each failing the same way
    finally:
        agent.stop()
    text = agent.text()
    # said once, not at every retry (again after FAILING_REMINDER, 5 minutes, while it lasts)
    assert text.count("does not serve the Open_vSwitch database") == 1
    assert "retrying in 0.25s, up to every 8s" in text
    assert f"{server.unix_remote}: the server does not serve the Open_vSwitch database: that is Open vSwitch's own " \
           "database" in text
    assert "records their modes there, and publishes nothing into a fleet without it" in text
    assert "--ovs-db" in text and "vucompat db create" not in text


def test_a_certificate_for_another_name_is_a_configuration_error_said_once(one_machine: OneMachine, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture):
    """host-b's agent runs with host-a's certificate: one ERROR that says what to
    change, the address once, no "unreachable"; no retry before config_retry, even
    when the record changes; once host-b's certificate replaces it (same files), the
    next slow retry publishes."""
    fleet = one_machine
    a = fleet.pki.identity("host-a")
    files = SslOptions(str(tmp_path / "key.pem"), str(tmp_path / "cert.pem"), a.ca_cert)
    shutil.copy(a.private_key, files.private_key)
    shutil.copy(a.certificate, files.certificate)
    caplog.set_level(logging.DEBUG, logger="vucompat.fleet")
    first = f"ssl:127.0.0.1:{fleet.servers[0].host_port}"
    publisher = FleetPublisher(first, 10, files, config_retry=3.0)
    rec = record(tmp_path, "host-b")
    try:
        publisher.offer(rec)
        eventually(lambda: publisher.config_error, what="the refusal")
        failed_at = time.monotonic()
        publisher.offer(replace(rec, pool="rack-8"))  # a change: still no retry before config_retry
        time.sleep(1.5)
        assert publisher.attempts == 1
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(errors) == 1 and errors[0].levelno == logging.ERROR
        said = errors[0].getMessage()
        assert said.startswith(f"{first}: the fleet refuses this host's writes: it publishes as 'host-b', but its "
                               f"certificate ({files.certificate}) has CN 'host-a'")
        assert "ovs-pki -u req+sign host-b switch" in said and "--fleet-name host-a" in said
        assert "tries again every 3 s" in said and said.count(first) == 1 and "unreachable" not in said
        # the operator replaces the certificate in place: the next slow retry connects anew and publishes
        b = fleet.pki.identity("host-b")
        shutil.copy(b.private_key, files.private_key)
        shutil.copy(b.certificate, files.certificate)
        eventually(lambda: publisher.published >= 1, timeout=10, what="the publish after the slow retry")
        assert time.monotonic() - failed_at >= 2.9 and publisher.config_error is None
        assert "fleet database accepts this host's writes again: host-b is published" in caplog.text
        assert [r.levelno for r in caplog.records].count(logging.ERROR) == 1
    finally:
        publisher.stop()
    done = vucompat("fleet", "hosts", "--fleet", fleet.readers().split(",")[0],
                    *fleet.pki.identity("scheduler").cli_args(), "--format", "json")
    assert "host-b" in [h["name"] for h in json.loads(done.stdout)["hosts"]]


def _silent_client(fleet: OneMachine, port: int) -> ssl.SSLSocket:
    """An SSL connection to a listener of this machine that reads nothing and answers
    no probe, as a client busy reading a large fleet's first copy is."""
    files = fleet.pki.identity("scheduler")
    context = ssl.create_default_context(cafile=files.ca_cert)
    context.check_hostname = False
    context.load_cert_chain(files.certificate, files.private_key)
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))


def _answers_echo(client: ssl.SSLSocket) -> bool:
    """Whether the server still answers on `client` (JSON-RPC echo), after whatever it sent meanwhile."""
    try:
        client.sendall(json.dumps({"id": "e", "method": "echo", "params": ["still here"]}).encode())
        received = b""
        while b'"id":"e"' not in received:
            chunk = client.recv(65536)
            if not chunk:
                return False
            received += chunk
        return True
    except OSError:
        return False


def test_a_reader_silent_longer_than_the_default_probe_keeps_its_connection(one_machine: OneMachine):
    """A relay or a whole-fleet replica reads its first copy of a large fleet for tens
    of seconds without answering probes (bench/README.md: 17-35 s at 30,000 hosts).
    ovsdb-server's default probe drops a silent client after 10 s; the reader
    listeners set 60 s. The agents' listener keeps the default: the control."""
    server = one_machine.servers[0]
    own = server.own()
    reader, host = own[f"pssl:{server.reader_port}:127.0.0.1"], own[f"pssl:{server.host_port}:127.0.0.1"]
    assert reader["inactivity_probe_ms"] == 60000 and "inactivity_probe_ms" not in host
    assert "read-only, inactivity probe 60 s)" in vucompat("fleet", "status", "--ctl", server.ctl).stdout
    readers_client, agents_client = _silent_client(one_machine, server.reader_port), \
        _silent_client(one_machine, server.host_port)
    try:
        time.sleep(12)  # two default probes (5 s each) and a margin
        assert _answers_echo(readers_client)
        assert not _answers_echo(agents_client)
    finally:
        readers_client.close()
        agents_client.close()


def test_the_election_timer_is_raised_through_the_leader_in_committed_steps(one_machine: OneMachine):
    by_role = {s.status()["role"]: s for s in one_machine.servers}
    leader, follower = by_role["leader"], by_role["follower"]
    assert leader.status()["election_timer"] == 1000
    refused = vucompat("fleet", "election-timer", "--ctl", follower.ctl, "4000")
    assert refused.returncode == 2 and "only the leader changes the election timer" in refused.stderr
    assert leader.status()["election_timer"] == 1000
    out_of_range = vucompat("fleet", "election-timer", "--ctl", leader.ctl, "700000")
    assert out_of_range.returncode == 2 and "100<=x<=600000" in out_of_range.stderr
    try:
        done = vucompat("fleet", "election-timer", "--ctl", leader.ctl, "5000")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "election timer: 5000 ms (set in steps: 2000, 4000, 5000)"
        for server in one_machine.servers:
            eventually(lambda: server.status()["election_timer"] == 5000, what="the new timer on every server")
        assert vucompat("fleet", "election-timer", "--ctl", leader.ctl, "5000").stdout.strip() == \
            "election timer: 5000 ms already"
    finally:
        lowered = vucompat("fleet", "election-timer", "--ctl", leader.ctl, "1000")
    assert lowered.stdout.strip() == "election timer: 1000 ms", lowered.stderr


def test_a_relay_on_a_members_machine_reads_its_unix_listener(one_machine: OneMachine, tmp_path: Path):
    """docs/fleet.md, "Large fleets": above what a member composes within OVS 3.1's
    fixed relay probe, a relay runs next to a member on its read-only unix listener
    (no probes). It syncs, answers as the member does, and writes nothing; a relay of
    ssl: sources on this OVS is told that its probe of its source stays at 5 s."""
    server = one_machine.servers[0]
    listener = server.own()[f"punix:{server.reader_socket}"]
    assert (listener["role"], listener["read_only"], listener["inactivity_probe_ms"]) == ("vucompat-reader", True, 60000)
    publish_session = Session(f"ssl:127.0.0.1:{server.host_port}", FLEET_DB, 20, one_machine.pki.identity("host-u"))
    try:
        publish(publish_session, record(tmp_path, "host-u"))
    finally:
        publish_session.close()
    relay_ssl = one_machine.pki.identity("fleet-relay-u").cli_args()
    rundir = Path(tempfile.mkdtemp(prefix="vuc-ur-", dir="/tmp"))
    try:
        started = vucompat("fleet", "start-relay", "--rundir", str(rundir / "unix"), "--cluster",
                           f"unix:{server.reader_socket}", "--reader-listener", "pssl:0:127.0.0.3", *relay_ssl)
        assert started.returncode == 0, started.stderr
        assert "probe" not in started.stderr  # unix: no probes to lengthen
        status = eventually(lambda: (d := json.loads(vucompat("fleet", "relay-status", "--rundir", str(rundir / "unix"),
                                                              "--format", "json").stdout))["connected"] and d,
                            what="the relay connected")
        assert status["source"] == f"unix:{server.reader_socket}" and status["source_answers"] is True
        relay = f"unix:{rundir / 'unix' / 'relay.sock'}"
        def names_on(remote: str) -> set[str]:
            return {h["name"] for h in json.loads(vucompat("fleet", "hosts", "--fleet", remote, "--format",
                                                           "json").stdout)["hosts"]}

        names = eventually(lambda: (found := names_on(relay)) and "host-u" in found and found, what="the relay's copy")
        assert names == names_on(f"unix:{server.rundir / 'fleet.sock'}")
        session = Session(relay, FLEET_DB, 10)
        try:
            with pytest.raises(OvsdbError, match="read-only|permission"):
                session.transact([{"op": "delete", "table": "Host", "where": [["name", "==", "host-u"]]}])
        finally:
            session.close()
        ssl_started = vucompat("fleet", "start-relay", "--rundir", str(rundir / "ssl"), "--cluster",
                               f"ssl:127.0.0.1:{server.reader_port}", "--reader-listener", "pssl:0:127.0.0.3", *relay_ssl)
        assert ssl_started.returncode == 0, ssl_started.stderr
        old = subprocess.run(["ovs-appctl", "-t", str(rundir / "ssl" / "relay.ctl"), "list-commands"], capture_output=True,
                             text=True).stdout
        if "set-relay-source-probe-interval" in old:  # OVS >= 3.2: lengthened, nothing to say
            assert "probe" not in ssl_started.stderr
        else:
            assert "cannot lengthen a relay's probe of its source (5 s)" in ssl_started.stderr
    finally:
        for pidfile in rundir.glob("*/relay.pid"):
            stop_pid(int(pidfile.read_text()))
        shutil.rmtree(rundir, ignore_errors=True)
