"""A VM's NIC does not notice the agent: a real QEMU guest sends through its port's
relay while the agent is stopped, killed and restarted and the relay process is
upgraded in place; and a crash of the relay process itself is an OVS reconnect that
heals by itself (docs/agent.md, "The relay process")."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from vucompat_testing.guest import Guest, GuestImage, ensure_guest
from vucompat_testing.ovsdb_server import select
from vucompat.vhostuser import protocol as vu
from vucompat_testing.switch import ENV, VUCOMPAT, Switch, eventually, negotiated, start_switch

MODE = "upstream.ovs-dpdk.v2.15"  # the reproduction


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return ensure_guest()


@pytest.fixture(scope="module")
def host() -> Iterator[Switch]:
    """A switch in a network namespace of its own whose bridge port answers the
    guest's ARP requests (192.0.2.1): a reply the guest receives has crossed the
    relayed port's data path both ways."""
    for switch in start_switch(enforce=True, name="relayd", tables=(), own_netns=True):
        inside = ["nsenter", "-t", str(switch.vswitchd.pid), "-n", "ip"]
        bridge = switch.vswitchd.bridge
        subprocess.run([*inside, "addr", "add", "192.0.2.1/24", "dev", bridge], check=True)
        subprocess.run([*inside, "link", "set", bridge, "up"], check=True)
        yield switch


class Watch:
    """Samples, every 0.1 s while running: the port's Interface status (every sample
    that is not "connected" is kept), and the guest's rx packet count (the bridge's
    ARP replies: they cross OVS and the port both ways; tx would not do, QEMU takes
    the rings over while its backend is gone), to find the longest stretch without one."""

    def __init__(self, host: Switch, port: str, guest: Guest) -> None:
        self.host, self.port, self.guest = host, port, guest
        self.not_connected: list[tuple[float, dict[str, str]]] = []
        self.rx: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            (row,) = select(self.host.remote, "Interface", ["status"], "Open_vSwitch", [["name", "==", self.port]])
            status = dict(row["status"][1])
            if status.get("status") != "connected":
                self.not_connected.append((now, status))
            traffic = self.guest.traffic()
            if traffic and (not self.rx or traffic[0] != self.rx[-1][1]):
                self.rx.append((now, traffic[0]))

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def longest_stall(self, since: float = 0.0, until: float | None = None) -> float:
        """The longest time between two rx increases from `since` on (and up to `until`)."""
        until = until if until is not None else time.monotonic()
        times = [t for t, _ in self.rx if since <= t <= until] + [until]
        return max(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else until - since


def device_lines(host: Switch, port: str) -> list[str]:
    """ovs-vswitchd's log lines of vHost devices added or removed on `port`'s socket."""
    return [line for line in host.vswitchd.log.read_text().splitlines()
            if "vHost Device" in line and re.search(rf"/{re.escape(port)}'", line)]


def relay_status(host: Switch) -> dict[str, str]:
    done = subprocess.run([VUCOMPAT, "relay", "status", "--relay-dir", str(host.directory / "relays"),
                           "--format", "json"], capture_output=True, text=True, env=ENV, timeout=30)
    assert done.returncode == 0, done.stderr
    import json

    return json.loads(done.stdout)


def boot(host: Switch, image: GuestImage, port: str) -> Guest:
    guest = host.guest(image, port, host.plug(port, {"vhost-compat": MODE}))
    guest.wait_booted()
    eventually(lambda: (row := host.port_row(port)) and row["negotiated_features"] != ["set", []], timeout=60,
               what=f"{port}'s negotiation recorded", explain=lambda: host.explain(port))
    return guest


def test_the_guest_never_notices_the_agent_nor_a_relay_upgrade(host: Switch, image: GuestImage):
    guest = boot(host, image, "steady")
    relay_pid = host.agent.relay_pid()
    devices = device_lines(host, "steady")
    qemu_log = guest.log_text()
    generation = relay_status(host)["generation"]
    with Watch(host, "steady", guest) as watch:
        time.sleep(6)
        baseline = watch.longest_stall(since=watch.rx[0][0] if watch.rx else 0.0)
        faults_from = time.monotonic()
        # 1. the agent stops (an upgrade of the agent); a port is plugged meanwhile
        host.agent.stop(keep_relay=True)
        host.vsctl("add-port", host.vswitchd.bridge, "while-down", "--", "set", "Interface", "while-down",
                   "type=dpdkvhostuser", f"options:vhost-compat={MODE}")
        time.sleep(3)
        host.agent.start()
        assert host.mirrored("while-down")["vhost-compat-mode"] == MODE  # resolved when the agent returns
        # 2. the agent crashes and is started again
        host.agent.kill(signal.SIGKILL)
        time.sleep(2)
        host.agent.stop(keep_relay=True)
        host.agent.start()
        time.sleep(2)
        # 3. the relay process is upgraded in place, under traffic
        done = subprocess.run([VUCOMPAT, "relay", "upgrade", "--relay-dir", str(host.directory / "relays")],
                              capture_output=True, text=True, env=ENV, timeout=60)
        kept = re.search(r"(\d+) connection\(s\) kept", done.stdout)
        assert done.returncode == 0 and kept and int(kept.group(1)) >= 1, done.stdout + done.stderr
        time.sleep(4)
        stall = watch.longest_stall(since=faults_from)
    print(f"agent stop, kill, restarts and a relay upgrade: longest stall of the guest's traffic {stall:.2f} s "
          f"(baseline {baseline:.2f} s)")
    status = relay_status(host)
    assert status["pid"] == relay_pid and status["generation"] == generation + 1
    assert watch.not_connected == [], f"OVS saw the port not connected: {watch.not_connected[:3]}"
    assert device_lines(host, "steady") == devices, "OVS saw the vhost-user device go and come back"
    assert "vhost" not in guest.log_text()[len(qemu_log):].lower(), guest.log_text()[len(qemu_log):]
    assert stall <= max(1.5, 2 * baseline), f"the guest's traffic stopped for {stall:.2f} s (baseline {baseline:.2f} s)"
    row = host.port_row("steady")
    assert row["state"] == "applied" and row["verification"].startswith("conformant"), row
    guest.stop()
    host.unplug("steady", "while-down")


def test_a_relay_process_crash_is_a_reconnect_that_heals_by_itself(host: Switch, image: GuestImage):
    """The worst case: the relay process is killed. Its connections go, as in an
    ovs-vswitchd crash; the agent starts it again, it listens on the saved paths at
    once, QEMU (reconnect=1) comes back through it, masked as before, and the guest's
    traffic goes on."""
    guest = boot(host, image, "crashy")
    killed = host.agent.relay_pid()
    assert killed is not None
    removed = len([line for line in device_lines(host, "crashy") if "removed" in line])
    with Watch(host, "crashy", guest) as watch:
        time.sleep(3)
        crash = time.monotonic()
        subprocess.run(["kill", "-9", str(killed)], check=True)
        eventually(lambda: (pid := host.agent.relay_pid()) and pid != killed, timeout=15,
                   what="the agent to start the relay process again", explain=lambda: host.explain("crashy"))
        eventually(lambda: len([line for line in device_lines(host, "crashy") if "removed" in line]) > removed,
                   timeout=15, what="OVS to see the connection go")
        sent = watch.rx[-1][1] if watch.rx else 0
        eventually(lambda: watch.rx and watch.rx[-1][1] > sent + 3 and watch.rx[-1][0] > crash, timeout=60,
                   what="the guest's traffic to resume", explain=lambda: host.explain("crashy") + guest.log_text())
        gap = watch.longest_stall(since=crash)
    features, status = negotiated(host, "crashy")
    assert status.get("status") == "connected" and "VIRTIO_F_RING_PACKED" not in features
    print(f"relay process crash: the guest's traffic stopped for {gap:.2f} s")
    guest.stop()
    host.unplug("crashy")


# -- hostile peers: no frontend can hurt another port (issue 15, item 2) ---------------------
def handshake_time(path: str) -> float:
    """Seconds a fresh vhost-user connection to `path` takes to be offered features."""
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        vu.send(sock, vu.request(vu.GET_FEATURES))
        assert vu.recv_blocking(sock, 10).request == vu.GET_FEATURES
        vu.send(sock, vu.request(vu.GET_PROTOCOL_FEATURES))
        assert vu.recv_blocking(sock, 10).request == vu.GET_PROTOCOL_FEATURES
    return time.monotonic() - started


def process_figures(pid: int) -> tuple[int, int]:
    """(open fds, RSS in KiB) of process `pid`."""
    rss = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return len(os.listdir(f"/proc/{pid}/fd")), int(rss.group(1)) if rss else 0


def flood(path: str, seconds: float) -> dict[str, int]:
    """Peers that send GET_FEATURES requests as fast as they can and never read a
    reply. Returns how many were closed at once (beyond the per-port limit), cut off
    by their own unread queue (after sending more than 128 KiB of requests), or neither."""
    chunk = vu.request(vu.GET_FEATURES).encode() * 1024
    peers = []
    for _ in range(8):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.setblocking(False)
        peers.append(sock)
    sent = dict.fromkeys(peers, 0)
    counts = {"closed_at_once": 0, "cut_off": 0, "never_cut": 0}
    deadline = time.monotonic() + seconds
    alive = list(peers)
    while alive and time.monotonic() < deadline:
        for sock in list(alive):
            try:
                sent[sock] += sock.send(chunk)
            except BlockingIOError:
                pass
            except OSError:  # closed by the relay
                counts["cut_off" if sent[sock] > 128 * 1024 else "closed_at_once"] += 1
                alive.remove(sock)
        time.sleep(0.001)
    counts["never_cut"] = len(alive)
    for sock in peers:
        sock.close()
    return counts


def connect_storm(path: str, attempts: int) -> dict[str, int]:
    """`attempts` unpaced connects, each closed at once by the client."""
    counts = {"accepted_or_queued": 0, "refused": 0}
    held = []
    for _ in range(attempts):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
            counts["accepted_or_queued"] += 1
            held.append(sock)
        except OSError:
            counts["refused"] += 1
            sock.close()
    for sock in held:
        sock.close()
    return counts


def hold_connections(paths: list[str], per_path: int) -> list[socket.socket]:
    """`per_path` connections to each relay, never used; returns the sockets."""
    held = []
    for path in paths:
        for _ in range(per_path):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                held.append(sock)
            except OSError:
                sock.close()
    return held


def still_open(socks: list[socket.socket]) -> int:
    """How many of `socks` the other end has not closed."""
    count = 0
    for sock in socks:
        try:
            count += sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def test_no_hostile_peer_hurts_another_port(host: Switch, image: GuestImage):
    """A guest sends through its port while peers attack other ports' relays: a flood
    of requests never read, a storm of 1,000 unpaced connects, connections held on
    every victim under a low open-file limit, then no open file left at all (EMFILE
    in accept). The guest's traffic goes on, a fresh
    honest connection is served in its normal time, the relay process lives, and its
    fds and RSS come back."""
    guest = boot(host, image, "honest")
    for victim in ("victim1", "victim2", "victim3"):
        host.vsctl("add-port", host.vswitchd.bridge, victim, "--", "set", "Interface", victim,
                   "type=dpdkvhostuser", f"options:vhost-compat={MODE}")
    host.vsctl("add-port", host.vswitchd.bridge, "newcomer", "--", "set", "Interface", "newcomer",
               "type=dpdkvhostuser", f"options:vhost-compat={MODE}")
    victims = [host.mirrored(v)["vhost-compat-relay"] for v in ("victim1", "victim2", "victim3")]
    newcomer = host.mirrored("newcomer")["vhost-compat-relay"]
    pid = host.agent.relay_pid()
    assert pid is not None
    normal = sorted(handshake_time(newcomer) for _ in range(5))[2]
    before = process_figures(pid)
    limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    outcomes: dict[str, object] = {}
    try:
        with Watch(host, "honest", guest) as watch:
            started = time.monotonic()
            results: dict[str, dict[str, int]] = {}
            attack = threading.Thread(target=lambda: results.update(flood=flood(victims[0], 8)))
            attack.start()
            during = [handshake_time(newcomer) for _ in range(5) if not time.sleep(0.5)]
            attack.join()
            results["storm"] = connect_storm(victims[1], 1000)
            during.append(handshake_time(newcomer))
            # a low limit (the relay process keeps FD_RESERVE files for ports' first connections)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (before[0] + 80, limit[1]))
            held = hold_connections(victims, 200)
            during += [handshake_time(newcomer) for _ in range(3)]
            time.sleep(0.5)
            outcomes["hold"] = {"connected": len(held), "kept_open_by_the_relays": still_open(held)}
            for sock in held:
                sock.close()
            # no open file left at all: accept() fails with EMFILE, and the relays wait it out
            time.sleep(1)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (process_figures(pid)[0], limit[1]))
            held = hold_connections(victims, 20)
            time.sleep(1)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
            for sock in held:
                sock.close()
            during.append(handshake_time(newcomer))
            time.sleep(1)
            stall = watch.longest_stall(since=started)
            outcomes.update(results)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
    print(f"hostile peers: {outcomes}; honest handshake {normal * 1000:.1f} ms normally, at most "
          f"{max(during) * 1000:.1f} ms under attack; the guest's longest stall {stall:.2f} s")
    assert host.agent.relay_pid() == pid  # alive, not restarted
    assert "cannot accept a connection (Too many open files)" in host.agent.relay_log.read_text()
    assert max(during) < max(1.0, 20 * normal), during
    assert stall <= 1.5, f"the honest guest's traffic stopped for {stall:.2f} s"
    # four peers served (the per-port limit), each cut off by its own unread queue
    assert outcomes["flood"] == {"closed_at_once": 4, "cut_off": 4, "never_cut": 0}, outcomes["flood"]
    assert outcomes["hold"]["kept_open_by_the_relays"] <= 3 * 4, outcomes["hold"]  # type: ignore[index]
    eventually(lambda: process_figures(pid)[0] <= before[0] + 2, timeout=15,
               what=f"the relay process's fds back to {before[0]}", explain=lambda: str(process_figures(pid)))
    assert process_figures(pid)[1] < before[1] + 16 * 1024, (before, process_figures(pid))
    assert handshake_time(victims[0]) < 1.0  # the victims serve again
    guest.stop()
    host.unplug("honest", "victim1", "victim2", "victim3", "newcomer")
