"""Probe what a live vhost-user backend really offers, as a frontend without a guest
(like libvirt probing QEMU with `-machine none`): GET_FEATURES, then
GET_PROTOCOL_FEATURES (when VHOST_USER_F_PROTOCOL_FEATURES is offered), then
GET_QUEUE_NUM (when the protocol feature MQ is offered).

Against OVS: a short-lived dpdkvhostuserclient port on a bridge, whose socket the
probe serves itself (so it needs nothing of ovs-vswitchd's run directory), marked
`external_ids:vucompat-probe=true` so the agent leaves it alone, removed afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from vucompat.core import catalog
from vucompat.vhostuser import protocol as vu
from vucompat.core.errors import VucompatError
from vucompat.core.mode import CLIENT_TYPE, MAX_QUEUE_PAIRS, MAX_QUEUE_SIZE, PROBE_MARK, SERVER_TYPE, Abi, Capabilities

#: the OVS settings that change what a vhost-user port offers
SETTINGS = ("userspace-tso-enable", "vhost-iommu-support", "vhost-postcopy-support")
#: a backend does not report a maximum ring size: DPDK vhost accepts up to this
ASSUMED_QUEUE_SIZE = MAX_QUEUE_SIZE


class ProbeError(VucompatError):
    template = "probe: {reason}"


@dataclass(frozen=True)
class Offer:
    """What a backend answered."""

    virtio: int
    protocol: int
    queue_pairs: int

    def abi(self) -> Abi:
        return Abi(self.virtio, self.protocol, self.queue_pairs, ASSUMED_QUEUE_SIZE, ASSUMED_QUEUE_SIZE)


def ask(sock: socket.socket, timeout: float = 5.0) -> Offer:
    """Run the frontend's first questions on a connected vhost-user socket."""
    def question(code: int) -> int:
        vu.send(sock, vu.request(code))
        reply = vu.recv_blocking(sock, timeout)
        vu.close_fds(reply.fds)
        if reply.request != code or not reply.is_reply:
            raise ProbeError(reason=f"expected the reply to request {code}, got request {reply.request}")
        return reply.u64()

    virtio = question(vu.GET_FEATURES)
    protocol = question(vu.GET_PROTOCOL_FEATURES) if virtio & catalog.lookup(
        "VHOST_USER_F_PROTOCOL_FEATURES").value else 0
    mq = catalog.lookup("VHOST_USER_PROTOCOL_F_MQ").value
    queues = question(vu.GET_QUEUE_NUM) if protocol & mq else 1
    return Offer(virtio, protocol, max(1, min(int(queues), MAX_QUEUE_PAIRS)))


def probe_socket(path: Path, timeout: float = 5.0) -> Offer:
    """Probe a backend that serves `path` (a dpdkvhostuser socket)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as err:
            raise ProbeError(reason=f"cannot connect to {path}: {err.strerror}") from None
        return ask(sock, timeout)


def probe_bridge(remote: str, bridge: str, workdir: Path | None = None, timeout: float = 10.0) -> Offer:
    """Probe ovs-vswitchd through a short-lived port on `bridge` of the switch whose
    Open_vSwitch database is at `remote`. Raises ProbeError."""
    name = f"vucprobe{os.getpid() % 100000}"
    with tempfile.TemporaryDirectory(prefix="vucompat-probe-", dir=workdir) as tmp:
        path = Path(tmp) / "probe.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(path))
            listener.listen(1)
            listener.settimeout(timeout)
            _vsctl(remote, "--may-exist", "add-port", bridge, name, "--", "set", "Interface", name,
                   "type=dpdkvhostuserclient", f"options:vhost-server-path={path}",
                   f"external_ids:{PROBE_MARK}=true")
            try:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    raise ProbeError(reason=f"ovs-vswitchd did not connect to the probe port within {timeout:g}s "
                                     "(is it running with DPDK, and is the bridge a netdev bridge?)") from None
                with conn:
                    return ask(conn, timeout)
            finally:
                _vsctl(remote, "--if-exists", "del-port", bridge, name)


def probe_server_port(remote: str, bridge: str, sock_dir: Path, timeout: float = 10.0) -> Offer:
    """Probe ovs-vswitchd through a short-lived dpdkvhostuser port on `bridge`: OVS
    serves its socket in `sock_dir` (<OVS_RUNDIR>/<vhost-sock-dir>) and the probe
    connects to it. Raises ProbeError."""
    name = f"vucprobes{os.getpid() % 100000}"
    path = sock_dir / name
    _vsctl(remote, "--may-exist", "add-port", bridge, name, "--", "set", "Interface", name,
           "type=dpdkvhostuser", f"external_ids:{PROBE_MARK}=true")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return probe_socket(path, timeout)
            except ProbeError:
                if time.monotonic() > deadline:
                    raise ProbeError(reason=f"ovs-vswitchd did not serve {path} within {timeout:g}s (is "
                                     "vhost-sock-dir right, and the bridge a netdev bridge?)") from None
                time.sleep(0.05)
    finally:
        _vsctl(remote, "--if-exists", "del-port", bridge, name)


def probe_types(remote: str, bridge: str, sock_dir: Path | None, workdir: Path | None = None,
                timeout: float = 10.0) -> dict[str, Offer]:
    """Probe both port types (a client port, and a server port when `sock_dir` is
    known): port type -> what it offers. Raises ProbeError."""
    offers = {CLIENT_TYPE: probe_bridge(remote, bridge, workdir, timeout)}
    if sock_dir is not None:
        offers[SERVER_TYPE] = probe_server_port(remote, bridge, sock_dir, timeout)
    return offers


def capabilities_of(offers: dict[str, Offer], source: str = "probe") -> Capabilities:
    """The capabilities that per-type offers make."""
    return Capabilities.of_types({t: o.abi() for t, o in offers.items()}, source=source)


def _vsctl(remote: str, *args: str) -> str:
    done = subprocess.run(["ovs-vsctl", f"--db={remote}", "--timeout=30", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ProbeError(reason=f"ovs-vsctl {' '.join(args[:3])} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def dump_entry(offer: Offer, version: str, provenance: dict[str, str], note: str = "") -> str:
    """A ready-to-paste `[[mode]]` table entry for what a backend offers (the first,
    complete version of a lineage: later ones are written as deltas)."""
    from vucompat.core.tomlwrite import mode_entry_toml

    abi = Abi(offer.virtio, offer.protocol, offer.queue_pairs, 1024, 1024)
    return mode_entry_toml(
        abi, version, date.today(), provenance,
        note=f"{note or 'dumped by vucompat dump'}: virtio {catalog.to_hex(offer.virtio)}, "
             f"protocol {catalog.to_hex(offer.protocol)}",
        limit_comments={"max_rx_queue_size": "not probed: QEMU's virtio-net maximum; the backend accepts up "
                                             "to 32768"})


def settings_fingerprint(ovs_version: str | None, dpdk_version: str | None, other_config: dict[str, str]) -> str:
    """What decides a backend's offer: re-probe when this changes."""
    parts = [f"ovs={ovs_version or ''}", f"dpdk={dpdk_version or ''}"]
    parts += [f"{key}={other_config.get(key, '')}" for key in SETTINGS]
    return ";".join(parts)


def probe_record(versions: dict[str, str], other_config: dict[str, str]) -> dict[str, str]:
    """What a probe records in the Host row's other_config: the settings that decided
    the offer (probe-*) and their fingerprint (probe-fingerprint)."""
    record = {f"probe-{key}": other_config.get(key, "") for key in SETTINGS}
    record["probe-fingerprint"] = settings_fingerprint(versions.get("ovs_version"), versions.get("dpdk_version"),
                                                       other_config)
    return record
