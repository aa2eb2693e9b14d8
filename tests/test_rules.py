"""Which rule decides a new port's request (core.rules), and how the planner uses it:
pure, on the shipped modes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vucompat_testing import EXAMPLES
from vucompat.agent.plan import Enforcement, plan, undecided
from vucompat.agent.sources import fleet_source
from vucompat.core.mode import CLIENT_TYPE, SERVER_TYPE
from vucompat.core.modeset import Host
from vucompat.core.portview import CreatePort, InterfaceView, PortView, Redirect, UpdatePort
from vucompat.core.rules import DefaultPolicy, SourceMode, SourceUnknown, check_policy, decide
from vucompat.core.tables import load_modeset, read_capabilities

V28, V29, V213, V215 = (f"upstream.ovs-dpdk.v{v}" for v in ("2.8", "2.9", "2.13", "2.15"))
ENFORCE = Enforcement(Path("/run/relays"), Path("/run/ovs/vhost"))


@pytest.fixture
def host(shipped: Path) -> Host:
    # a backend that offers what OVS 2.13 offers: it runs up to v2.15, not v3.2
    return Host("dest", load_modeset([shipped]), read_capabilities(EXAMPLES / "capabilities-ovs-2.13.toml"))


def iface(name: str = "vhu1", request: str | None = None, iface_id: str | None = "n-1", server_path: str | None = None,
          port_type: str = CLIENT_TYPE, **ids: str) -> InterfaceView:
    external_ids = {**({"iface-id": iface_id} if iface_id else {}), **{k.replace("_", "-"): v for k, v in ids.items()}}
    return InterfaceView(f"u-{name}", name, port_type, request, external_ids, {}, server_path)


def test_the_explicit_option_wins_over_the_source_and_the_policy(host: Host):
    decided = decide(iface(request=V28), host, SourceMode(V29, None, "host a"), DefaultPolicy(V213, V213))
    assert (decided.requested, decided.resolved, decided.rule) == (V28, V28, "explicit")


def test_a_port_follows_its_iface_id_mode_on_the_source(host: Host):
    digest = host.modeset.expand(V29).digest
    decided = decide(iface(), host, SourceMode(V29, digest, "host compute-a, in the fleet"))
    assert (decided.requested, decided.resolved, decided.state, decided.rule) == (V29, V29, "applied", "follows-source")
    assert decided.rule_detail == f"iface-id n-1: {V29} on host compute-a, in the fleet"


def test_the_source_s_mode_fails_closed(host: Host):
    unrunnable = decide(iface(), host, SourceMode("upstream.ovs-dpdk.v3.2", None, "host b"))
    assert unrunnable.state == "rejected" and unrunnable.rule == "follows-source"
    assert unrunnable.error.startswith("the port follows iface-id n-1's mode on host b, upstream.ovs-dpdk.v3.2: ")
    assert "lacks VIRTIO_NET_F_CSUM" in unrunnable.error
    other = decide(iface(), host, SourceMode(V29, "sha256:" + "0" * 64, "host b"))
    assert other.state == "rejected" and "define it differently" in other.error
    unknown = decide(iface(), host, SourceUnknown("the fleet did not answer: timeout"))
    assert unknown.state == "rejected" and "fail closed" in unknown.error and "timeout" in unknown.error


def test_the_host_default_policy_decides_the_rest(host: Host):
    assert decide(iface(iface_id=None), host).resolved == V215  # the default default: latest
    pinned = decide(iface(), host, None, DefaultPolicy(V213, V213))
    assert (pinned.requested, pinned.resolved, pinned.rule, pinned.rule_detail) == \
        (V213, V213, "host-default", f"policy {V213}")
    pool = decide(iface(), host, None, DefaultPolicy("pool", V29, detail="the newest of pool a"))
    assert pool.resolved == V29 and pool.rule_detail == "policy pool: the newest of pool a"
    blind = decide(iface(), host, None, DefaultPolicy("pool", None, "the fleet did not answer"))
    assert blind.state == "rejected" and "the fleet did not answer" in blind.error


def test_a_policy_must_be_one_the_host_can_follow(host: Host):
    for fine in ("latest", "recommended", "passthrough", "pool", V213):
        assert check_policy(fine, host) is None
    assert "unknown mode" in check_policy("upstream.ovs-dpdk.v9.9", host)
    assert "not runnable" in check_policy("upstream.ovs-dpdk.v3.2", host)


def test_the_fleet_s_ports_of_an_iface_id_name_one_source(host: Host):
    v29 = host.modeset.expand(V29)
    port = PortView("vhu1", "", V29, V29, "applied", None, v29)
    assert fleet_source([("a", port)]) == SourceMode(V29, v29.digest, "host a, in the fleet")
    assert fleet_source([("a", replace(port, state="rejected", mode=None, resolved=None))]) is None
    v213 = host.modeset.expand(V213)
    split = fleet_source([("a", port), ("b", replace(port, mode=v213, resolved=V213))])
    assert isinstance(split, SourceUnknown) and f"a {V29}; b {V213}" in split.reason


def test_the_plan_records_the_rule_and_uses_the_source(host: Host):
    interfaces = [iface("vhu1", iface_id="n-1"), iface("vhu2", iface_id="n-2"), iface("vhu3", request=V28)]
    assert [i.name for i in undecided(interfaces, {})] == ["vhu1", "vhu2"]
    route = plan(interfaces, {}, host, sources={"n-1": SourceMode(V29, None, "host a")},
                 default=DefaultPolicy(V213, V213))
    created = {a.interface.name: a.resolution for a in route.registry if isinstance(a, CreatePort)}
    assert {n: (r.resolved, r.rule) for n, r in created.items()} == {
        "vhu1": (V29, "follows-source"), "vhu2": (V213, "host-default"), "vhu3": (V28, "explicit")}


def test_a_held_port_gets_its_path_once_without_a_flip(host: Host):
    held = iface("vhu1", vhost_compat_frontend_path="/run/qemu/vhu1.sock")
    route = plan([held], {}, host, ENFORCE)
    (redirect,) = [a for a in route.interfaces if isinstance(a, Redirect)]
    assert redirect.in_place and redirect.path == "/run/relays/vhu1.sock"
    assert route.relays["vhu1"].connect == Path("/run/qemu/vhu1.sock") and route.relays["vhu1"].backend_connects
    # enforcement off: released straight to the frontend
    (released,) = [a for a in plan([held], {}, host).interfaces if isinstance(a, Redirect)]
    assert released.in_place and released.path == "/run/qemu/vhu1.sock"
    # rejected: held for good (OVS never connects to anything)
    bad = plan([iface("vhu1", request="upstream.ovs-dpdk.v9.9", vhost_compat_frontend_path="/q.sock")], {}, host)
    assert not [a for a in bad.interfaces if isinstance(a, Redirect)]
    # a port plugged the plain way is still moved with the flip
    (flip,) = [a for a in plan([iface("vhu1", server_path="/q.sock")], {}, host, ENFORCE).interfaces
               if isinstance(a, Redirect)]
    assert not flip.in_place
    # re-plugged (the path rewritten) while ovs-vswitchd is still connected through the relay: in place
    replugged = replace(iface("vhu1", server_path="/q.sock"), status={"socket": "/run/relays/vhu1.sock"})
    (back,) = [a for a in plan([replugged], {}, host, ENFORCE).interfaces if isinstance(a, Redirect)]
    assert back.in_place and back.path == "/run/relays/vhu1.sock"


def _port(host: Host, resolution, name: str = "vhu1") -> PortView:
    return PortView(name, f"u-{name}", resolution.requested, resolution.resolved, resolution.state, resolution.error,
                    resolution.mode, interface_type=CLIENT_TYPE, rule=resolution.rule,
                    rule_detail=resolution.rule_detail, iface_id="n-1")


def test_a_port_rejected_for_its_source_is_decided_again_when_the_source_answers(host: Host):
    blind = decide(iface(), host, SourceUnknown("the fleet did not answer"))
    ports = {"vhu1": _port(host, blind)}
    assert [i.name for i in undecided([iface()], ports)] == ["vhu1"]
    still = plan([iface()], ports, host, sources={"n-1": SourceUnknown("the fleet did not answer")})
    assert not [a for a in still.registry if isinstance(a, UpdatePort) and a.resolution]  # nothing new: no churn
    route = plan([iface()], ports, host, sources={"n-1": SourceMode(V29, None, "host a")})
    (update,) = [a for a in route.registry if isinstance(a, UpdatePort)]
    assert update.resolution.resolved == V29 and update.changes["state"] == "applied"


def test_a_live_port_keeps_its_mode_whatever_rule_decided_it(host: Host):
    followed = _port(host, decide(iface(), host, SourceMode(V29, None, "host a")))
    assert not undecided([iface()], {"vhu1": followed})
    # nothing to change: no option, as when it was decided
    assert not [a for a in plan([iface()], {"vhu1": followed}, host).registry if isinstance(a, UpdatePort)]
    # the option set to the mode it already has: not a change
    assert not [a for a in plan([iface(request=V29)], {"vhu1": followed}, host).registry if isinstance(a, UpdatePort)]
    (refused,) = plan([iface(request=V213)], {"vhu1": followed}, host).registry
    assert refused.changes["state"] == "change-refused"
    assert f"options:vhost-compat changed from unset to {V213} on a live port" in refused.changes["error"]


def test_server_ports_follow_too(host: Host):
    route = plan([iface("vhu1", port_type=SERVER_TYPE)], {}, host, ENFORCE, sources={"n-1": SourceMode(V29, None, "a")})
    (created,) = [a for a in route.registry if isinstance(a, CreatePort)]
    assert created.resolution.resolved == V29 and created.fields["relay_socket"] == "/run/relays/vhu1.sock"
