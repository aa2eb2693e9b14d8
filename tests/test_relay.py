"""The masking relay on real parts (vucompat_testing.switch): testpmd through the relay
to ovs-vswitchd-dpdk, a test client that asks too much, fuzzed messages, restarts."""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from vucompat_testing.ovsdb_server import select
from vucompat_testing.switch import ENV, VUCOMPAT, Switch, eventually, negotiated, start_switch
from vucompat.core import catalog
from vucompat.vhostuser import protocol as vu


@pytest.fixture(scope="module")
def enforcing():
    """A switch whose agent puts a masking relay on every port with a mode."""
    yield from start_switch(enforce=True)


V28_VIRTIO = set(catalog.mask_to_names(0x15466818A, "virtio"))


def test_the_relay_masks_both_port_types(enforcing: Switch):
    vs, d = enforcing.vswitchd, enforcing.directory
    vs.add_vhost_port("m-client", d / "fe-m-client.sock", compat="upstream.ovs-dpdk.v2.8")
    vs.add_vhost_port("m-server", compat="upstream.ovs-dpdk.v2.8", client=False)
    vs.add_vhost_port("m-open", d / "fe-m-open.sock", compat="passthrough")  # the control: no relay
    ids = enforcing.mirrored("m-client")
    assert ids["vhost-compat-frontend-socket"] == str(d / "fe-m-client.sock")
    # the mirror is written with the first half of the move onto the relay; the path comes with the second
    eventually(lambda: vs.vsctl("get", "Interface", "m-client", "options:vhost-server-path").strip('"')
               == ids["vhost-compat-relay"], what="m-client moved onto its relay")
    relay_for_server = enforcing.mirrored("m-server")["vhost-compat-relay"]
    # frontends that ask for packed rings (not in 2.8); Nova's order: the port first, then the VM
    enforcing.frontend("fe-m-client", queues=2, queue_size=512, packed=True)
    enforcing.frontend("m-server", socket=Path(relay_for_server), server=False, packed=True)
    enforcing.frontend("fe-m-open", queues=2, queue_size=512, packed=True)
    for name in ("m-client", "m-server"):
        features, status = negotiated(enforcing, name)
        assert set(features) <= V28_VIRTIO, (name, set(features) - V28_VIRTIO)
        assert "relays" in status["socket"] or name == "m-server"
        port = eventually(lambda: enforcing.port(name)["verification"] and enforcing.port(name), what="verified")
        assert port["state"] == "applied" and port["verification"].startswith("conformant")
    open_features, _ = negotiated(enforcing, "m-open")
    assert "VIRTIO_F_RING_PACKED" in open_features  # without the relay the same frontend gets more
    show = subprocess.run([VUCOMPAT, "port", "show", "m-server", "--db", enforcing.server.unix_remote],
                          capture_output=True, text=True, env=ENV).stdout
    assert f"frontend -> relay {relay_for_server} (use this path) -> OVS" in show


def test_a_mode_with_fewer_queue_pairs_caps_the_frontend(enforcing: Switch):
    vs = enforcing.vswitchd
    vs.add_vhost_port("one-qp", compat="acme.ovs-dpdk.v1.0", client=False)  # 1 queue pair, 256 rings
    relay = enforcing.mirrored("one-qp")["vhost-compat-relay"]
    # the frontend is told the cap: OVS offers 128 queue pairs, the relay answers 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(relay)
        vu.send(sock, vu.request(vu.GET_PROTOCOL_FEATURES))
        assert vu.recv_blocking(sock, 10).u64() & 1  # VHOST_USER_PROTOCOL_F_MQ
        vu.send(sock, vu.request(vu.GET_QUEUE_NUM))
        assert vu.recv_blocking(sock, 10).u64() == 1
    # QEMU refuses to start with more queues than the backend reports; DPDK's virtio_user
    # ignores the cap and sets up a second pair anyway: the relay refuses it, loudly
    enforcing.frontend("one-qp", socket=Path(relay), server=False, queues=2, queue_size=256)
    port = eventually(lambda: enforcing.port("one-qp")["violation"] and enforcing.port("one-qp"), timeout=30,
                      what="the second queue pair to be refused")
    assert "SET_VRING_NUM vring 2 beyond the mode's 1 queue pair(s)" in port["violation"]
    assert port["state"] == "nonconformant"
    status = enforcing.vswitchd.vsctl("get", "Interface", "one-qp", "status")
    assert 'num_of_vrings="4"' not in status  # never ran with two pairs


def handshake(path: str) -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    vu.send(sock, vu.request(vu.GET_FEATURES))
    reply = vu.recv_blocking(sock, 10)
    return sock, reply.u64()


def test_set_features_beyond_the_offer_closes_and_is_recorded(enforcing: Switch):
    vs = enforcing.vswitchd
    vs.add_vhost_port("greedy", compat="upstream.ovs-dpdk.v2.8", client=False)
    relay = enforcing.mirrored("greedy")["vhost-compat-relay"]
    sock, offered = handshake(relay)
    with sock:
        assert offered & ~(0x15466818A | 1 << 26) == 0  # the offer is within the mode (+ VHOST_F_LOG_ALL)
        vu.send(sock, vu.u64(vu.SET_FEATURES, offered | catalog.lookup("VIRTIO_F_RING_PACKED").value))
        with pytest.raises((EOFError, ConnectionResetError)):
            vu.recv_blocking(sock, 10)
    port = eventually(lambda: enforcing.port("greedy")["state"] == "nonconformant" and enforcing.port("greedy"),
                      what="the violation to be recorded")
    assert "SET_FEATURES beyond the mode: VIRTIO_F_RING_PACKED" in port["violation"]
    assert "SET_FEATURES beyond the mode" in enforcing.external_ids("greedy")["vhost-compat-error"]
    # VHOST_F_LOG_ALL (dirty logging during a migration) always passes, though 2.8 lists it
    sock, offered = handshake(relay)
    with sock:
        vu.send(sock, vu.request(vu.SET_FEATURES, struct.pack("<Q", offered | 1 << 26), need_reply=True))
        assert vu.recv_blocking(sock, 10).request == vu.SET_FEATURES  # the backend acknowledged it


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_fuzzed_messages_close_one_connection_and_leak_nothing(enforcing: Switch):
    vs = enforcing.vswitchd
    vs.add_vhost_port("fuzzed", compat="upstream.ovs-dpdk.v2.8", client=False)
    vs.add_vhost_port("bystander", compat="upstream.ovs-dpdk.v2.9", client=False)
    fuzzed = enforcing.mirrored("fuzzed")["vhost-compat-relay"]
    bystander = enforcing.mirrored("bystander")["vhost-compat-relay"]
    keep, offered = handshake(bystander)  # a live connection on another port, open throughout
    pid = enforcing.agent.relay_pid()  # the relay process
    assert pid is not None
    time.sleep(0.5)
    before = _open_fds(pid)
    rng = random.Random(5)
    valid = vu.request(vu.GET_FEATURES).encode()
    for i in range(150):
        kind = i % 5
        if kind == 0:
            data = rng.randbytes(rng.randint(1, 64))
        elif kind == 1:
            data = valid[: rng.randint(1, len(valid) - 1)]  # truncated
        elif kind == 2:
            data = struct.pack("<III", vu.SET_OWNER, vu.VERSION, 1 << 20)  # oversized
        elif kind == 3:
            data = struct.pack("<III", vu.GET_FEATURES, 0xFF, 0)  # bad flags
        else:
            data = struct.pack("<III", vu.SET_FEATURES, vu.VERSION, 3) + b"abc"  # wrong payload size
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(fuzzed)
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            if kind >= 2:  # a whole message, malformed: the relay itself must close the connection
                sock.settimeout(5)
                try:
                    assert sock.recv(64) == b"", f"kind {kind}: the relay answered a malformed message"
                except ConnectionResetError:
                    pass
                except socket.timeout:
                    raise AssertionError(f"kind {kind}: the relay kept a malformed connection open") from None
            # (kinds 0 and 1 may be an incomplete message: the relay waits for the rest, and the
            # connection goes when the client closes it)
    assert enforcing.agent.relay_pid() == pid  # no crash
    eventually(lambda: _open_fds(pid) <= before + 1, timeout=10,
               what=f"the relay process's fds back to {before} (+1) after 150 fuzzed connections",
               explain=lambda: f"{_open_fds(pid)} open")
    with keep:  # the other port's connection still works
        vu.send(keep, vu.request(vu.GET_FEATURES))
        assert vu.recv_blocking(keep, 10).u64() == offered
    sock, again = handshake(fuzzed)  # and the fuzzed port takes a good connection again
    sock.close()
    assert again & ~(0x15466818A | 1 << 26) == 0


def test_an_agent_restart_or_crash_leaves_the_relayed_connection_alone(enforcing: Switch):
    """The relays live in their own process: OVS sees no disconnect while the agent
    stops, restarts or is killed, and the new agent takes the relays as they are."""
    vs, d = enforcing.vswitchd, enforcing.directory
    vs.add_vhost_port("survivor", d / "fe-survivor.sock", compat="upstream.ovs-dpdk.v2.9")
    enforcing.mirrored("survivor")
    enforcing.frontend("fe-survivor", queues=1, queue_size=256, packed=True)
    negotiated(enforcing, "survivor")
    relay = enforcing.mirrored("survivor")["vhost-compat-relay"]
    added = f"vHost Device '{relay}' has been added"  # ovs-vswitchd's line for each new device

    def connections() -> int:
        return enforcing.vswitchd.log.read_text().count(added)

    before, relay_pid = connections(), enforcing.agent.relay_pid()
    assert before >= 1 and relay_pid is not None
    for how in ("stop", "kill"):
        if how == "kill":
            enforcing.agent.kill(signal.SIGKILL)
        enforcing.agent.stop(keep_relay=True)
        enforcing.agent.start()
        # a port added after the restart, once resolved, proves the new agent has reconciled
        vs.add_vhost_port(f"after-{how}", d / f"fe-after-{how}.sock", compat="upstream.ovs-dpdk.v2.9")
        enforcing.mirrored(f"after-{how}")
        features, status = negotiated(enforcing, "survivor")
        assert status["status"] == "connected" and status["socket"] == relay
        assert "VIRTIO_F_RING_PACKED" not in features
        assert connections() == before, f"OVS reconnected the port after the agent's {how}"
        assert enforcing.agent.relay_pid() == relay_pid
    eventually(lambda: enforcing.port("survivor")["state"] == "applied", timeout=30)


def test_a_move_onto_the_relay_cut_short_by_a_crash_is_finished_by_the_next_agent(enforcing: Switch):
    """A client port is moved onto its relay in two halves (type flipped to
    dpdkvhostuser and back). An agent killed in between leaves the flipped type and
    its mark; the next agent finishes the move (same Port row, the relay's path, a
    client port again) instead of taking the port for one an operator re-typed."""
    vs, d = enforcing.vswitchd, enforcing.directory
    vs.add_vhost_port("halfway", d / "fe-halfway.sock", compat="upstream.ovs-dpdk.v2.9")
    relay = enforcing.mirrored("halfway")["vhost-compat-relay"]

    def interface() -> dict:
        (row,) = select(enforcing.remote, "Interface", ["type", "options", "external_ids"], "Open_vSwitch",
                        [["name", "==", "halfway"]])
        return {"type": row["type"], "path": dict(row["options"][1]).get("vhost-server-path"),
                "moving": dict(row["external_ids"][1]).get("vhost-compat-moving")}

    eventually(lambda: interface() == {"type": "dpdkvhostuserclient", "path": relay, "moving": None},
               what="halfway moved onto its relay")
    port = enforcing.port_row("halfway")
    enforcing.agent.stop(keep_relay=True)
    # what an agent killed between the two halves leaves behind
    vs.vsctl("set", "Interface", "halfway", "type=dpdkvhostuser", f"external_ids:vhost-compat-moving={relay}")
    enforcing.agent.start()
    eventually(lambda: interface() == {"type": "dpdkvhostuserclient", "path": relay, "moving": None},
               what="the next agent to finish the move", explain=lambda: enforcing.explain("halfway"))
    assert enforcing.port_row("halfway")["_uuid"] == port["_uuid"]  # resolved once: the same Port row
    assert "finishing a move an agent stopped half-way" in enforcing.agent.text()
    enforcing.frontend("fe-halfway", queues=1, queue_size=256, packed=True)
    features, status = negotiated(enforcing, "halfway")
    assert status["socket"] == relay and "VIRTIO_F_RING_PACKED" not in features


def test_a_rejected_port_fails_closed(enforcing: Switch):
    """A port whose request was rejected gets no relay connection at all: it cannot
    run unmasked by accident, though its frontend is up."""
    vs, d = enforcing.vswitchd, enforcing.directory
    vs.add_vhost_port("closed", d / "fe-closed.sock", compat="upstream.ovs-dpdk.v9.9")
    ids = enforcing.mirrored("closed")
    assert ids["vhost-compat-state"] == "rejected"
    enforcing.frontend("fe-closed", queues=1, queue_size=256)
    assert (d / "fe-closed.sock").exists()
    path = eventually(lambda: (p := vs.vsctl("get", "Interface", "closed", "options:vhost-server-path").strip('"'))
                      == ids["vhost-compat-relay"] and p, what="the rejected port pointed at its relay path")
    assert path == ids["vhost-compat-relay"] and not Path(path).exists()  # nobody serves it
    time.sleep(3)  # OVS retries every second; it must never reach the frontend
    assert "status=connected" not in vs.vsctl("get", "Interface", "closed", "status")
