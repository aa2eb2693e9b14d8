"""os-vif, the real client that writes vhost-user ports on compute nodes, against the
agent on real parts: VIFVHostUser objects built as Nova builds them, plugged and
unplugged with os_vif.plug()/os_vif.unplug() (vif_plug_ovs, native OVSDB interface)
into a switch's ovsdb-server and its ovs-vswitchd-dpdk, one os-vif process per host
as one nova-compute per host (vucompat_testing.osvif); testpmd as the VM's frontend.
And the optional plugin `ovs_vucompat` (vucompat/osvif), plugged the same way."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from vucompat.core import catalog
from vucompat_testing.osvif import Instance, OsVif, OsVifError, Plugged, Vif, vhu_name
from vucompat_testing.ovsdb_server import select
from vucompat_testing.switch import ENV, LATEST, VUCOMPAT, Switch, eventually, negotiated, start_switch

V28 = "upstream.ovs-dpdk.v2.8"
OPTION = "vhost-compat"
#: what upstream.ovs-dpdk.v2.8 offers a guest (no packed rings)
V28_VIRTIO = set(catalog.mask_to_names(0x15466818A, "virtio"))


@pytest.fixture(scope="module")
def host(standalone_fleet) -> Iterator[Switch]:
    """compute-a: ovs-vswitchd-dpdk and an enforcing agent (a masking relay per port)
    that publishes into a fleet database."""
    yield from start_switch(enforce=True, name="compute-a", agent_args=["--fleet", standalone_fleet.unix_remote])


@pytest.fixture(scope="module")
def nova(host: Switch) -> Iterator[OsVif]:
    """compute-a's os-vif, as its nova-compute has it ([os_vif_ovs] only)."""
    osvif = OsVif.on(host)
    yield osvif
    osvif.stop()


def boot(osvif: OsVif, switch: Switch, mode: str, plugin: str = "ovs", port_id: str | None = None,
         instance: str | None = None) -> Plugged:
    """Nova's plug_vifs for a new VM: a Neutron port bound as vhostuser (ovs plug), its
    socket in the switch's vhost-user socket directory, then os_vif.plug()."""
    port_id = port_id or str(uuid.uuid4())
    sockets = switch.directory / "vhostuser"  # Neutron's vhostuser_socket_dir
    sockets.mkdir(exist_ok=True)
    vif = Vif(port_id, mode=mode, path=str(sockets / vhu_name(port_id)), bridge=switch.vswitchd.bridge, plugin=plugin)
    return osvif.plug(switch, vif, Instance(instance) if instance else None)


def interface(switch: Switch, name: str) -> dict | None:
    """The Interface row `name` (type, options, external_ids, status as dicts), or None."""
    rows = select(switch.remote, "Interface", ["_uuid", "type", "options", "external_ids", "status"], "Open_vSwitch",
                  [["name", "==", name]])
    if not rows:
        return None
    row = rows[0]
    return {"uuid": row["_uuid"][1], "type": row["type"], **{k: dict(row[k][1]) for k in
                                                             ("options", "external_ids", "status")}}


def behind_relay(switch: Switch, name: str) -> dict:
    """The Interface of a mode "server" VIF (dpdkvhostuserclient) once the agent has
    moved OVS onto its relay (after a brief type flip): options:vhost-server-path is
    the relay the agent mirrors."""
    def moved() -> dict | None:
        iface = interface(switch, name)
        relay = iface["external_ids"].get("vhost-compat-relay") if iface else None
        ok = relay and iface["type"] == "dpdkvhostuserclient" and iface["options"].get("vhost-server-path") == relay
        return iface if ok else None

    return eventually(moved, timeout=30, what=f"{name} to be moved behind its relay",
                      explain=lambda: switch.explain(name))


def connected_via(switch: Switch, name: str) -> dict[str, str]:
    """The Interface status once its frontend is connected (negotiated features known)."""
    return negotiated(switch, name)[1]


def unplugged(osvif: OsVif, plugged: Plugged) -> None:
    """os_vif.unplug(); the Interface is gone at once, its Port row once the agent has seen it."""
    switch = plugged.switch
    osvif.unplug(plugged)
    assert interface(switch, plugged.name) is None
    assert plugged.name not in switch.vsctl("list-ports", switch.vswitchd.bridge).split()
    eventually(lambda: switch.port_row(plugged.name) is None, what=f"{plugged.name}'s Port row to go")


@pytest.mark.parametrize("mode", ["server", "client"])
def test_a_plugged_vif_gets_the_host_default_and_its_frontend_is_masked(host: Switch, nova: OsVif, mode: str):
    plugged = boot(nova, host, mode)
    name = plugged.name
    # what os-vif wrote, as a user sees it next to what the agent mirrors
    ids = host.mirrored(name)
    assert ids["iface-id"] == plugged.vif.port_id and ids["vm-uuid"] == plugged.instance.uuid
    assert ids["attached-mac"] == plugged.vif.address and ids["iface-status"] == "active"
    assert ids["vhost-compat-mode"] == LATEST and ids["vhost-compat-state"] == "applied"
    iface = interface(host, name)
    assert iface is not None and OPTION not in iface["options"]  # os-vif passes no mode: the host's default
    port = host.port(name)
    assert (port["requested"], port["resolved"], port["state"]) == ("latest", LATEST, "applied")
    assert port["rule"] == "host-default"  # no request, no source: the host's default policy
    relay = ids["vhost-compat-relay"]
    if mode == "server":
        # the agent moved OVS onto its relay (a brief type flip), which connects to the socket QEMU serves
        assert ids["vhost-compat-frontend-socket"] == plugged.vif.path
        behind_relay(host, name)
    else:
        assert interface(host, name)["type"] == "dpdkvhostuser"
        assert plugged.qemu_socket() == Path(relay)  # QEMU connects to the relay, not to OVS's socket
    # the VM starts after the plug (Nova's order) and asks for packed rings and 2 queue pairs
    plugged.start_frontend(queues=2, queue_size=512, packed=True)
    status = connected_via(host, name)
    if mode == "server":
        assert status["socket"] == relay  # OVS reached the VM through the relay
    verified = eventually(lambda: host.port(name)["verification"] and host.port(name), timeout=30,
                          what=f"{name} verified", explain=lambda: host.explain(name))
    assert verified["state"] == "applied" and verified["verification"].startswith("conformant")
    assert verified["negotiated"]["num_of_vrings"] == "4"
    unplugged(nova, plugged)
    assert "Successfully unplugged vif VIFVHostUser" in nova.text()


def test_a_replug_rewrites_the_path_and_the_agent_puts_the_relay_back_without_a_flap(host: Switch, nova: OsVif):
    """nova-compute restarts (or hard-reboots the VM) and plugs the same VIF again:
    os-vif writes type and options:vhost-server-path back to its own values."""
    plugged = boot(nova, host, "server")
    name = plugged.name
    relay = host.mirrored(name)["vhost-compat-relay"]
    frontend = plugged.start_frontend()
    assert connected_via(host, name)["socket"] == relay
    before = behind_relay(host, name)
    row_before = host.port_row(name)
    log_before = frontend.log.read_text()
    nova.replug(plugged)  # the re-plug: os-vif writes vhost-server-path=<vif.path> back
    # the agent puts the relay's path back in place (OVS 3.1 ignores a new path while the port
    # is registered, and it still is, at the relay): no re-creation, so the link never drops;
    # the port is the same port: not resolved again
    moved = f"{name}: options:vhost-server-path -> {relay} (the relay, in place: ovs-vswitchd still uses it"
    eventually(lambda: moved in host.agent.text(), what="the agent to put the relay's path back",
               explain=lambda: host.explain(name))
    after = behind_relay(host, name)
    assert after["uuid"] == before["uuid"] and after["type"] == "dpdkvhostuserclient"
    assert after["external_ids"]["vhost-compat-frontend-socket"] == plugged.vif.path
    status = eventually(lambda: (s := interface(host, name)["status"]).get("status") == "connected" and s,
                        timeout=30, what="the frontend connected again", explain=lambda: host.explain(name))
    assert status["socket"] == relay
    row_after = host.port_row(name)
    assert row_after is not None and row_before is not None
    assert row_after["_uuid"] == row_before["_uuid"] and row_after["resolved"] == LATEST
    assert host.agent.text().count(f"{name}: requested ") == 1
    assert frontend.running()
    since = frontend.log.read_text()[len(log_before):]
    assert "is down" not in since and "reconnect" not in since, since  # the VM's link stayed up
    unplugged(nova, plugged)


def test_a_replug_of_a_client_mode_vif_changes_nothing(host: Switch, nova: OsVif):
    """mode client (dpdkvhostuser): os-vif writes no path, so a re-plug leaves the port
    and its relay as they were."""
    plugged = boot(nova, host, "client")
    relay = host.mirrored(plugged.name)["vhost-compat-relay"]
    plugged.start_frontend()
    connected_via(host, plugged.name)
    before = interface(host, plugged.name)
    nova.replug(plugged)
    after = interface(host, plugged.name)
    assert after["uuid"] == before["uuid"] and after["type"] == "dpdkvhostuser" and after["options"] == {}
    assert host.mirrored(plugged.name)["vhost-compat-relay"] == relay
    assert host.port(plugged.name)["state"] == "applied"
    unplugged(nova, plugged)


def test_the_destination_of_a_migration_gets_the_source_port_s_mode(host: Switch, nova: OsVif, standalone_fleet):
    """Nova's live migration with unmodified os-vif: the VM boots on compute-a, whose
    default policy pins upstream.ovs-dpdk.v2.8; pre_live_migration plugs the same VIF
    (same Neutron port) on compute-b, whose own default is latest: its agent finds the
    port's mode on compute-a through the fleet and gives it the same. Each os-vif
    writes its own host's database; unplugging the source (post_live_migration) leaves
    the destination's port."""
    dest_switch = start_switch(enforce=True, name="compute-b", own_netns=True,
                               agent_args=["--fleet", standalone_fleet.unix_remote])
    dest = next(dest_switch)
    dest_nova = OsVif.on(dest)
    policy = [VUCOMPAT, "policy"]
    subprocess.run([*policy, V28, "--db", host.remote], check=True, capture_output=True, env=ENV)
    try:
        source = boot(nova, host, "server")
        port = host.port(source.name)
        assert (port["resolved"], port["rule"], port["rule_detail"]) == (V28, "host-default", f"policy {V28}")
        eventually(lambda: source.vif.port_id in str(select(standalone_fleet.unix_remote, "Port", ["external_ids"],
                                                            "VuCompat_Fleet")),
                   timeout=30, what="compute-a's port in the fleet")
        destination = boot(dest_nova, dest, "server", port_id=source.vif.port_id, instance=source.instance.uuid)
        assert source.name == destination.name
        moved = dest.port(destination.name)
        assert (moved["resolved"], moved["state"], moved["rule"]) == (V28, "applied", "follows-source")
        assert moved["rule_detail"] == f"iface-id {source.vif.port_id}: {V28} on host compute-a, in the fleet"
        assert dest.mirrored(destination.name)["vhost-compat-mode"] == V28
        for switch in (host, dest):
            ids = switch.mirrored(source.name)
            assert ids["iface-id"] == source.vif.port_id and ids["vm-uuid"] == source.instance.uuid
        unplugged(nova, source)
        assert dest.port(destination.name)["state"] == "applied"
        assert interface(dest, destination.name) is not None
        unplugged(dest_nova, destination)
    finally:
        subprocess.run([*policy, "latest", "--db", host.remote], check=True, capture_output=True, env=ENV)
        dest_nova.stop()
        dest_switch.close()


def test_an_unknown_plugin_is_refused_by_os_vif(host: Switch, nova: OsVif):
    with pytest.raises(OsVifError) as caught:
        boot(nova, host, "server", plugin="no-such-plugin")
    assert caught.value.kind == "NoMatchingPlugin"
    assert nova.started["plugins"] == ["noop", "ovs", "ovs_vucompat"]  # the extra's entry point, next to os-vif's own


# ---- the optional plugin ovs_vucompat ----------------------------------------------------------


@pytest.fixture(scope="module")
def explicit(host: Switch) -> Iterator[OsVif]:
    """A compute whose [os_vif_ovs_vucompat] asks for upstream.ovs-dpdk.v2.8, unheld."""
    osvif = OsVif.on(host, name="osvif-explicit",
                     plugin_options={"vhost_compat_mode": V28, "hold_for_agent": "false"})
    yield osvif
    osvif.stop()


@pytest.mark.parametrize("mode", ["server", "client"])
def test_the_plugin_passes_an_explicit_mode(host: Switch, explicit: OsVif, mode: str):
    plugged = boot(explicit, host, mode, plugin="ovs_vucompat")
    name = plugged.name
    ids = host.mirrored(name)
    assert ids["vhost-compat-mode"] == V28 and ids["vhost-compat-state"] == "applied"
    assert ids["iface-id"] == plugged.vif.port_id  # and the rest of what the stock plugin writes
    iface = behind_relay(host, name) if mode == "server" else interface(host, name)
    assert iface["options"][OPTION] == V28
    assert "vhost-compat-frontend-path" not in iface["external_ids"]  # not held
    port = host.port(name)
    assert (port["requested"], port["resolved"], port["state"]) == (V28, V28, "applied")
    assert port["rule"] == "explicit"
    # written with the port, in one transaction: the agent never resolved it any other way
    assert host.agent.text().count(f"{name}: requested ") == 1
    # a guest that asks for packed rings gets what 2.8 offers, no more
    plugged.start_frontend(queues=2, queue_size=512, packed=True)
    features, _ = negotiated(host, name)
    assert set(features) <= V28_VIRTIO, set(features) - V28_VIRTIO
    verified = eventually(lambda: host.port(name)["verification"] and host.port(name), timeout=30,
                          what=f"{name} verified", explain=lambda: host.explain(name))
    assert verified["state"] == "applied"
    # nova-compute restarts after the operator changed the configured mode: its re-plug
    # leaves the live port's request (and so its mode) alone
    restarted = OsVif.on(host, name="osvif-explicit-2", plugin_options={"vhost_compat_mode": "upstream.ovs-dpdk.v2.9",
                                                                         "hold_for_agent": "false"})
    try:
        restarted.replug(plugged)
        assert interface(host, name)["options"][OPTION] == V28
        assert host.port(name)["state"] == "applied"
        unplugged(restarted, plugged)
    finally:
        restarted.stop()


@pytest.fixture(scope="module")
def held(host: Switch) -> Iterator[OsVif]:
    """A compute with the plugin's defaults: no mode, hold_for_agent = true."""
    osvif = OsVif.on(host, name="osvif-held")
    yield osvif
    osvif.stop()


def test_the_plugin_creates_a_held_port_without_a_path(host: Switch, held: OsVif):
    """What the plugin writes, whatever the agent does with it: a dpdkvhostuserclient
    Interface without vhost-server-path, naming its frontend in external_ids, in the
    transaction that created it (the agent is stopped meanwhile, so what it sees
    first is the plugin's commit as it was)."""
    host.agent.stop(keep_relay=True)
    try:
        plugged = boot(held, host, "server", plugin="ovs_vucompat")
        iface = interface(host, plugged.name)
        assert iface["type"] == "dpdkvhostuserclient"
        assert "vhost-server-path" not in iface["options"] and OPTION not in iface["options"]
        assert iface["external_ids"]["vhost-compat-frontend-path"] == plugged.vif.path
        assert iface["external_ids"]["iface-id"] == plugged.vif.port_id
        assert iface["status"].get("status") != "connected"
        held.unplug(plugged)
        assert interface(host, plugged.name) is None
    finally:
        host.agent.start()


def test_a_held_port_first_connects_through_the_relay(host: Switch, held: OsVif):
    """The held plug form with the agent (needs the agent side of issue 14, item 1):
    QEMU already listens (a re-plug on a live VM, or a slow plug), yet OVS's first and
    only connection goes through the agent's relay; the port gets the host default;
    a re-plug keeps the path the agent set."""
    port_id = str(uuid.uuid4())
    name = vhu_name(port_id)
    frontend = host.frontend(name, socket=host.directory / "vhostuser" / name, server=True, packed=True)
    plugged = boot(held, host, "server", plugin="ovs_vucompat", port_id=port_id)
    ids = host.mirrored(name)
    relay = ids["vhost-compat-relay"]
    eventually(lambda: interface(host, name)["options"].get("vhost-server-path") == relay, timeout=30,
               what="the agent to set the held port's path to its relay", explain=lambda: host.explain(name))
    assert connected_via(host, name)["socket"] == relay
    port = host.port(name)
    assert (port["resolved"], port["state"]) == (LATEST, "applied")
    assert port["rule"] == "host-default"
    # OVS never knew the frontend's own socket
    assert plugged.vif.path not in host.vswitchd.log.read_text()
    held.replug(plugged)  # re-plug: the path stays the agent's
    assert interface(host, name)["options"]["vhost-server-path"] == relay
    assert frontend.running()
    unplugged(held, plugged)


def test_import_vucompat_never_needs_os_vif():
    code = ("import sys, vucompat, vucompat.api, vucompat.cli, vucompat.agent.loop; "
            "assert not [m for m in sys.modules if m.startswith(('os_vif', 'vif_plug_ovs', 'ovsdbapp', 'oslo'))]")
    subprocess.run([sys.executable, "-c", code], check=True)
