"""resolve, verify and the reconcile planner: pure, on the shipped modes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vucompat_testing import EXAMPLES
from vucompat.core import catalog
from vucompat.agent.plan import Enforcement, plan
from vucompat.core.portview import CreatePort, InterfaceView, Mirror, PortView, Redirect, RemovePort, UpdatePort
from vucompat.core.modeset import Host
from vucompat.core.resolve import parse_status, resolve, verify
from vucompat.core.tables import load_modeset, read_capabilities


@pytest.fixture
def host(shipped: Path) -> Host:
    # a host whose backend offers what OVS 2.13 offers
    return Host("h", load_modeset([shipped]), read_capabilities(EXAMPLES / "capabilities-ovs-2.13.toml"))


def test_resolve_specials_and_names(host: Host):
    # an OVS 2.13 backend runs v2.15: it lacks only REPLY_ACK and STATUS, optional protocol features
    assert resolve(None, host).resolved == "upstream.ovs-dpdk.v2.15"
    assert resolve("latest", host).resolved == "upstream.ovs-dpdk.v2.15"
    rec = resolve("recommended", host)
    assert rec.resolved == "upstream.ovs-dpdk.v2.15+recommended" and rec.mode.abi.deprecated_features == []
    passthrough = resolve("passthrough", host)
    assert passthrough.state == "applied" and passthrough.mode is None and passthrough.resolved == "passthrough"
    assert resolve("upstream.ovs-dpdk.v2.8", host).resolved == "upstream.ovs-dpdk.v2.8"


def test_resolve_rejects_with_reasons(host: Host):
    unknown = resolve("upstream.ovs-dpdk.v9.9", host)
    assert unknown.state == "rejected" and unknown.resolved is None
    assert "unknown mode upstream.ovs-dpdk.v9.9; this host can run: upstream.ovs-dpdk.v2.15, upstream.ovs-dpdk.v2.13" \
        in unknown.error
    unrunnable = resolve("upstream.ovs-dpdk.v3.2", host)
    assert unrunnable.state == "rejected"
    assert "lacks VIRTIO_NET_F_CSUM" in unrunnable.error and "STATUS" not in unrunnable.error


STATUS = {"features": "0x0000000d50448000", "num_of_vrings": "4", "vring_0_size": "512", "vring_1_size": "256",
          "vring_2_size": "512", "vring_3_size": "256", "status": "connected"}


def test_parse_status_reads_what_ovs_reports():
    negotiated = parse_status(STATUS)
    assert negotiated.queue_pairs == 2 and negotiated.ring_sizes[1] == 256
    assert "VIRTIO_F_RING_PACKED" in catalog.mask_to_names(negotiated.virtio, "virtio")
    assert parse_status({"status": "disconnected"}) is None
    assert parse_status({"features": "0x0000000000000000"}) is None


def test_verify_names_what_goes_beyond_the_mode(host: Host):
    v28 = host.modeset.expand("upstream.ovs-dpdk.v2.8")
    verdict = verify(v28, parse_status(STATUS))
    assert [e.name for e in verdict.offending] == ["VIRTIO_F_RING_PACKED", "VIRTIO_F_IN_ORDER"]
    assert verify(host.modeset.expand("upstream.ovs-dpdk.v2.13"), parse_status(STATUS)).conformant
    # VHOST_F_LOG_ALL (dirty logging during a migration) never counts
    with_log = dict(STATUS, features=catalog.to_hex(parse_status(STATUS).virtio | 1 << 26))
    assert verify(host.modeset.expand("upstream.ovs-dpdk.v2.13"), parse_status(with_log)).conformant
    # more queue pairs and larger rings than the mode allows
    small = host.modeset.expand("upstream.ovs-dpdk.v2.13")
    big = dict(STATUS, num_of_vrings="600", vring_0_size="4096")
    names = [e.name for e in verify(small, parse_status(big)).offending]
    assert names == ["max_queue_pairs", "max_rx_queue_size (vring 0)"]


def iface(name: str, request: str | None = None, uuid: str = "", **kw) -> InterfaceView:
    return InterfaceView(uuid=uuid or f"00000000-0000-0000-0000-{abs(hash(name)) % 10**12:012d}", name=name,
                         type=kw.pop("type", "dpdkvhostuserclient"), request=request, **kw)


def port_from(create: CreatePort) -> PortView:
    r = create.resolution
    return PortView(create.interface.name, create.interface.uuid, r.requested, r.resolved,
                    str(create.fields["state"]), create.fields["error"], r.mode)


def test_plan_creates_once_then_is_stable(host: Host):
    ifaces = [iface("vhu0", "upstream.ovs-dpdk.v2.8"), iface("vhu1"), iface("eth0", type="dpdk")]
    actions = plan(ifaces, {}, host).actions
    creates = [a for a in actions if isinstance(a, CreatePort)]
    assert [c.interface.name for c in creates] == ["vhu0", "vhu1"]  # only vhost-user interfaces
    assert [a.set["vhost-compat-mode"] for a in actions if isinstance(a, Mirror)] == [
        "upstream.ovs-dpdk.v2.8", "upstream.ovs-dpdk.v2.15"]
    ports = {c.interface.name: port_from(c) for c in creates}
    mirrored = [InterfaceView(i.uuid, i.name, i.type, i.request, {"iface-id": "x", **a.set})
                for i, a in zip(ifaces, [a for a in actions if isinstance(a, Mirror)])]
    assert plan(mirrored, ports, host).actions == []  # nothing more to do: no second resolution


def test_plan_refuses_a_live_edit_and_removes_gone_ports(host: Host):
    first = plan([iface("vhu0", "upstream.ovs-dpdk.v2.8")], {}, host).actions
    port = port_from(first[0])
    edited = plan([iface("vhu0", "latest")], {"vhu0": port}, host).actions
    update = next(a for a in edited if isinstance(a, UpdatePort))
    assert update.changes["state"] == "change-refused" and update.resolution is None
    assert "upstream.ovs-dpdk.v2.8 stays in force" in update.changes["error"]
    assert plan([], {"vhu0": port}, host).actions == [RemovePort("vhu0")]
    # the same name, re-added (a new interface uuid): a new resolution
    readded = plan([iface("vhu0", "latest", uuid="11111111-1111-1111-1111-111111111111")], {"vhu0": port}, host).actions
    assert isinstance(readded[0], RemovePort) and isinstance(readded[1], CreatePort)


def test_plan_resolves_a_rejected_port_again_when_its_request_is_fixed(host: Host):
    rejected = port_from(plan([iface("vhu0", "upstream.ovs-dpdk.v9")], {}, host).registry[0])
    assert rejected.state == "rejected"
    fixed = plan([iface("vhu0", "upstream.ovs-dpdk.v2.9")], {"vhu0": rejected}, host).actions
    update = next(a for a in fixed if isinstance(a, UpdatePort))
    assert update.resolution.resolved == "upstream.ovs-dpdk.v2.9" and update.changes["state"] == "applied"


def test_plan_verifies_what_the_frontend_negotiated(host: Host):
    created = plan([iface("vhu0", "upstream.ovs-dpdk.v2.8")], {}, host).registry[0]
    port = port_from(created)
    actions = plan([iface("vhu0", "upstream.ovs-dpdk.v2.8", status=STATUS)], {"vhu0": port}, host).actions
    update = next(a for a in actions if isinstance(a, UpdatePort))
    assert update.changes["state"] == "nonconformant"
    assert "VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER" in update.changes["error"]
    mirror = next(a for a in actions if isinstance(a, Mirror))
    assert mirror.set["vhost-compat-state"] == "nonconformant"


def test_plan_waits_for_a_port_being_moved_but_not_for_an_operator_type_change(host: Host):
    created = plan([iface("vhu0", "upstream.ovs-dpdk.v2.8")], {}, host).registry[0]
    port = port_from(created)
    flipped = iface("vhu0", "upstream.ovs-dpdk.v2.8", uuid=created.interface.uuid, type="dpdkvhostuser")
    assert plan([flipped], {"vhu0": port}, host, moving=frozenset({created.interface.uuid})).actions == []
    changed = plan([flipped], {"vhu0": port}, host).actions
    assert isinstance(changed[0], RemovePort) and isinstance(changed[1], CreatePort)


def port_after(create: CreatePort) -> PortView:
    """The Port row a CreatePort writes, sockets included."""
    r, f = create.resolution, create.fields
    return PortView(create.interface.name, create.interface.uuid, r.requested, r.resolved, str(f["state"]),
                    f["error"], r.mode, frontend_socket=f.get("frontend_socket"), relay_socket=f.get("relay_socket"),
                    interface_type=create.interface.type)


def test_the_plan_names_the_relays_before_the_interfaces_point_at_them(host: Host, tmp_path: Path):
    enforcement = Enforcement(tmp_path / "relays", tmp_path / "ovs")
    ifaces = [iface("vhu0", "upstream.ovs-dpdk.v2.8", server_path="/vm/vhu0.sock"),
              iface("vhs0", type="dpdkvhostuser"), iface("bad", "upstream.ovs-dpdk.v9", server_path="/vm/bad.sock")]
    first = plan(ifaces, {}, host, enforcement)
    assert [type(a) for a in first.registry] == [CreatePort] * 3
    # every relay the registry will name, but none for a rejected port (nothing to connect to) ...
    assert set(first.relays) == {"vhu0", "vhs0"}
    client, server = first.relays["vhu0"], first.relays["vhs0"]
    assert (client.listen, client.connect, client.backend_connects) == (
        tmp_path / "relays" / "vhu0.sock", Path("/vm/vhu0.sock"), True)
    assert (server.listen, server.connect, server.backend_connects) == (
        tmp_path / "relays" / "vhs0.sock", tmp_path / "ovs" / "vhs0", False)
    assert client.abi == host.modeset.expand("upstream.ovs-dpdk.v2.8").abi
    # ... while both client ports are redirected onto theirs (the rejected one fails closed)
    assert {a.interface: a.path for a in first.interfaces if isinstance(a, Redirect)} == {
        "vhu0": str(tmp_path / "relays" / "vhu0.sock"), "bad": str(tmp_path / "relays" / "bad.sock")}
    # committed, redirected and mirrored: nothing more to do, and the same relays (none restarted)
    ports = {c.interface.name: port_after(c) for c in first.registry}
    done = [replace(i, server_path=ports[i.name].relay_socket if i.server_path else None,
                    external_ids=next(m.set for m in first.interfaces if isinstance(m, Mirror) and m.interface == i.name))
            for i in ifaces]
    again = plan(done, ports, host, enforcement)
    assert again.actions == [] and again.relays == first.relays
    # half-way through a move (type flipped by the agent): nothing planned, its relay kept
    flipped = [replace(done[0], type="dpdkvhostuser"), *done[1:]]
    moving = plan(flipped, ports, host, enforcement, moving=frozenset({done[0].uuid}))
    assert moving.actions == [] and moving.relays == first.relays
    # without enforcement: no relays at all
    assert plan(ifaces, {}, host).relays == {}


def test_the_plan_records_a_relay_violation_and_the_port_becomes_nonconformant(host: Host):
    created = plan([iface("vhu0", "upstream.ovs-dpdk.v2.8")], {}, host).registry[0]
    port = port_from(created)
    reason = "relay closed the connection: SET_FEATURES beyond the mode: VIRTIO_F_RING_PACKED"
    route = plan([created.interface], {"vhu0": port}, host, violations={"vhu0": reason, "gone": "x"})
    assert route.registry[0] == UpdatePort("vhu0", {"violation": reason})  # only for known ports
    update = route.registry[1]
    assert update.changes["state"] == "nonconformant" and update.changes["error"] == reason
    assert next(a for a in route.interfaces if isinstance(a, Mirror)).set["vhost-compat-state"] == "nonconformant"
    # recorded already: not recorded twice
    recorded = replace(port, violation=reason, state="nonconformant", error=reason)
    again = plan([created.interface], {"vhu0": recorded}, host, violations={"vhu0": reason})
    assert not [a for a in again.registry if "violation" in getattr(a, "changes", {})]
