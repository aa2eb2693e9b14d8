"""The port agent on real parts: ovsdb-server (Open_vSwitch + registry),
ovs-vswitchd-dpdk without hugepages, ports added with ovs-vsctl as a user would, and
dpdk-testpmd as the frontend. Every process is started here and stopped by pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import FIXTURES, select
from vucompat.dpdk_sandbox import VSWITCHD_DPDK, Testpmd, Vswitchd
from vucompat.ovsdb.sandbox import OvsdbSandbox

VUCOMPAT = str(Path(sys.executable).parent / "vucompat")
ENV = {k: v for k, v in os.environ.items() if k != "VUCOMPAT_TABLES"}
# what this host's backend offers (OVS 2.13 masks): latest resolves to upstream.ovs-dpdk.v2.13
LATEST = "upstream.ovs-dpdk.v2.13"


def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (subprocess.CalledProcessError, AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


@dataclass
class AgentProcess:
    remote: str
    log: Path
    process: subprocess.Popen | None = field(default=None, init=False)
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        log = self.log.with_name(f"{self.log.stem}.{len(self.logs)}.log")
        self.logs.append(log)
        self.process = subprocess.Popen([VUCOMPAT, "agent", "--db", self.remote, "--log-file", str(log)], env=ENV)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
            self.process = None

    def text(self) -> str:
        return "".join(p.read_text() for p in self.logs if p.exists())


@dataclass
class Switch:
    directory: Path
    server: OvsdbSandbox
    vswitchd: Vswitchd
    agent: AgentProcess
    frontends: list[Testpmd] = field(default_factory=list)

    def external_ids(self, name: str) -> dict[str, str]:
        from vucompat.ovsdb import rpc

        (result,) = rpc.transact(self.server.unix_remote, "Open_vSwitch", [
            {"op": "select", "table": "Interface", "where": [["name", "==", name]], "columns": ["external_ids"]}])
        (row,) = result["rows"]
        return dict(row["external_ids"][1])

    def mirrored(self, name: str) -> dict[str, str]:
        return eventually(lambda: (ids := self.external_ids(name)).get("vhost-compat-state") and ids,
                          what=f"the agent to record {name}")

    def port(self, name: str) -> dict[str, Any]:
        done = subprocess.run([VUCOMPAT, "port", "show", name, "--db", self.server.unix_remote, "--format", "json"],
                              capture_output=True, text=True, env=ENV, timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def frontend(self, name: str, **kw: Any) -> Testpmd:
        testpmd = Testpmd(self.directory / f"{name}.sock", self.directory / f"testpmd-{name}.log", **kw)
        testpmd.start()
        self.frontends.append(testpmd)
        return testpmd

    def delete(self, *names: str) -> None:
        for name in names:
            self.vswitchd.vsctl("--if-exists", "del-port", name)


@pytest.fixture(scope="module")
def switch():
    for tool in ("ovsdb-server", "dpdk-testpmd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make setup`")
    if not VSWITCHD_DPDK.exists():
        pytest.fail(f"{VSWITCHD_DPDK} is not installed: run `make setup` (openvswitch-switch-dpdk)")
    directory = Path(tempfile.mkdtemp(prefix="vuc-sw-", dir="/tmp"))
    server = OvsdbSandbox(directory)
    server.start()
    vswitchd = Vswitchd(directory, server.unix_remote)
    agent = AgentProcess(server.unix_remote, directory / "agent.log")
    sw = Switch(directory, server, vswitchd, agent)
    try:
        subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote, "--host-name", "switch-1",
                        "--capabilities", str(FIXTURES / "capabilities-ovs-2.13.toml")],
                       check=True, capture_output=True, env=ENV)
        vswitchd.start()
        agent.start()
        yield sw
    finally:
        agent.stop()
        for testpmd in sw.frontends:
            testpmd.stop()
        vswitchd.stop()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_named_latest_and_no_option(switch: Switch):
    vs = switch.vswitchd
    vs.vsctl("add-port", "br0", "named", "--", "set", "Interface", "named", "type=dpdkvhostuserclient",
             f"options:vhost-server-path={switch.directory}/named.sock", "options:vhost-compat=upstream.ovs-dpdk.v2.8",
             "external_ids:iface-id=os-vif-1", "external_ids:vm-uuid=vm-1")
    vs.add_vhost_port("latest", switch.directory / "latest.sock", compat="latest")
    vs.add_vhost_port("plain", switch.directory / "plain.sock")  # no option: the host default, latest
    vs.add_vhost_port("server", compat="upstream.ovs-dpdk.v2.9", client=False)  # OVS serves the socket
    ids = switch.mirrored("named")
    assert ids["vhost-compat-mode"] == "upstream.ovs-dpdk.v2.8" and ids["vhost-compat-state"] == "applied"
    assert ids["iface-id"] == "os-vif-1" and ids["vm-uuid"] == "vm-1"  # written key by key, others kept
    assert "vhost-compat-error" not in ids
    assert switch.mirrored("latest")["vhost-compat-mode"] == LATEST
    assert switch.mirrored("plain")["vhost-compat-mode"] == LATEST
    assert switch.mirrored("server")["vhost-compat-mode"] == "upstream.ovs-dpdk.v2.9"
    port = switch.port("plain")
    assert port["requested"] == "latest" and port["resolved"] == LATEST and port["state"] == "applied"
    (row,) = [r for r in select(switch.server.unix_remote, "Port") if r["interface_name"] == "plain"]
    assert row["interface_type"] == "dpdkvhostuserclient"
    switch.delete("named", "latest", "plain", "server")
    eventually(lambda: not [r for r in select(switch.server.unix_remote, "Port", ["interface_name"])
                            if r["interface_name"] in ("named", "latest", "plain", "server")],
               what="the Port rows of deleted interfaces to go")


def test_unknown_and_unrunnable_modes_are_rejected(switch: Switch):
    vs = switch.vswitchd
    before = {r["name"]: r for r in select(switch.server.unix_remote, "Compat_Mode")}
    vs.add_vhost_port("typo", switch.directory / "typo.sock", compat="upstream.ovs-dpdk.v2.31")
    vs.add_vhost_port("toonew", switch.directory / "toonew.sock", compat="upstream.ovs-dpdk.v3.2")
    typo = switch.mirrored("typo")
    assert typo["vhost-compat-state"] == "rejected" and "vhost-compat-mode" not in typo
    assert "unknown mode upstream.ovs-dpdk.v2.31; this host can run: upstream.ovs-dpdk.v2.13" in \
        typo["vhost-compat-error"]
    toonew = switch.mirrored("toonew")
    assert toonew["vhost-compat-state"] == "rejected"
    assert "lacks VIRTIO_NET_F_CSUM, VHOST_USER_PROTOCOL_F_STATUS" in toonew["vhost-compat-error"]
    assert switch.port("toonew")["resolved"] is None
    # nothing else changed: the modes are as they were, the interface is there, untouched
    assert {r["name"]: r for r in select(switch.server.unix_remote, "Compat_Mode")} == before
    assert vs.vsctl("get", "Interface", "toonew", "options:vhost-compat").strip('"') == "upstream.ovs-dpdk.v3.2"
    # the operator fixes the typo: the rejected port is resolved again
    vs.vsctl("set", "Interface", "typo", "options:vhost-compat=upstream.ovs-dpdk.v2.11")
    ids = eventually(lambda: "v2.31" not in (i := switch.external_ids("typo"))["vhost-compat-error"] and i,
                     what="typo resolved again")
    # 2.11 needs HOST_UFO, which this backend lacks: rejected again, with that reason
    assert ids["vhost-compat-state"] == "rejected" and "lacks VIRTIO_NET_F_HOST_UFO" in ids["vhost-compat-error"]
    switch.delete("typo", "toonew")


def test_a_live_edit_is_refused_and_the_mode_stays(switch: Switch):
    vs = switch.vswitchd
    vs.add_vhost_port("edited", switch.directory / "edited.sock", compat="upstream.ovs-dpdk.v2.9")
    assert switch.mirrored("edited")["vhost-compat-mode"] == "upstream.ovs-dpdk.v2.9"
    vs.vsctl("set", "Interface", "edited", "options:vhost-compat=latest")
    ids = eventually(lambda: (i := switch.external_ids("edited"))["vhost-compat-state"] == "change-refused" and i,
                     what="the edit to be refused")
    assert ids["vhost-compat-mode"] == "upstream.ovs-dpdk.v2.9"
    assert "changed from upstream.ovs-dpdk.v2.9 to latest on a live port: refused" in ids["vhost-compat-error"]
    assert switch.port("edited")["resolved"] == "upstream.ovs-dpdk.v2.9"
    vs.vsctl("set", "Interface", "edited", "options:vhost-compat=upstream.ovs-dpdk.v2.9")  # put back
    ids = eventually(lambda: (i := switch.external_ids("edited"))["vhost-compat-state"] == "applied" and i)
    assert "vhost-compat-error" not in ids
    switch.delete("edited")


def test_frontends_are_verified_nonconformant_and_conformant(switch: Switch):
    vs = switch.vswitchd
    packed = switch.frontend("packed", queues=2, queue_size=512, packed=True)
    fine = switch.frontend("fine", queues=2, queue_size=512)
    vs.add_vhost_port("packed", packed.socket, compat="upstream.ovs-dpdk.v2.8")  # 2.8 has no RING_PACKED
    vs.add_vhost_port("fine", fine.socket, compat="latest")
    bad = eventually(lambda: switch.port("packed")["state"] == "nonconformant" and switch.port("packed"),
                     timeout=30, what="the packed-ring frontend to be caught")
    assert {o["name"] for o in bad["offending"]} >= {"VIRTIO_F_RING_PACKED"}
    assert "VIRTIO_F_RING_PACKED" in bad["negotiated_features"]
    assert "VIRTIO_F_RING_PACKED" in switch.external_ids("packed")["vhost-compat-error"]
    assert bad["resolved"] == "upstream.ovs-dpdk.v2.8"  # caught, not changed
    assert "ERROR vucompat.agent: packed: NONCONFORMANT: negotiated beyond the mode" in switch.agent.text()
    good = eventually(lambda: switch.port("fine")["verification"] and switch.port("fine"), timeout=30,
                      what="the conformant frontend to be verified")
    assert good["state"] == "applied" and good["verification"].startswith("conformant")
    assert good["negotiated"]["num_of_vrings"] == "4" and good["offending"] == []
    switch.delete("packed", "fine")


def _port_uuids(switch: Switch, names: list[str]) -> dict[str, str]:
    rows = select(switch.server.unix_remote, "Port", ["_uuid", "interface_name"])
    return {r["interface_name"]: r["_uuid"][1] for r in rows if r["interface_name"] in names}


def test_agent_killed_and_restarted_while_ports_are_added(switch: Switch):
    vs = switch.vswitchd
    names = [f"churn{i}" for i in range(12)]
    for i, name in enumerate(names):
        vs.add_vhost_port(name, switch.directory / f"{name}.sock", compat="latest" if i % 2 else None)
        if i in (3, 8):
            switch.agent.stop(signal.SIGKILL)  # a crash, between two add-ports
            switch.agent.start()
    eventually(lambda: len(_port_uuids(switch, names)) == len(names), timeout=30, what="every port resolved")
    first = _port_uuids(switch, names)
    switch.agent.stop()
    switch.agent.start()  # a clean restart reconciles and changes nothing
    time.sleep(1.5)
    assert _port_uuids(switch, names) == first
    log = switch.agent.text()
    for name in names:
        # (a SIGKILL may land between the commit and the log line: at most once, never twice)
        assert log.count(f"{name}: requested ") <= 1, f"{name} resolved more than once"
        assert switch.external_ids(name)["vhost-compat-mode"] == LATEST
    switch.delete(*names)


def test_ovsdb_server_restarted_under_the_agent(switch: Switch):
    vs = switch.vswitchd
    vs.add_vhost_port("before", switch.directory / "before.sock", compat="upstream.ovs-dpdk.v2.6")
    switch.mirrored("before")
    uuid_before = _port_uuids(switch, ["before"])
    switch.server.stop()
    switch.server.start()
    eventually(lambda: vs.vsctl("get", "Open_vSwitch", ".", "cur_cfg"), timeout=30, what="vswitchd to reconnect")
    vs.add_vhost_port("after", switch.directory / "after.sock", compat="upstream.ovs-dpdk.v2.8")
    ids = eventually(lambda: switch.external_ids("after").get("vhost-compat-mode") and switch.external_ids("after"),
                     timeout=30, what="the agent to reconnect and resolve a new port")
    assert ids["vhost-compat-mode"] == "upstream.ovs-dpdk.v2.8"
    assert _port_uuids(switch, ["before"]) == uuid_before  # untouched, not resolved twice
    switch.delete("before", "after")
