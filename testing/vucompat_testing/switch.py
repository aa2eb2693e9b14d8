"""A real switch host for the agent, relay and migration tests: ovsdb-server
(Open_vSwitch + registry), ovs-vswitchd-dpdk without hugepages, `vucompat agent`,
and dpdk-testpmd frontends. Every process is started here and stopped by pid. One
switch at a time: each test module has its own (module scope), so two vswitchd
never share the cores."""

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

from vucompat.core import catalog
from vucompat_testing import EXAMPLES
from vucompat_testing.ovsdb_server import select
from vucompat_testing.vswitchd import VSWITCHD_DPDK, Testpmd, Vswitchd
from vucompat_testing.ovsdb_server import OvsdbSandbox

VUCOMPAT = str(Path(sys.executable).parent / "vucompat")
ENV = {k: v for k, v in os.environ.items() if k != "VUCOMPAT_TABLES"}
# the agent probes the real backend (OVS 3.1 + DPDK 22.11 on Debian bookworm: virtio 0xd7c66a7ca,
# protocol 0x10cbf): latest resolves to upstream.ovs-dpdk.v2.15
LATEST = "upstream.ovs-dpdk.v2.15"


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
    enforce: bool = False
    #: more `vucompat agent` arguments (e.g. --fleet ...)
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = field(default=None, init=False)
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        log = self.log.with_name(f"{self.log.stem}.{len(self.logs)}.log")
        self.logs.append(log)
        directory = self.log.parent
        self.process = subprocess.Popen([VUCOMPAT, "agent", "--db", self.remote, "--log-file", str(log),
                                         "--enforcement", "relay" if self.enforce else "off",
                                         "--relay-dir", str(directory / "relays"), "--ovs-rundir", str(directory),
                                         *self.extra],
                                        env=ENV)

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


def start_switch(enforce: bool, name: str = "switch-1", other_config: dict[str, str] | None = None,
                 own_netns: bool = False, tables: tuple[Path, ...] = (EXAMPLES / "one-queue-pair",)):
    """A generator (for a fixture): a real switch host named `name`, its vswitchd
    started with `other_config` (in a network namespace of its own with `own_netns`),
    its registry loaded with `tables` and the shipped ones, the agent running and its
    probe recorded; everything stopped by pid afterwards."""
    for tool in ("ovsdb-server", "dpdk-testpmd"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed: run `make setup`")
    if not VSWITCHD_DPDK.exists():
        raise RuntimeError(f"{VSWITCHD_DPDK} is not installed: run `make setup` (openvswitch-switch-dpdk)")
    directory = Path(tempfile.mkdtemp(prefix="vuc-sw-", dir="/tmp"))
    server = OvsdbSandbox(directory)
    server.start()
    vswitchd = Vswitchd(directory, server.unix_remote, other_config=dict(other_config or {}), own_netns=own_netns)
    agent = AgentProcess(server.unix_remote, directory / "agent.log", enforce=enforce)
    sw = Switch(directory, server, vswitchd, agent)
    try:
        subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote, "--host-name", name,
                        *(arg for t in tables for arg in ("--tables", str(t)))], check=True, capture_output=True,
                       env=ENV)
        vswitchd.start()
        agent.start()
        # the agent probes the backend at start: ports are resolved against what it really offers
        eventually(lambda: select(server.unix_remote, "Host")[0]["capabilities_source"] == "probed",
                   timeout=30, what="the agent's probe")
        yield sw
    finally:
        agent.stop()
        for testpmd in sw.frontends:
            testpmd.stop()
        vswitchd.stop()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def negotiated(switch: Switch, name: str, timeout: float = 30) -> tuple[list[str], dict[str, str]]:
    """The features OVS reports a frontend negotiated on `name` (Interface status)."""
    def status() -> dict[str, str] | None:
        from vucompat.ovsdb import rpc

        (result,) = rpc.transact(switch.server.unix_remote, "Open_vSwitch", [
            {"op": "select", "table": "Interface", "where": [["name", "==", name]], "columns": ["status"]}])
        found = dict(result["rows"][0]["status"][1])
        return found if found.get("features") else None

    found = eventually(status, timeout=timeout, what=f"{name}'s frontend to connect")
    return catalog.mask_to_names(catalog.parse_hex(found["features"]), "virtio"), found


