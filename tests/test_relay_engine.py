"""The relay engine alone (vhostuser.relay.RelayManager), in process, against a
backend played by the test on a unix socket: the handover of a frozen state, the
loop that restarts itself, the limits per port, the pace a frontend sets."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

import pytest

from vucompat.core.mode import Abi
from vucompat.core.portview import RelaySpec
from vucompat.vhostuser import protocol as vu
from vucompat.vhostuser import relay as relay_module
from vucompat.vhostuser.relay import RelayManager, spec_from_json, spec_to_json
from vucompat_testing.vhost_backend import ABI, Backend, connect, features


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Backend, RelaySpec]]:
    backend = Backend(tmp_path / "backend.sock")
    spec = RelaySpec("p", tmp_path / "relay" / "p.sock", tmp_path / "backend.sock", False, ABI)
    yield backend, spec
    backend.close()


def test_a_spec_survives_its_json():
    spec = RelaySpec("vhu0", Path("/run/vucompat/vhu0.sock"), Path("/run/qemu/vhu0"), True, Abi(1 << 40, 3, 2, 512, 1024))
    assert spec_from_json(spec_to_json(spec)) == spec


def test_a_frozen_relay_is_adopted_with_its_connection(setup):
    backend, spec = setup
    first = RelayManager(lambda *_: None)
    first.ensure({"p": spec})
    frontend = connect(spec.listen)
    assert features(frontend) == ABI.virtio | relay_module.LOG_ALL
    # half a message in flight when the relay freezes: the new manager finishes it
    request = vu.request(vu.GET_FEATURES).encode()
    frontend.sendall(request[:5])
    time.sleep(0.2)
    state = first.freeze()
    assert len(state["pairs"]) == 1 and state["pairs"][0]["accepted"]["read"]
    second = RelayManager(lambda *_: None, adopt=state)
    try:
        frontend.sendall(request[5:])
        assert vu.recv_blocking(frontend, 5).u64() == ABI.virtio | relay_module.LOG_ALL
        assert features(frontend) == ABI.virtio | relay_module.LOG_ALL
        assert backend.accepted == 1  # the same connection to the backend throughout
        assert second.ensure({"p": spec}) is False  # the adopted relay is what the agent asks for
        again = connect(spec.listen)  # and the adopted listener takes new connections
        assert features(again) == ABI.virtio | relay_module.LOG_ALL
        again.close()
    finally:
        frontend.close()
        second.stop()


def test_the_serving_loop_restarts_itself(setup, monkeypatch, caplog):
    backend, spec = setup
    manager = RelayManager(lambda *_: None)
    try:
        manager.ensure({"p": spec})
        failures = []
        original = RelayManager._resume_paused  # (called by the loop itself, after the events)

        def broken(self):
            if not failures:
                failures.append(1)
                raise RuntimeError("a bug in the loop")
            return original(self)

        with caplog.at_level(logging.ERROR, logger="vucompat.relay"):
            monkeypatch.setattr(RelayManager, "_resume_paused", broken)
            sock = connect(spec.listen)  # the loop wakes up and runs into the bug
            deadline = time.monotonic() + 5
            while not failures and time.monotonic() < deadline:
                time.sleep(0.01)
            assert failures
            # the loop runs again: the pending connection is served
            assert features(sock) == ABI.virtio | relay_module.LOG_ALL
        assert "the serving loop failed; starting it again" in caplog.text
        assert manager.thread.is_alive()
        sock.close()
    finally:
        manager.stop()


def test_a_frontend_reaches_the_backend_only_once_it_has_spoken(setup):
    """In vhost-user the frontend speaks first. A peer that connects and closes in a
    loop, or connects and stays silent, costs the backend (OVS: a vhost connection
    made and destroyed, in a thread all ports share) nothing; a frontend that speaks
    late is served as soon as it speaks."""
    backend, spec = setup
    manager = RelayManager(lambda *_: None)
    try:
        manager.ensure({"p": spec})
        for _ in range(300):  # the connect storm of bench/reliability.py, in small
            connect(spec.listen).close()
        time.sleep(0.3)  # (until the relay has seen the last of them close: they count against max_per_port)
        silent = connect(spec.listen)
        time.sleep(0.5)
        assert backend.accepted == 0 and manager.counts()["pending"] == 1  # the silent one, waiting
        assert features(silent) == ABI.virtio | relay_module.LOG_ALL  # it speaks: relayed at once
        assert backend.accepted == 1
        silent.close()
    finally:
        manager.stop()


def test_beyond_the_per_port_limit_connections_close_at_once(setup):
    backend, spec = setup
    manager = RelayManager(lambda *_: None, max_per_port=2)
    try:
        manager.ensure({"p": spec})
        socks = [connect(spec.listen) for _ in range(5)]
        served = []
        for sock in socks:
            sock.settimeout(5)
            try:
                served.append(features(sock))
            except (EOFError, OSError):
                pass
        assert len(served) == 2
        for sock in socks:
            sock.close()
        time.sleep(0.3)
        assert manager.counts()["connections"] == 0
        sock = connect(spec.listen)  # room again
        assert features(sock) == ABI.virtio | relay_module.LOG_ALL
        sock.close()
    finally:
        manager.stop()


def test_a_frontend_that_never_reads_is_cut_off_and_one_that_outpaces_ovs_is_paused(setup, caplog):
    backend, spec = setup
    manager = RelayManager(lambda *_: None)
    try:
        manager.ensure({"p": spec})
        chunk = vu.request(vu.GET_FEATURES).encode() * 1024
        # 1. the backend stops reading: the frontend is paused, not cut, and nothing is lost
        backend.reading.clear()
        fast = connect(spec.listen)
        fast.setblocking(False)
        deadline = time.monotonic() + 30  # (a busy machine runs the relay thread late)
        while time.monotonic() < deadline:
            pairs = list(manager._pairs.values())
            if pairs and not pairs[0].accepted.reading:
                break
            try:
                fast.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        (pair,) = manager._pairs.values()
        assert not pair.accepted.reading and pair.other is not None
        assert pair.other.queued <= relay_module.BACKEND_PAUSE + relay_module.MAX_MESSAGES_PER_TURN * 12
        backend.reading.set()
        fast.close()
        # 2. a frontend that never reads its replies: cut off by its own queue
        with caplog.at_level(logging.WARNING, logger="vucompat.relay"):
            greedy = connect(spec.listen)
            greedy.setblocking(False)
            deadline = time.monotonic() + 60
            cut = False
            while time.monotonic() < deadline and not cut:
                try:
                    greedy.send(chunk)
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:
                    cut = True
            greedy.close()
        assert cut and "the frontend left more than 256 KiB unread" in caplog.text
        honest = connect(spec.listen)  # the port serves again
        assert features(honest) == ABI.virtio | relay_module.LOG_ALL
        honest.close()
    finally:
        manager.stop()
