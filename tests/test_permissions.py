"""Permissions (docs/agent.md, "Permissions"): with enforcement on, a frontend of
another user reaches a dpdkvhostuser port only through its relay, never OVS's own
socket; without the agent's guard it reaches OVS directly (the control). On real
parts (ovs-vswitchd-dpdk run with umask 0, so its sockets are 0777: the guard alone
keeps the frontend out), and the guard and the relays' modes on their own."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from vucompat.agent.guard import RelayAccess, SockDirGuard, parse_group, parse_mode
from vucompat.core import catalog
from vucompat.core.mode import Abi
from vucompat.core.portview import RelaySpec
from vucompat.vhostuser.relay import RelayManager
from vucompat_testing.switch import ENV, VUCOMPAT, Switch, eventually, start_host

NOBODY = 65534
V28_VIRTIO = 0x15466818A
LOG_ALL = catalog.lookup("VHOST_F_LOG_ALL").value
PACKED = catalog.lookup("VIRTIO_F_RING_PACKED").value

#: run as NOBODY by the system's python, stdlib only (it cannot read our venv): connect
#: to a vhost-user socket, ask GET_FEATURES, print {"features": N} or {"errno": N}
_FRONTEND = r"""
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as err:
    print(json.dumps({"errno": err.errno})); sys.exit(0)
s.sendall(struct.pack("<III", 1, 1, 0))
data = b""
while len(data) < 20:
    chunk = s.recv(20 - len(data))
    if not chunk:
        break
    data += chunk
request, flags, size = struct.unpack("<III", data[:12])
print(json.dumps({"request": request, "features": struct.unpack("<Q", data[12:20])[0]}))
"""


def as_nobody(path: Path | str) -> dict:
    """What a frontend running as uid/gid 65534 gets from `path`."""
    done = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", _FRONTEND, str(path)], user=NOBODY, group=NOBODY,
                          extra_groups=[], capture_output=True, text=True, timeout=30, cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _host(enforce: bool, name: str):
    # a directory every user may search (mkdtemp makes 0700): what blocks the frontend
    # below is the agent's guard, nothing on the way to it
    directory = Path(tempfile.mkdtemp(prefix=f"vuc-{name}-", dir="/tmp"))
    directory.chmod(0o755)
    host = start_host(name, directory, enforce=enforce, ovs_umask=0)
    try:
        yield host
    finally:
        host.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def guarded():
    yield from _host(True, "perm-on")


@pytest.fixture
def unguarded():
    yield from _host(False, "perm-off")


def test_another_user_reaches_a_server_port_only_through_its_relay(guarded: Switch):
    d, vs = guarded.directory, guarded.vswitchd
    sock_dir = d / "vhost"
    eventually(lambda: _mode(sock_dir) == 0o750, what="the agent to guard OVS's socket directory")
    assert f"guarded OVS's dpdkvhostuser socket directory {sock_dir}: mode 0755 -> 0750" in guarded.agent.text()
    vs.add_vhost_port("srv", compat="upstream.ovs-dpdk.v2.8", client=False)
    relay = Path(guarded.mirrored("srv")["vhost-compat-relay"])
    ovs_socket = sock_dir / "srv"
    assert _mode(ovs_socket) == 0o777  # OVS's socket is open to all (umask 0): the directory is the guard
    # OVS offers more than 2.8 (packed rings): what a bypass would get
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as direct:  # as root, which the guard lets through
        direct.connect(str(ovs_socket))
        direct.sendall(bytes.fromhex("010000000100000000000000"))
        full = int.from_bytes(direct.recv(20)[12:20], "little")
    assert full & PACKED
    # another user: OVS's socket is out of reach, the relay's is not, and it is masked
    assert as_nobody(ovs_socket) == {"errno": 13}  # EACCES
    assert _mode(relay) == 0o666 and _mode(relay.parent) == 0o755
    got = as_nobody(relay)
    assert got["request"] == 1 and got["features"] & ~(V28_VIRTIO | LOG_ALL) == 0
    assert not got["features"] & PACKED
    assert "cannot reach the relays' sockets" not in guarded.agent.text()
    # an ovs-vswitchd restart that re-created the directory open is guarded again
    sock_dir.chmod(0o755)
    vs.add_vhost_port("srv2", compat="upstream.ovs-dpdk.v2.8", client=False)  # a change: the agent reconciles
    eventually(lambda: _mode(sock_dir) == 0o750, what="the directory to be guarded again")
    guarded.mirrored("srv2")
    assert as_nobody(sock_dir / "srv2") == {"errno": 13}


def test_without_the_guard_another_user_reaches_ovs_directly(unguarded: Switch):
    """The control: the same frontend, enforcement off, gets OVS's whole offer."""
    unguarded.vswitchd.add_vhost_port("srv", compat="upstream.ovs-dpdk.v2.8", client=False)
    unguarded.mirrored("srv")
    sock_dir = unguarded.directory / "vhost"
    assert _mode(sock_dir) == 0o755
    got = as_nobody(sock_dir / "srv")
    assert got["request"] == 1 and got["features"] & PACKED  # unmasked


# -- the guard and the relays' modes, on their own --------------------------------------------------------

def test_the_guard_takes_bits_away_and_never_adds_any(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, "vucompat.agent")
    sock_dir = tmp_path / "vhost"
    guard = SockDirGuard(0o750, tmp_path / "relays")
    assert guard.check(sock_dir) == "absent"  # OVS has not created it yet: later
    sock_dir.mkdir()
    sock_dir.chmod(0o2775)
    assert guard.check(sock_dir) == "guarded" and _mode(sock_dir) == 0o2750  # setgid kept
    assert "mode 2775 -> 2750" in caplog.text
    caplog.clear()
    assert guard.check(sock_dir) == "guarded" and not caplog.text  # said once
    sock_dir.chmod(0o700)
    assert guard.check(sock_dir) == "guarded" and _mode(sock_dir) == 0o700  # never more open
    sock_dir.chmod(0o777)
    assert SockDirGuard(0o700).check(sock_dir) == "guarded" and _mode(sock_dir) == 0o700
    sock_dir.chmod(0o777)
    assert SockDirGuard(None).check(sock_dir) == "off" and _mode(sock_dir) == 0o777


def test_the_guard_refuses_a_directory_that_holds_the_relays(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    tmp_path.chmod(0o755)
    for relay_dir in (tmp_path, tmp_path / "relays"):
        caplog.clear()
        assert SockDirGuard(0o750, relay_dir).check(tmp_path) == "refused"
        assert _mode(tmp_path) == 0o755
        assert "frontends would be locked out of the relays too" in caplog.text and "--relay-dir" in caplog.text


def test_a_guard_that_may_not_chmod_says_what_to_configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture):
    tmp_path.chmod(0o755)

    def refused(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refused)
    assert SockDirGuard(0o750).check(tmp_path) == "failed"
    assert "cannot guard OVS's dpdkvhostuser socket directory" in caplog.text
    assert f"chmod 0750 {tmp_path}" in caplog.text and "unmasked" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING


def test_relay_sockets_get_their_mode_whatever_the_umask(tmp_path: Path):
    assert (RelayAccess().mode, RelayAccess().dir_mode) == (0o666, 0o755)
    assert (RelayAccess(group=0).mode, RelayAccess(group=0).dir_mode) == (0o660, 0o750)
    assert RelayAccess(socket_mode=0o600).dir_mode == 0o700
    relay_dir = tmp_path / "relays"
    old = os.umask(0o077)
    try:
        RelayAccess().prepare(relay_dir)
        manager = RelayManager(lambda *_: None, RelayAccess().mode, None)
        try:
            spec = RelaySpec("p", relay_dir / "p.sock", tmp_path / "nobody-serves-this", False, Abi(0, 0, 1, 256, 256))
            manager.ensure({"p": spec})
            assert _mode(relay_dir) == 0o755 and _mode(relay_dir / "p.sock") == 0o666
        finally:
            manager.stop()
    finally:
        os.umask(old)


def test_a_relay_directory_out_of_reach_is_named(caplog: pytest.LogCaptureFixture):
    top = Path(tempfile.mkdtemp(prefix="vuc-perm-", dir="/tmp"))  # 0700, in /tmp (1777)
    try:
        RelayAccess().prepare(top / "relays")
        assert f"{top} (mode 0700, " in caplog.text and "frontends of other users cannot reach the relays' sockets" \
            in caplog.text
        top.chmod(0o711)
        assert RelayAccess().blocking_directory(top / "relays") is None
        # with a group, a directory of that group with g+x is enough
        top.chmod(0o710)
        assert RelayAccess(group=os.getegid()).blocking_directory(top / "relays") is None
        assert RelayAccess().blocking_directory(top / "relays") is not None
    finally:
        shutil.rmtree(top)


def test_mode_and_group_options():
    assert parse_mode("0750") == parse_mode("750") == parse_mode("0o750") == 0o750
    assert parse_group("0") == 0 and parse_group("root") == 0
    with pytest.raises(ValueError):
        parse_mode("0999")
    with pytest.raises(ValueError):
        parse_group("no-such-group-here")
    for args, says in ((["--ovs-sock-dir-mode", "0550"], "needs rwx"),
                       (["--relay-group", "no-such-group-here"], "no group named"),
                       (["--relay-socket-mode", "x"], "not a permission mode")):
        done = subprocess.run([VUCOMPAT, "agent", "--db", "unix:/nonexistent.sock", *args], capture_output=True,
                              text=True, env=ENV, timeout=30)
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
