"""os-vif as Nova runs it, on a test switch: VIFVHostUser objects built the way
nova/network/os_vif_util.py builds them, plugged and unplugged with os_vif.plug() and
os_vif.unplug() by the real vif_plug_ovs (native OVSDB interface, ovsdbapp) into a
Switch's ovsdb-server, with its ovs-vswitchd-dpdk applying them.

Each host gets its own os-vif process (`OsVif`, a Daemon: `python -m
vucompat_testing.osvif`, run by the Python of .venv-osvif, the os-vif venv
scripts/setup.sh makes), as each compute node has its own nova-compute: it reads a
nova.conf-like file ([os_vif_ovs] ovsdb_connection = the switch's unix remote, and
the [os_vif_ovs_vucompat] group of the optional plugin), calls os_vif.initialize()
once, and then builds and plugs (or unplugs) the VIFs the test describes (`Vif`,
`Instance`: plain values; the os-vif objects exist only in the worker).

One process per host is not only faithful, it is needed: in one process, os-vif
cannot serve two ovsdb-servers. vif_plug_ovs copies ovsdb_connection when its plugin
is built (so an override after os_vif.initialize() is ignored), and ovsdbapp's
Backend keeps the first connection it was given in a class attribute
(NeutronOvsdbIdl._ovsdb_connection), so even os_vif.initialize(reset=True) with
another ovsdb_connection goes on writing into the first host's database, silently
(tried: host B's port landed in host A's Open_vSwitch). A venv of its own is needed
too: os-vif brings eventlet, and the ovs library imports eventlet whenever it can,
which would change every vucompat command of the test venv (slower, a warning).
privsep runs in-process in the worker (vif_plug_ovs.privsep.vif_plug.set_client_mode
(False)): unplug's delete_net_dev is a privsep entrypoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vucompat_testing import REPO
from vucompat_testing.daemon import Daemon
from vucompat_testing.processes import ENV

if TYPE_CHECKING:
    from vucompat_testing.switch import Switch
    from vucompat_testing.vswitchd import Testpmd

#: the length Nova cuts port names to (nova.network.model.NIC_NAME_LEN)
NIC_NAME_LEN = 14
#: the Python of the os-vif venv (scripts/setup.sh), unless VUCOMPAT_OSVIF_PYTHON names another
OSVIF_PYTHON = Path(os.environ.get("VUCOMPAT_OSVIF_PYTHON", REPO / ".venv-osvif" / "bin" / "python"))


class OsVifError(RuntimeError):
    """os_vif.plug() or unplug() raised in the worker (PlugException, UnplugException,
    NoMatchingPlugin): `kind` is the exception's class name, the message its text."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def vhu_name(port_id: str) -> str:
    """The Interface name os-vif (and Nova) give a vhost-user port: ('vhu'+id)[:14]."""
    return ("vhu" + port_id)[:NIC_NAME_LEN]


def neutron_mac(port_id: str) -> str:
    """A Neutron-style MAC (fa:16:3e:..) derived from the port id."""
    digits = uuid.uuid5(uuid.NAMESPACE_OID, port_id).hex[:6]
    return "fa:16:3e:" + ":".join(digits[i:i + 2] for i in range(0, 6, 2))


@dataclass(frozen=True)
class Vif:
    """A Neutron port bound as vhostuser by the OVS mechanism driver (vif_details
    vhostuser_ovs_plug), as Nova hands it to os-vif: `mode` is QEMU's role
    (vhostuser_mode: "server", QEMU serves `path` and OVS gets a dpdkvhostuserclient
    port; "client", OVS serves and gets a dpdkvhostuser port), `path`
    vhostuser_socket. `plugin` is "ovs" in Nova (hard-coded); another name only for a
    caller that chooses os-vif's plugin (e.g. "ovs_vucompat")."""

    port_id: str
    mode: str
    path: str
    bridge: str
    mtu: int = 1500
    address: str = ""
    network_id: str = ""
    plugin: str = "ovs"
    datapath_type: str = "netdev"

    def __post_init__(self) -> None:
        if not self.address:
            object.__setattr__(self, "address", neutron_mac(self.port_id))
        if not self.network_id:
            object.__setattr__(self, "network_id", str(uuid.uuid5(uuid.NAMESPACE_OID, self.bridge)))

    @property
    def name(self) -> str:
        return vhu_name(self.port_id)


@dataclass(frozen=True)
class Instance:
    """The instance os-vif is told about (Nova's nova_to_osvif_instance): uuid, name."""

    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    name: str = "instance-00000001"


@dataclass
class Plugged:
    """A VIF os-vif plugged on `switch`: its Interface `name`, the VIF and instance."""

    switch: Switch
    vif: Vif
    instance: Instance

    @property
    def name(self) -> str:
        return self.vif.name

    @property
    def mode(self) -> str:
        return self.vif.mode

    def qemu_socket(self, timeout: float = 30.0) -> Path:
        """The socket the VM's QEMU uses: mode "server", the VIF's path (QEMU serves
        it); mode "client", the one the agent mirrors as vhost-compat-relay (OVS's own
        socket when the port has no relay), once the agent has recorded the port."""
        if self.mode != "client":
            return Path(self.vif.path)
        return self.switch.vswitchd.frontend_socket(self.name, timeout)

    def start_frontend(self, **kw: Any) -> Testpmd:
        """Start the VM side, a testpmd frontend named after the port, on
        qemu_socket(): serving it for mode "server", connecting for "client"
        (Testpmd's options in `kw`, e.g. queues, packed)."""
        return self.switch.frontend(self.name, socket=self.qemu_socket(), server=self.mode != "client", **kw)


@dataclass
class OsVif(Daemon):
    """A host's os-vif, as its nova-compute has it: a worker process that initialized
    os-vif once against `remote` (a unix remote of the switch's ovsdb-server) from a
    config file in `directory` (osvif.conf; `plugin_options` are written into the
    [os_vif_ovs_vucompat] group of the optional plugin). Its log is <name>.log."""

    directory: Path
    remote: str
    plugin_options: dict[str, str] = field(default_factory=dict)
    #: os-vif's wait for ovs-vswitchd to apply a plug ([os_vif_ovs] ovs_vsctl_timeout)
    vsctl_timeout: int = 60
    #: its files are <name>.conf, <name>.log, <name>.pid (two on one host need two names)
    name: str = "osvif"
    _replies: queue.Queue = field(default_factory=queue.Queue, init=False, repr=False)
    #: what the worker said when it was ready: {"plugins": [...], "seconds": ...}
    started: dict[str, Any] = field(default_factory=dict, init=False)

    @classmethod
    def on(cls, switch: Switch, **kw: Any) -> OsVif:
        """Start one for `switch` (OsVif's options in `kw`); return it."""
        osvif = cls(switch.directory, switch.remote, **kw)
        osvif.start()
        return osvif

    @property
    def stem(self) -> str:  # type: ignore[override]
        return self.name

    @property
    def config_file(self) -> Path:
        return self.file(".conf")

    def config_text(self) -> str:
        """The nova.conf-like file the worker reads: both plugins' groups point at `remote`."""
        common = [f"ovsdb_connection = {self.remote}", "ovsdb_interface = native",
                  f"ovs_vsctl_timeout = {self.vsctl_timeout}"]
        extra = [f"{k} = {v}" for k, v in self.plugin_options.items()]
        return "\n".join(["[os_vif_ovs]", *common, "", "[os_vif_ovs_vucompat]", *common, *extra, ""])

    def launch(self, timeout: float) -> None:
        if not OSVIF_PYTHON.exists():
            raise RuntimeError(f"{OSVIF_PYTHON} is missing: run `make setup` (it makes os-vif's venv)")
        self.config_file.write_text(self.config_text())
        self._replies = queue.Queue()
        with open(self.log, "a") as log:
            process = self.spawn([str(OSVIF_PYTHON), "-m", "vucompat_testing.osvif", "--config-file",
                                  str(self.config_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=log, env=ENV)
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._replies.put(json.loads(line))
        self._replies.put(None)  # the worker is gone

    def ready(self) -> bool:
        if self.started:
            return True
        try:
            reply = self._replies.get(timeout=0.05)
        except queue.Empty:
            return False
        if reply is None:
            return False  # exited: wait_ready sees it
        self.started = reply
        return True

    def quit(self) -> None:
        """Close its stdin: the worker exits."""
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
            self.process.wait(timeout=10)

    def _call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.process is None or self.process.stdin is None:
            raise RuntimeError("os-vif worker is not running")
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"os-vif did not answer {request['op']} in {timeout:g} s: see {self.log}") from None
        if reply is None:
            raise RuntimeError(f"the os-vif worker exited: see {self.log}")
        if "error" in reply:
            raise OsVifError(reply["kind"], reply["error"])
        return reply

    def plug(self, switch: Switch, vif: Vif, instance: Instance | None = None, timeout: float = 120.0) -> Plugged:
        """os_vif.plug() of `vif` (built as Nova builds it) for `instance` (default: a
        new one) on this host; return the Plugged VIF. Raises OsVifError with os-vif's
        exception."""
        instance = instance or Instance()
        self._call({"op": "plug", "vif": asdict(vif), "instance": asdict(instance)}, timeout)
        return Plugged(switch, vif, instance)

    def replug(self, plugged: Plugged, timeout: float = 120.0) -> None:
        """os_vif.plug() of a VIF again, as Nova does on nova-compute restart, hard reboot
        and resume. Raises OsVifError."""
        self._call({"op": "plug", "vif": asdict(plugged.vif), "instance": asdict(plugged.instance)}, timeout)

    def unplug(self, plugged: Plugged, timeout: float = 60.0) -> None:
        """os_vif.unplug() of a plugged VIF on this host. Raises OsVifError."""
        self._call({"op": "unplug", "vif": asdict(plugged.vif), "instance": asdict(plugged.instance)}, timeout)

    def text(self) -> str:
        """Everything the worker logged so far (os-vif's INFO lines)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# ---- the worker: python -m vucompat_testing.osvif --config-file FILE ---------------------------

def nova_vif(spec: dict[str, Any]) -> Any:
    """The VIFVHostUser Nova builds for a Vif (os_vif_util._nova_to_osvif_vif_vhostuser,
    the vhostuser_ovs_plug branch, with _get_vif_instance, _nova_to_osvif_network and
    _set_vhostuser_settings)."""
    from os_vif import objects

    profile = objects.vif.VIFPortProfileOpenVSwitch(interface_id=spec["port_id"],
                                                    datapath_type=spec["datapath_type"])
    network = objects.network.Network(id=spec["network_id"], bridge_interface=None,
                                      subnets=objects.subnet.SubnetList(objects=[]), bridge=spec["bridge"],
                                      mtu=spec["mtu"])
    vif = objects.vif.VIFVHostUser(id=spec["port_id"], address=spec["address"], network=network,
                                   has_traffic_filtering=False, preserve_on_delete=False, active=False,
                                   plugin=spec["plugin"], port_profile=profile, vif_name=vhu_name(spec["port_id"]))
    vif.mode = spec["mode"]
    vif.path = spec["path"]
    return vif


def _serve(config_file: str) -> None:
    """Initialize os-vif as nova-compute does (the config file, then initialize), answer
    one JSON line per request on stdout, until stdin closes."""
    began = time.monotonic()
    from oslo_config import cfg

    import os_vif
    from os_vif import objects
    from vif_plug_ovs import privsep as vif_privsep

    cfg.CONF(["--config-file", config_file], project="vucompat-osvif", default_config_files=[])
    os_vif.initialize()
    vif_privsep.vif_plug.set_client_mode(False)  # privsep entrypoints (unplug's delete_net_dev) in-process
    out = sys.stdout
    sys.stdout = sys.stderr  # only replies on the real stdout
    names = sorted(os_vif._EXT_MANAGER.names()) if os_vif._EXT_MANAGER is not None else []
    out.write(json.dumps({"plugins": names, "seconds": round(time.monotonic() - began, 3)}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            vif = nova_vif(request["vif"])
            instance = objects.instance_info.InstanceInfo(**request["instance"])
            t0 = time.monotonic()
            (os_vif.plug if request["op"] == "plug" else os_vif.unplug)(vif, instance)
            reply: dict[str, Any] = {"ok": True, "seconds": round(time.monotonic() - t0, 3)}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the test
            reply = {"error": str(exc), "kind": type(exc).__name__}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="os-vif for one test host (see vucompat_testing.osvif)")
    parser.add_argument("--config-file", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _serve(args.config_file)


if __name__ == "__main__":
    main()
