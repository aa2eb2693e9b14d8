"""Which mode a plugged port gets, on real parts: two switches (ovsdb-server,
ovs-vswitchd-dpdk, the agent with relays) publishing into a fleet database (a
standalone ovsdb-server with the fleet schema), ports added as os-vif adds them
(no options:vhost-compat, external_ids:iface-id), and a QEMU guest that listens
before its port exists."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from vucompat_testing import EXAMPLES
from vucompat_testing.guest import GuestImage, ensure_guest
from vucompat_testing.ovsdb_server import OvsdbSandbox, select
from vucompat_testing.switch import ENV, VUCOMPAT, Switch, eventually, start_host
from vucompat.core import catalog
from vucompat.ovsdb.fleet_rows import now_ms
from vucompat.ovsdb.registry import delete_incoming, write_incoming

V28, V29, V213 = "upstream.ovs-dpdk.v2.8", "upstream.ovs-dpdk.v2.9", "upstream.ovs-dpdk.v2.13"
SITE = "acme.ovs-dpdk.v1.0"  # defined on host a only


@pytest.fixture(scope="module")
def fleet(standalone_fleet: OvsdbSandbox) -> OvsdbSandbox:
    return standalone_fleet


@pytest.fixture(scope="module")
def hosts(fleet: OvsdbSandbox) -> Iterator[dict[str, Switch]]:
    started: dict[str, Switch] = {}
    try:
        # (two userspace datapaths clash in one network namespace: b runs in its own)
        for name, tables in (("a", (EXAMPLES / "one-queue-pair",)), ("b", ())):
            started[name] = start_host(name, tables=tables, own_netns=name == "b", agent_args=[
                "--fleet", fleet.unix_remote, "--pool", "p1", "--heartbeat", "5"])
        yield started
    finally:
        for host in started.values():
            host.stop()
            subprocess.run(["rm", "-rf", str(host.directory)], check=False)


def plug(host: Switch, name: str, iface_id: str, *settings: str, port_type: str = "dpdkvhostuserclient") -> None:
    """ovs-vsctl add-port as os-vif plugs a VIFVHostUser (its external_ids, no compat option)."""
    path = [f"options:vhost-server-path={host.directory / (name + '.sock')}"] \
        if port_type == "dpdkvhostuserclient" and not any("frontend-path" in s for s in settings) else []
    host.vsctl("add-port", host.vswitchd.bridge, name, "--", "set", "Interface", name, f"type={port_type}", *path,
               f"external_ids:iface-id={iface_id}", "external_ids:attached-mac=fa:16:3e:00:00:01",
               "external_ids:vm-uuid=0e6c-vm", *settings)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VUCOMPAT, *args], capture_output=True, text=True, env=ENV, timeout=60)


def decided(host: Switch, name: str) -> dict:
    return eventually(lambda: (p := host.port(name)) and p, what=f"{name}'s port on {host.name}")


def test_a_port_plugged_without_option_takes_the_host_default_policy_and_says_so(hosts):
    a = hosts["a"]
    done = cli("policy", "upstream.ovs-dpdk.v9.9", "--db", a.remote)
    assert done.returncode == 2 and "default policy 'upstream.ovs-dpdk.v9.9' refused: unknown mode" in done.stderr
    assert "default policy latest" in cli("policy", "--db", a.remote).stdout  # unchanged
    assert cli("policy", V213, "--db", a.remote).stdout.strip() == f"a: default policy {V213}"
    try:
        plug(a, "vhu-boot", "n-boot")
        port = decided(a, "vhu-boot")
        assert (port["requested"], port["resolved"], port["state"]) == (V213, V213, "applied")
        assert (port["rule"], port["rule_detail"], port["iface_id"]) == ("host-default", f"policy {V213}", "n-boot")
        shown = cli("port", "show", "vhu-boot", "--db", a.remote).stdout
        assert f"rule       host-default: policy {V213}" in shown and "iface-id   n-boot" in shown
        # the explicit option keeps priority
        plug(a, "vhu-pinned", "n-pinned", f"options:vhost-compat={V28}")
        assert (decided(a, "vhu-pinned")["resolved"], decided(a, "vhu-pinned")["rule"]) == (V28, "explicit")
    finally:
        cli("policy", "latest", "--db", a.remote)
        a.unplug("vhu-boot", "vhu-pinned")


def fleet_ports(fleet: OvsdbSandbox, iface_id: str) -> list[dict]:
    rows = select(fleet.unix_remote, "Port", ["host", "resolved", "external_ids"], "VuCompat_Fleet")
    return [r for r in rows if ["iface-id", iface_id] in r["external_ids"][1]]


def test_the_destination_port_takes_the_source_port_s_mode_through_the_fleet(hosts, fleet):
    a, b = hosts["a"], hosts["b"]
    try:
        plug(a, "vhu-mig", "n-mig", f"options:vhost-compat={V29}")
        eventually(lambda: fleet_ports(fleet, "n-mig"), timeout=30, what="a's port of n-mig in the fleet")
        plug(b, "vhu-mig", "n-mig")  # Nova's pre_live_migration plugs the same Neutron port, with no option
        port = decided(b, "vhu-mig")
        assert (port["resolved"], port["state"], port["rule"]) == (V29, "applied", "follows-source")
        assert port["rule_detail"] == f"iface-id n-mig: {V29} on host a, in the fleet"
        assert "n-mig" in b.agent.text() and f"vhu-mig: requested {V29} -> {V29} (follows-source" in b.agent.text()
        # the pre-check agrees: b runs the mode, with the same digest
        done = cli("check-migration", "--port", "vhu-mig", "--source", a.remote, "--dest", b.remote,
                   "--format", "json")
        assert json.loads(done.stdout)["allowed"], done.stdout
    finally:
        b.unplug("vhu-mig")
        a.unplug("vhu-mig")


def test_a_source_mode_the_destination_cannot_run_is_rejected_and_the_pre_check_said_so(hosts, fleet):
    a, b = hosts["a"], hosts["b"]
    try:
        plug(a, "vhu-site", "n-site", f"options:vhost-compat={SITE}")
        eventually(lambda: fleet_ports(fleet, "n-site"), timeout=30, what="a's port of n-site in the fleet")
        done = cli("check-migration", "--port", "vhu-site", "--source", a.remote, "--dest", b.remote)
        assert done.returncode == 1, done.stdout
        plug(b, "vhu-site", "n-site")
        port = decided(b, "vhu-site")
        assert (port["state"], port["rule"], port["resolved"]) == ("rejected", "follows-source", None)
        assert port["error"].startswith(f"the port follows iface-id n-site's mode on host a, in the fleet, {SITE}: "
                                        f"unknown mode {SITE}")
        # fail closed: OVS connects to a relay nobody serves
        assert b.external_ids("vhu-site")["vhost-compat-state"] == "rejected"
    finally:
        b.unplug("vhu-site")
        a.unplug("vhu-site")


def test_an_orchestrator_names_the_source_registry(hosts):
    a, b = hosts["a"], hosts["b"]
    try:
        plug(a, "vhu-exp", "n-exp", f"options:vhost-compat={V28}")
        decided(a, "vhu-exp")
        refused = cli("port", "expect", "n-nothing", "--source", a.remote, "--db", b.remote)
        assert refused.returncode == 2 and "no port of iface-id n-nothing" in refused.stderr
        done = cli("port", "expect", "n-exp", "--source", a.remote, "--db", b.remote)
        assert done.returncode == 0 and f"will take {V28} from host a ({a.remote})" in done.stdout, done.stderr
        assert [r["iface_id"] for r in select(b.remote, "Incoming_Port")] == ["n-exp"]
        plug(b, "vhu-exp", "n-exp")
        port = decided(b, "vhu-exp")
        assert (port["resolved"], port["rule"]) == (V28, "follows-source")
        assert port["rule_detail"] == f"iface-id n-exp: {V28} on host a ({a.remote}) (named by the orchestrator)"
        eventually(lambda: not select(b.remote, "Incoming_Port"), what="the expectation to be used up")
        # a mode the destination lacks: refused before anything is recorded
        plug(a, "vhu-site2", "n-site2", f"options:vhost-compat={SITE}")
        decided(a, "vhu-site2")
        refused = cli("port", "expect", "n-site2", "--source", a.remote, "--db", b.remote)
        assert refused.returncode == 2 and f"unknown mode {SITE}" in refused.stderr
        assert not select(b.remote, "Incoming_Port")
    finally:
        b.unplug("vhu-exp")
        a.unplug("vhu-exp", "vhu-site2")


def test_an_expectation_no_port_used_within_a_day_decides_nothing(hosts):
    """An Incoming_Port row left by a migration that never plugged here (cancelled,
    sent elsewhere) is dropped by the agent after --incoming-ttl (a day), and a port
    plugged later with the same Neutron port is decided as any new port is."""
    a, b = hosts["a"], hosts["b"]
    two_days_ago = now_ms() - 2 * 86_400_000
    try:
        write_incoming(b.remote, "n-old", V28, None, a.remote, two_days_ago)
        write_incoming(b.remote, "n-fresh", V28, None, a.remote, now_ms() - 3_600_000)  # an hour: still waiting
        plug(b, "vhu-old", "n-old")  # (any change makes the agent pass)
        port = decided(b, "vhu-old")
        assert port["rule"] == "host-default" and port["resolved"] != V28
        assert [r["iface_id"] for r in select(b.remote, "Incoming_Port")] == ["n-fresh"]
        said = [line for line in b.agent.text().splitlines() if "Incoming_Port of iface-id n-old dropped" in line]
        assert len(said) == 1 and f"within 24 h of its recording (source {a.remote})" in said[0]
        plug(b, "vhu-fresh", "n-fresh")
        assert decided(b, "vhu-fresh")["rule"] == "follows-source"
    finally:
        b.unplug("vhu-old", "vhu-fresh")
        delete_incoming(b.remote, "n-fresh")


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return ensure_guest()


def test_a_frontend_listening_before_its_port_is_added_is_masked_from_its_first_message(hosts, image: GuestImage):
    a = hosts["a"]
    qemu_socket = a.directory / "guests" / "vhu-early.qemu.sock"
    with ThreadPoolExecutor(1) as pool:
        # QEMU listens first (and answers QMP only once a backend connected: start it aside)
        starting = pool.submit(a.guest, image, "vhu-early", qemu_socket, vhost_server=True)
        eventually(qemu_socket.exists, timeout=60, what="QEMU to listen")
        # the held form: no vhost-server-path, the frontend's socket in external_ids
        plug(a, "vhu-early", "n-early", f"options:vhost-compat={V28}",
             f"external_ids:vhost-compat-frontend-path={qemu_socket}")
        guest = starting.result(timeout=120)
    try:
        guest.wait_booted()
        port = eventually(lambda: (p := a.port("vhu-early"))["verification"] and p, timeout=60,
                          what="the guest's negotiation verified")
        assert port["state"] == "applied" and port["verification"].startswith("conformant"), port
        features = eventually(guest.features, timeout=60, what="the guest to print its features")
        mode = catalog.names_to_mask(json.loads(cli("show", V28, "--format", "json").stdout)["virtio_features"], "virtio")
        (host_row,) = select(a.remote, "Host", ["virtio_features"])
        offered = sum(1 << bit for bit in host_row["virtio_features"][1])  # what a's OVS offers (probed)
        assert "VIRTIO_RING_F_EVENT_IDX" in catalog.mask_to_names(offered & ~mode, "virtio")
        # of what OVS offers beyond the mode, the guest got nothing (QEMU adds features of its own: MAC, STATUS...)
        beyond = catalog.mask_to_names(features & offered & ~mode, "virtio")
        assert beyond == [], f"the guest negotiated {beyond}: offered by OVS, outside {V28}"
        # OVS only ever connected to the relay: never to QEMU's own socket
        ovs_log = a.vswitchd.log.read_text()
        assert str(qemu_socket) not in ovs_log and str(a.directory / "relays" / "vhu-early.sock") in ovs_log
        assert "lacks feature mask" not in guest.log_text()
        # and no type flip: the Interface was given its path once
        assert "vhu-early: options:vhost-server-path" in a.agent.text() and "(the relay, held until now)" in a.agent.text()
    finally:
        a.stop_guests()
        a.unplug("vhu-early")


def test_a_fleet_that_does_not_answer_fails_closed_until_it_does(hosts, fleet):
    b = hosts["b"]
    fleet.stop()
    try:
        plug(b, "vhu-dark", "n-dark")
        port = decided(b, "vhu-dark")
        assert (port["state"], port["rule"]) == ("rejected", "follows-source")
        assert "cannot tell whether iface-id n-dark has a mode on another host (the fleet did not answer" \
            in port["error"]
    finally:
        fleet.start()
    try:
        # the fleet answers again: nobody else has n-dark, so the host's default policy decides
        port = eventually(lambda: (p := b.port("vhu-dark"))["state"] == "applied" and p, timeout=60,
                          what="the port decided again once the fleet answers")
        assert port["rule"] == "host-default"
    finally:
        b.unplug("vhu-dark")
