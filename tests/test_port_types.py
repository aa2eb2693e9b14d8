"""Protocol features a mode requires (the rule of catalog.PROTOCOL_NEEDS), and
runnability per port type: from OVS 3.2 a dpdkvhostuserclient port offers CSUM and
a dpdkvhostuser port does not."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from conftest import build_host
from test_cli import run, run_json
from vucompat.core import catalog
from vucompat.core.compare import runnable
from vucompat.cli.hosts import load_host
from vucompat.core.migration import check_migration
from vucompat.core.portview import PortView
from vucompat.core.resolve import resolve
from vucompat.core.tables import load_modeset

def protocol(*names: str) -> int:
    return catalog.names_to_mask([f"VHOST_USER_PROTOCOL_F_{n}" for n in names], "protocol")


def test_a_mode_requires_only_the_protocol_features_its_promises_need(shipped: Path):
    modes = load_modeset([shipped]).modes
    v215 = modes["upstream.ovs-dpdk.v2.15"].abi
    # several queue pairs need MQ; a live migration needs LOG_SHMFD; the rest is optional
    assert v215.required_protocol == protocol("MQ", "LOG_SHMFD")
    assert replace(v215, max_queue_pairs=1).required_protocol == protocol("LOG_SHMFD")
    iommu = replace(v215, virtio=v215.virtio | catalog.lookup("VIRTIO_F_ACCESS_PLATFORM").value)
    assert iommu.required_protocol == protocol("MQ", "LOG_SHMFD", "REPLY_ACK", "BACKEND_REQ")
    # a backend's state in the migration stream (QEMU 10.0+) must be understood on both sides
    state = replace(v215, protocol=v215.protocol | protocol("DEVICE_STATE"))
    assert state.required_protocol == protocol("MQ", "LOG_SHMFD", "DEVICE_STATE")
    # a backend without the optional REPLY_ACK and STATUS runs the mode; the relay will not offer them
    host = replace(v215, protocol=v215.protocol & ~protocol("REPLY_ACK", "STATUS", "HOST_NOTIFIER"))
    verdict = runnable(v215, host)
    assert verdict.runnable and verdict.not_offered == ("VHOST_USER_PROTOCOL_F_REPLY_ACK",
                                                        "VHOST_USER_PROTOCOL_F_HOST_NOTIFIER",
                                                        "VHOST_USER_PROTOCOL_F_STATUS")
    # without LOG_SHMFD (QEMU blocks migration) or MQ (several queue pairs) it cannot
    for missing in ("LOG_SHMFD", "MQ"):
        verdict = runnable(v215, replace(v215, protocol=v215.protocol & ~protocol(missing)))
        assert [g.name for g in verdict.unavailable] == [f"VHOST_USER_PROTOCOL_F_{missing}"]
    assert runnable(replace(v215, max_queue_pairs=1), replace(v215, protocol=v215.protocol & ~protocol("MQ")))


def client_only_csum(root: Path, name: str) -> Path:
    """A host whose client ports offer what OVS 3.2 client ports offer (CSUM) and whose
    server ports do not: declared per type in its capabilities file."""
    v32 = load_modeset([Path(__file__).parent.parent / "compat_tables"]).modes["upstream.ovs-dpdk.v3.2"].abi
    server = v32.virtio & ~catalog.lookup("VIRTIO_NET_F_CSUM").value

    def offer(virtio: int) -> str:
        return (f"virtio_features = {catalog.mask_to_names(virtio, 'virtio')}\n"
                f"protocol_features = {v32.protocol_features}\n"
                "max_queue_pairs = 128\nmax_rx_queue_size = 1024\nmax_tx_queue_size = 1024\n").replace("'", '"')

    host = build_host(root, name)
    (host / "capabilities.toml").write_text(offer(v32.virtio) + "\n[port_types.dpdkvhostuser]\n" + offer(server))
    return host


def test_runnability_resolution_and_migration_per_port_type(tmp_path: Path):
    host = load_host(client_only_csum(tmp_path, "ovs-3.2"))
    caps = host.capabilities
    assert caps is not None and caps.types_differ
    assert caps.offer("dpdkvhostuserclient").virtio & 1 and not caps.offer("dpdkvhostuser").virtio & 1
    assert not caps.abi.virtio & 1  # a port of unknown type: what every type offers
    # the agent resolves per type: a server port cannot run v3.2, a client port can
    assert resolve("upstream.ovs-dpdk.v3.2", host, "dpdkvhostuserclient").state == "applied"
    rejected = resolve("upstream.ovs-dpdk.v3.2", host, "dpdkvhostuser")
    assert rejected.state == "rejected"
    assert rejected.error == ("upstream.ovs-dpdk.v3.2 is not runnable on this host's dpdkvhostuser ports: "
                              "they lack VIRTIO_NET_F_CSUM")
    assert resolve(None, host, "dpdkvhostuser").resolved == "upstream.ovs-dpdk.v2.15"
    assert resolve(None, host, "dpdkvhostuserclient").resolved == "upstream.ovs-dpdk.v3.2"
    # list says which type runs a mode, where they differ
    code, out, _ = run("list", "--host", str(tmp_path / "ovs-3.2"))
    line = next(l for l in out.splitlines() if l.startswith("upstream.ovs-dpdk.v3.2 "))
    assert "dpdkvhostuserclient only (dpdkvhostuser missing VIRTIO_NET_F_CSUM)" in line
    code, data = run_json("list", "--host", str(tmp_path / "ovs-3.2"))
    v32 = next(m for m in data if m["name"] == "upstream.ovs-dpdk.v3.2")
    assert not v32["runnable"] and v32["runnable_by_type"]["dpdkvhostuserclient"]["runnable"]
    # a client port in v3.2 may move to a client port of that host, not to a server port
    source = load_host(client_only_csum(tmp_path, "source"))
    port = PortView(name="vhu0", interface_uuid="u", requested="upstream.ovs-dpdk.v3.2",
                    resolved="upstream.ovs-dpdk.v3.2", state="applied", error=None,
                    mode=host.modeset.modes["upstream.ovs-dpdk.v3.2"], interface_type="dpdkvhostuserclient")
    assert check_migration(port, source, host).allowed
    refused = check_migration(port, source, host, dest_port_type="dpdkvhostuser")
    assert not refused.allowed and [r.name for r in refused.reasons] == ["VIRTIO_NET_F_CSUM"]
    assert "ovs-3.2 (dpdkvhostuser ports) cannot run upstream.ovs-dpdk.v3.2" in refused.sentence


def test_capabilities_file_rejects_a_bad_port_type(tmp_path: Path):
    host = client_only_csum(tmp_path, "h")
    caps = host / "capabilities.toml"
    caps.write_text(caps.read_text().replace("[port_types.dpdkvhostuser]", "[port_types.vhostuser]"))
    code, _, err = run("list", "--host", str(host))
    assert code == 2 and "port_types.vhostuser" in err and "unknown key" in err


def test_the_agent_plan_rejects_a_port_whose_type_cannot_run_its_mode(tmp_path: Path):
    from vucompat.agent.plan import plan
    from vucompat.core.portview import CreatePort, InterfaceView

    host = load_host(client_only_csum(tmp_path, "ovs-3.2"))
    ifaces = [InterfaceView(uuid=f"00000000-0000-0000-0000-00000000000{i}", name=name, type=port_type,
                            request="upstream.ovs-dpdk.v3.2")
              for i, (name, port_type) in enumerate([("vhc0", "dpdkvhostuserclient"), ("vhs0", "dpdkvhostuser")])]
    creates = {a.interface.name: a for a in plan(ifaces, {}, host).registry if isinstance(a, CreatePort)}
    assert creates["vhc0"].fields["state"] == "applied"
    assert creates["vhs0"].fields["state"] == "rejected"
    assert "dpdkvhostuser ports: they lack VIRTIO_NET_F_CSUM" in creates["vhs0"].fields["error"]
