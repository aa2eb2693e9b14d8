"""The port agent on real parts (vucompat_testing.switch): ports added with ovs-vsctl as
a user would, dpdk-testpmd as the frontend; the agent records and verifies
(enforcement off here: tests/test_relay.py covers the relay); and the probe."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vucompat_testing.ovsdb_server import select
from vucompat_testing.switch import ENV, LATEST, VUCOMPAT, Switch, eventually, negotiated, start_switch
from vucompat.core import catalog
from vucompat.core.tables import read_table, shipped_tables_dir

#: the opt-in distribution lineages (compat_tables/distros/README.md)
DISTROS = shipped_tables_dir() / "distros"
#: ovsdb-server restarts in the restart test, and the seconds from each restart within which
#: the agent must have resolved a port added right after it
RESTARTS, RESTART_BUDGET = 5, 2.0


@pytest.fixture(scope="module")
def switch():
    """A switch whose agent records and verifies only (enforcement off)."""
    yield from start_switch(enforce=False)


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
    switch.unplug("named", "latest", "plain", "server")
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
    assert "unknown mode upstream.ovs-dpdk.v2.31; this host can run: upstream.ovs-dpdk.v2.15" in \
        typo["vhost-compat-error"]
    toonew = switch.mirrored("toonew")
    assert toonew["vhost-compat-state"] == "rejected"
    assert toonew["vhost-compat-error"].endswith("its backend lacks VIRTIO_NET_F_CSUM")
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
    switch.unplug("typo", "toonew")


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
    switch.unplug("edited")


def test_frontends_are_verified_nonconformant_and_conformant(switch: Switch):
    vs = switch.vswitchd
    packed = switch.frontend("packed", queues=2, queue_size=512, packed=True)
    fine = switch.frontend("fine", queues=2, queue_size=512)
    vs.add_vhost_port("packed", packed.socket, compat="upstream.ovs-dpdk.v2.8")  # 2.8 has no RING_PACKED
    vs.add_vhost_port("fine", fine.socket, compat="latest")
    bad = eventually(lambda: switch.port("packed")["state"] == "nonconformant" and switch.port("packed"),
                     timeout=30, what="the packed-ring frontend to be caught", explain=lambda: switch.explain("packed"))
    assert {o["name"] for o in bad["offending"]} >= {"VIRTIO_F_RING_PACKED"}
    assert "VIRTIO_F_RING_PACKED" in bad["negotiated_features"]
    assert "VIRTIO_F_RING_PACKED" in switch.external_ids("packed")["vhost-compat-error"]
    assert bad["resolved"] == "upstream.ovs-dpdk.v2.8"  # caught, not changed
    assert "ERROR vucompat.agent: packed: NONCONFORMANT: negotiated beyond the mode" in switch.agent.text()
    good = eventually(lambda: switch.port("fine")["verification"] and switch.port("fine"), timeout=30,
                      what="the conformant frontend to be verified")
    assert good["state"] == "applied" and good["verification"].startswith("conformant")
    assert good["negotiated"]["num_of_vrings"] == "4" and good["offending"] == []
    switch.unplug("packed", "fine")


def _port_uuids(switch: Switch, names: list[str]) -> dict[str, str]:
    rows = select(switch.server.unix_remote, "Port", ["_uuid", "interface_name"])
    return {r["interface_name"]: r["_uuid"][1] for r in rows if r["interface_name"] in names}


def test_agent_killed_and_restarted_while_ports_are_added(switch: Switch):
    vs = switch.vswitchd
    names = [f"churn{i}" for i in range(12)]
    for i, name in enumerate(names):
        vs.add_vhost_port(name, switch.directory / f"{name}.sock", compat="latest" if i % 2 else None)
        if i in (3, 8):
            switch.agent.kill(signal.SIGKILL)  # a crash, between two add-ports
            switch.agent.stop(keep_relay=True)
            switch.agent.start()
    eventually(lambda: len(_port_uuids(switch, names)) == len(names), timeout=30, what="every port resolved")
    first = _port_uuids(switch, names)
    switch.agent.stop(keep_relay=True)
    switch.agent.start()  # a clean restart reconciles and changes nothing
    # a port added after the restart, once resolved, proves the new agent has reconciled
    vs.add_vhost_port("sentinel", switch.directory / "sentinel.sock", compat="latest")
    switch.mirrored("sentinel")
    assert _port_uuids(switch, names) == first
    log = switch.agent.text()
    counts = {name: log.count(f"{name}: requested ") for name in names}
    # each port resolved once: never twice; a SIGKILL may land between a commit and its log
    # line, so each of the two kills may have hidden one line, no more
    assert max(counts.values()) <= 1, counts
    assert sum(counts.values()) >= len(names) - 2, counts
    assert log.count("sentinel: requested ") == 1
    for name in names:
        assert switch.external_ids(name)["vhost-compat-mode"] == LATEST
    switch.unplug(*names, "sentinel")


def test_ovsdb_server_restarted_under_the_agent(switch: Switch):
    """After each of several ovsdb-server restarts, a port added next is resolved as
    promptly as before: its Port row within RESTART_BUDGET seconds of the restart. The
    ovs IDL's own reconnect backoff made it 1, 2, 4, 8 and 8 s after five restarts
    (issue 15: the agent's idle unix connection never counted as stable, so every
    restart doubled the wait); the port resolved before stays as it was."""
    vs = switch.vswitchd
    vs.add_vhost_port("before", switch.directory / "before.sock", compat="upstream.ovs-dpdk.v2.6")
    switch.mirrored("before")
    uuid_before = _port_uuids(switch, ["before"])
    names, delays = [f"after{i}" for i in range(RESTARTS)], []
    for name in names:
        switch.server.stop()
        switch.server.start()
        restarted = time.monotonic()
        # --no-wait: an add-port that waits for ovs-vswitchd waits for *its* reconnect backoff
        vs.vsctl("add-port", "br0", name, "--", "set", "Interface", name, "type=dpdkvhostuserclient",
                 f"options:vhost-server-path={switch.directory / name}.sock",
                 "options:vhost-compat=upstream.ovs-dpdk.v2.8", wait=False)
        eventually(lambda: _port_uuids(switch, [name]), timeout=30, what=f"the agent to resolve {name}")
        delays.append(round(time.monotonic() - restarted, 2))
    assert max(delays) < RESTART_BUDGET, f"seconds from each restart to the new port's Port row: {delays}"
    for name in names:
        assert switch.mirrored(name)["vhost-compat-mode"] == "upstream.ovs-dpdk.v2.8"
    assert _port_uuids(switch, ["before"]) == uuid_before  # untouched, not resolved twice
    log = switch.agent.text()
    assert log.count("before: requested ") == 1 and all(log.count(f"{n}: requested ") == 1 for n in names)
    switch.unplug("before", *names)


def test_a_concurrent_registry_writer_makes_the_agent_read_and_plan_again(ovsdb_servers, tmp_path: Path, caplog):
    """Someone else writes a Port row for a new port between the agent's read and its
    registry commit: the server refuses the commit (one Port per interface name), the
    agent reads and plans again, and the port ends up the agent's: resolved once,
    mirrored, its relay listening before the Interface was pointed at it."""
    import logging
    import uuid

    from vucompat.agent.loop import Agent
    from vucompat.ovsdb import rpc

    server = ovsdb_servers("conflict")
    remote = server.unix_remote
    subprocess.run([VUCOMPAT, "load", "--db", remote], check=True, capture_output=True, env=ENV)
    for args in (["init"], ["add-br", "br0"], ["add-port", "br0", "rival", "--", "set", "Interface", "rival",
                                                "type=dpdkvhostuserclient", f"options:vhost-server-path={tmp_path}/vm.sock",
                                                "options:vhost-compat=upstream.ovs-dpdk.v2.8"]):
        subprocess.run(["ovs-vsctl", f"--db={remote}", "--no-wait", *args], check=True)
    agent = Agent(remote, relay_dir=tmp_path / "relays", ovs_rundir=tmp_path)
    agent._connect()
    try:
        assert agent.ovs is not None
        eventually(lambda: agent.ovs.refresh() or [r for r in agent.ovs.rows("Interface") if r.name == "rival"],
                   what="the agent to see the interface")
        # written after the agent's registry replica last ran: its first plan cannot know
        rpc.transact(remote, "VuCompat", [{"op": "insert", "table": "Port", "row": {
            "interface_name": "rival", "interface_uuid": ["uuid", str(uuid.uuid4())], "requested": "latest",
            "state": "rejected", "interface_type": "dpdkvhostuserclient"}}])
        with caplog.at_level(logging.DEBUG, logger="vucompat.agent"):
            agent.reconcile()
        assert "reading and planning again" in caplog.text
        agent.finish_due_redirects()  # (no ovs-vswitchd here: the move onto the relay is due at once)
        (iface,) = [i for i in select(remote, "Interface", ["_uuid", "name", "external_ids", "options"],
                                      database="Open_vSwitch") if i["name"] == "rival"]
        (port,) = select(remote, "Port")
        assert port["interface_uuid"] == iface["_uuid"] and port["state"] == "applied"
        ids, options = dict(iface["external_ids"][1]), dict(iface["options"][1])
        assert ids["vhost-compat-mode"] == "upstream.ovs-dpdk.v2.8" and ids["vhost-compat-state"] == "applied"
        assert options["vhost-server-path"] == str(tmp_path / "relays" / "rival.sock")
        assert (tmp_path / "relays" / "rival.sock").is_socket()
        assert caplog.text.count("rival: requested upstream.ovs-dpdk.v2.8 -> upstream.ovs-dpdk.v2.8 (explicit)") == 1
    finally:
        if agent.relays is not None:
            agent.relays.stop()
        agent.close()


def test_check_migration_with_what_a_real_guest_negotiated(switch: Switch, ovsdb_servers, tmp_path: Path, shipped: Path):
    """The facts level on real parts: a testpmd guest on a port in the switch's newest
    mode; a destination whose tables stop at 2.13 does not define that mode (the
    contract fails), but offers every feature the guest negotiated."""
    from vucompat_testing import EXAMPLES
    from vucompat_testing.tablegen import table_text_until
    from vucompat.api import Client

    old = ovsdb_servers("mig-dest", tcp=True)
    tables = tmp_path / "old"
    tables.mkdir()
    (tables / "upstream.ovs-dpdk.toml").write_text(
        table_text_until((shipped / "upstream.ovs-dpdk.toml").read_text(), "2.13"))
    subprocess.run([VUCOMPAT, "load", "--db", old.unix_remote, "--host-name", "dest-old", "--tables", str(tables),
                    "--capabilities", str(EXAMPLES / "capabilities-ovs-2.13.toml")], check=True, capture_output=True,
                   env=ENV)
    frontend = switch.frontend("fe-mig", queues=1, queue_size=256)
    switch.vswitchd.add_vhost_port("mig", frontend.socket, compat="latest")
    negotiated(switch, "mig")
    eventually(lambda: switch.port("mig")["negotiated_features"], what="the negotiated features recorded")
    with Client(timeout=5) as client:
        refused = client.check_migration("mig", switch.server.unix_remote, old.tcp_remote)
        assert not refused.allowed and refused.would_work_outside_contract
        assert f"dest-old does not define {LATEST}" in refused.sentence
        accepted = client.check_migration("mig", switch.server.unix_remote, old.tcp_remote, allow_outside_contract=True)
        assert accepted.allowed and accepted.level == "outside-contract"
    switch.unplug("mig")


def test_probe_and_dump_against_the_real_backend(switch: Switch, tmp_path: Path):
    remote = switch.server.unix_remote
    done = subprocess.run([VUCOMPAT, "probe", "--db", remote, "--ovs-rundir", str(switch.directory), "--format",
                           "json"], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 0, done.stderr
    probed = json.loads(done.stdout)
    # what Debian bookworm's OVS 3.1 + DPDK 22.11 offers (../shared/reference, measured), on both
    # port types (a short-lived client port and a short-lived server port were asked)
    assert probed["virtio_mask"] == "0x0000000d7c66a7ca" and probed["protocol_mask"] == "0x0000000000010cbf"
    assert {t: (o["virtio_mask"], o["protocol_mask"]) for t, o in probed["by_type"].items()} == {
        "dpdkvhostuser": ("0x0000000d7c66a7ca", "0x0000000000010cbf"),
        "dpdkvhostuserclient": ("0x0000000d7c66a7ca", "0x0000000000010cbf")}
    assert sorted(dict(select(remote, "Host")[0]["type_offers"][1])) == ["dpdkvhostuser", "dpdkvhostuserclient"]
    # such a host (with Debian's measured lineage, as its packaging would install it) runs the modes
    # its offer covers and no others
    loaded = subprocess.run([VUCOMPAT, "load", "--db", remote, "--tables", str(DISTROS)], capture_output=True,
                            text=True, env=ENV)
    assert loaded.returncode == 0, loaded.stderr
    modes = [m for m in json.loads(subprocess.run([VUCOMPAT, "list", "--host", remote, "--format", "json"],
                                                  capture_output=True, text=True, env=ENV).stdout)
             if m["lineage"] in ("upstream.ovs-dpdk", "debian12.ovs-dpdk", "fc26.ovs-dpdk")]  # the shipped ones
    assert {m["name"] for m in modes if m["runnable"]} == {
        "debian12.ovs-dpdk.v3.1.0", "upstream.ovs-dpdk.v2.15", "upstream.ovs-dpdk.v2.13", "upstream.ovs-dpdk.v2.9",
        "upstream.ovs-dpdk.v2.8", "fc26.ovs-dpdk.v2.8", "fc26.ovs-dpdk.v2.7"}
    unavailable = {m["name"]: [g["name"] for g in m["unavailable"]] for m in modes if not m["runnable"]}
    assert unavailable == {
        "upstream.ovs-dpdk.v3.2": ["VIRTIO_NET_F_CSUM"],
        "debian12.ovs-dpdk.v3.1.0-tso": ["VIRTIO_NET_F_CSUM", "VIRTIO_NET_F_HOST_TSO4", "VIRTIO_NET_F_HOST_TSO6"],
        "upstream.ovs-dpdk.v2.11": ["VIRTIO_NET_F_HOST_UFO"], "upstream.ovs-dpdk.v2.6": ["max_queue_pairs"]}
    # a real frontend sees the same offer (less what virtio_user itself does not support)
    frontend = switch.frontend("fe-probe-check", eal_args=("--log-level=pmd.net.virtio.*:debug",))
    switch.vswitchd.add_vhost_port("probe-check", frontend.socket, compat="passthrough")
    negotiated(switch, "probe-check")
    line = next(l for l in frontend.log.read_text().splitlines() if "host_features before negotiate" in l)
    seen_by_frontend = int(line.split("=")[-1].strip(), 16)
    # virtio_user emulates some device bits itself (link STATUS, the MAC, the control queue)
    emulated = catalog.names_to_mask(["VIRTIO_NET_F_STATUS", "VIRTIO_NET_F_MAC", "VIRTIO_NET_F_CTRL_VQ"], "virtio")
    assert seen_by_frontend & ~emulated & ~catalog.parse_hex(probed["virtio_mask"]) == 0
    assert seen_by_frontend & catalog.parse_hex(probed["virtio_mask"])  # and it did see the offer
    host = select(remote, "Host")[0]
    assert host["capabilities_source"] == "probed" and host["dpdk_version"].startswith("DPDK 22.11")
    listing = subprocess.run([VUCOMPAT, "list", "--host", remote], capture_output=True, text=True, env=ENV).stdout
    v32 = next(line for line in listing.splitlines() if line.startswith("upstream.ovs-dpdk.v3.2 "))
    assert "2023-08-17" in v32 and "no: missing VIRTIO_NET_F_CSUM" in v32
    # the entry `dump` prints is a valid first version of a lineage, with the probed features
    entry = subprocess.run([VUCOMPAT, "dump", "--db", remote, "--version", "3.1"], capture_output=True, text=True,
                           env=ENV, timeout=60).stdout
    (tmp_path / "bookworm.ovs-dpdk.toml").write_text('lineage = "bookworm.ovs-dpdk"\nsummary = "dumped"\n\n' + entry)
    mode = read_table(tmp_path / "bookworm.ovs-dpdk.toml").modes[0]
    assert catalog.to_hex(mode.abi.virtio) == probed["virtio_mask"] and mode.abi.max_queue_pairs == 128
    switch.unplug("probe-check")


def test_userspace_tso_changes_the_offer_and_the_agent_re_probes():
    """userspace TSO changes what the backend offers: a re-probe sees it. OVS 3.1 does not
    take it back without a restart, so this test has a switch of its own."""
    def probe(remote: str, directory: Path) -> dict:
        done = subprocess.run([VUCOMPAT, "probe", "--db", remote, "--ovs-rundir", str(directory), "--format", "json"],
                              capture_output=True, text=True, env=ENV, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # (in a network namespace of its own: the module's switch may be running; two userspace datapaths clash)
    for switch in start_switch(enforce=False, name="tso-probe", tables=(DISTROS,), own_netns=True):
        remote = switch.remote
        probed = probe(remote, switch.directory)
        assert "VIRTIO_NET_F_HOST_TSO4" not in probed["virtio_features"]
        switch.vswitchd.vsctl("set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true")
        again = probe(remote, switch.directory)
        # with TSO on, Debian's 3.1 port types differ (measured, compat_tables/evidence): a client port
        # gains CSUM and HOST_TSO4/6, a server port gains only CSUM (DPDK disables its segmentation
        # offloads: linear buffers without external buffers)
        client, server = again["by_type"]["dpdkvhostuserclient"], again["by_type"]["dpdkvhostuser"]
        assert {"VIRTIO_NET_F_CSUM", "VIRTIO_NET_F_HOST_TSO4"} <= set(client["virtio_features"])
        assert "VIRTIO_NET_F_CSUM" in server["virtio_features"]
        assert "VIRTIO_NET_F_HOST_TSO4" not in server["virtio_features"]
        assert "VIRTIO_NET_F_HOST_TSO4" not in again["virtio_features"]  # what every type offers
        listing = subprocess.run([VUCOMPAT, "list", "--host", remote], capture_output=True, text=True,
                                 env=ENV).stdout
        tso = next(line for line in listing.splitlines() if line.startswith("debian12.ovs-dpdk.v3.1.0-tso "))
        assert "dpdkvhostuserclient only (dpdkvhostuser missing VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6)" \
            in tso, listing
        # the agent re-probes by itself when the setting changes, and again when it is removed
        eventually(lambda: dict(select(remote, "Host")[0]["other_config"][1]).get("probe-userspace-tso-enable")
                   == "true", timeout=30, what="the agent to re-probe")
        switch.vswitchd.vsctl("remove", "Open_vSwitch", ".", "other_config", "userspace-tso-enable")
        eventually(lambda: dict(select(remote, "Host")[0]["other_config"][1]).get("probe-userspace-tso-enable") == "",
                   timeout=30, what="the agent to re-probe without TSO")
