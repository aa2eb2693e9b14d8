"""`vucompat relay serve` as a process, without OVS: its control channel (garbage
gets an answer, never a crash), one process per directory, recovery of its relays
after a SIGKILL, a stop that closes them, and the agent's client that reconnects and
starts it again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from vucompat.agent.relayd import CONTROL_NAME, RelayClient, request, spawn_command
from vucompat.agent.guard import RelayAccess
from vucompat.core.portview import RelaySpec
from vucompat.vhostuser.relay import LOG_ALL, spec_to_json
from vucompat_testing.processes import ENV, VUCOMPAT, alive, stop_pid
from vucompat_testing.vhost_backend import ABI, Backend, connect, features


def wait(check, timeout: float = 10.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


def answers(control: Path) -> dict | None:
    try:
        return request(control, "status", timeout=2)
    except (OSError, ValueError):
        return None


@pytest.fixture
def relayd(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    relay_dir = tmp_path / "relays"
    process = subprocess.Popen([VUCOMPAT, "relay", "serve", "--relay-dir", str(relay_dir), "--log-file",
                                str(tmp_path / "relay.log")], env=ENV)
    wait(lambda: answers(relay_dir / CONTROL_NAME), what="the relay process to answer")
    yield process, relay_dir
    pid = int((relay_dir / "relayd.pid").read_text()) if (relay_dir / "relayd.pid").exists() else process.pid
    stop_pid(pid)
    process.poll()


def control_lines(control: Path, lines: list[bytes]) -> list[dict]:
    """Send raw lines on one control connection; the answers, one per line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(control))
        sock.sendall(b"".join(lines))
        buffer = b""
        while buffer.count(b"\n") < len(lines):
            data = sock.recv(65536)
            if not data:
                break
            buffer += data
    return [json.loads(line) for line in buffer.splitlines()]


def ensure_line(specs: list[RelaySpec], ident: int = 1) -> bytes:
    return json.dumps({"op": "ensure", "id": ident, "specs": [spec_to_json(s) for s in specs]}).encode() + b"\n"


def test_garbage_on_the_control_channel_gets_an_answer_and_changes_nothing(relayd, tmp_path: Path):
    process, relay_dir = relayd
    control = relay_dir / CONTROL_NAME
    backend = Backend(tmp_path / "backend.sock")
    spec = RelaySpec("p", relay_dir / "p.sock", tmp_path / "backend.sock", False, ABI)
    assert control_lines(control, [ensure_line([spec])]) == [{"ok": True, "id": 1, "changed": True}]
    answers_ = control_lines(control, [b"not json\n", b"[1, 2]\n", b'{"op": "launch"}\n',
                                       b'{"op": "ensure", "id": 2, "specs": [{"name": "x"}]}\n',
                                       b'{"op": "ensure", "id": 3, "specs": "all"}\n'])
    assert [a["ok"] for a in answers_] == [False] * 5
    assert "unknown op 'launch'" in answers_[2]["error"] and "bad specs" in answers_[3]["error"]
    # a line that never ends is cut off at its limit
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(control))
        try:
            for _ in range(20):
                sock.sendall(b"x" * (1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert process.poll() is None
    frontend = connect(spec.listen)  # the relay still serves
    assert features(frontend) == ABI.virtio | LOG_ALL
    frontend.close()
    assert answers(control)["ports"] == 1
    backend.close()


def test_one_relay_process_per_directory(relayd):
    _process, relay_dir = relayd
    second = subprocess.run([VUCOMPAT, "relay", "serve", "--relay-dir", str(relay_dir)], capture_output=True,
                            text=True, env=ENV, timeout=30)
    assert second.returncode == 2 and "another vucompat relay (pid" in second.stderr, second.stderr


def test_after_a_sigkill_the_saved_relays_listen_again_and_a_stop_closes_them(relayd, tmp_path: Path):
    process, relay_dir = relayd
    backend = Backend(tmp_path / "backend.sock")
    spec = RelaySpec("p", relay_dir / "p.sock", tmp_path / "backend.sock", False, ABI)
    control_lines(relay_dir / CONTROL_NAME, [ensure_line([spec])])
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # started again (as systemd or the agent would): it listens at once, before any agent speaks
    again = subprocess.Popen([VUCOMPAT, "relay", "serve", "--relay-dir", str(relay_dir)], env=ENV,
                             stderr=subprocess.DEVNULL)
    try:
        wait(lambda: answers(relay_dir / CONTROL_NAME), what="the relay process to come back")
        frontend = connect(spec.listen)
        assert features(frontend) == ABI.virtio | LOG_ALL
        again.send_signal(signal.SIGTERM)  # a stop closes every relay
        assert again.wait(10) == 0 and not spec.listen.exists()
        with pytest.raises((EOFError, ConnectionResetError, BrokenPipeError)):
            features(frontend)
    finally:
        stop_pid(again.pid)
        backend.close()


def test_the_agents_client_starts_the_relay_process_and_sends_its_relays_again(tmp_path: Path):
    relay_dir = tmp_path / "relays"
    backend = Backend(tmp_path / "backend.sock")
    spec = RelaySpec("p", relay_dir / "p.sock", tmp_path / "backend.sock", False, ABI)
    command = spawn_command(relay_dir, RelayAccess(), tmp_path / "relay.log")
    assert command[:3] == [sys.executable, "-m", "vucompat"]
    client = RelayClient(relay_dir / CONTROL_NAME, lambda *_: None, spawn=command)
    try:
        assert client.ensure({"p": spec}, timeout=30)  # confirmed once the spawned process serves it
        first = wait(lambda: answers(relay_dir / CONTROL_NAME), what="the spawned relay process")
        assert first["ports"] == 1
        frontend = connect(spec.listen)
        assert features(frontend) == ABI.virtio | LOG_ALL
        frontend.close()
        os.kill(first["pid"], signal.SIGKILL)  # the relay process dies: the client starts another
        second = wait(lambda: (s := answers(relay_dir / CONTROL_NAME)) and s["pid"] != first["pid"] and s,
                      timeout=20, what="a new relay process")
        assert second["ports"] == 1
    finally:
        client.stop()
        status = answers(relay_dir / CONTROL_NAME)
        assert status is not None  # the client's stop leaves the relays serving
        stop_pid(status["pid"])
        assert not alive(status["pid"])
        backend.close()
