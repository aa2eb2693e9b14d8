"""compare, runnable, baseline and negotiate on real shipped modes and hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import capabilities_toml
from vucompat.core import catalog
from vucompat.core.compare import baseline, compare, runnable
from vucompat.cli.hosts import load_host
from vucompat.core.mode import Abi
from vucompat.core.negotiate import negotiate
from vucompat.core.tables import load_modeset


@pytest.fixture
def registry(shipped: Path):
    return load_modeset([shipped])


def abi(virtio: list[str], protocol: list[str] = (), qp: int = 8, rx: int = 256, tx: int = 256) -> Abi:
    return Abi(catalog.names_to_mask(virtio, "virtio"), catalog.names_to_mask(protocol, "protocol"), qp, rx, tx)


def test_compare_names_the_responsible_features(registry):
    v32, v211 = registry.expand("upstream.ovs-dpdk.v3.2"), registry.expand("upstream.ovs-dpdk.v2.11")
    result = compare(v32.abi, v211.abi)
    assert result.result == "incompatible"
    assert {(d.name, d.a, d.b) for d in result.responsible} == {
        ("VIRTIO_NET_F_CSUM", True, False), ("VIRTIO_NET_F_HOST_UFO", False, True),
        ("VHOST_USER_PROTOCOL_F_STATUS", True, False), ("VHOST_USER_PROTOCOL_F_REPLY_ACK", True, False)}
    assert compare(v211.abi, v32.abi).result == "incompatible"
    assert compare(registry.expand("upstream.ovs-dpdk.v2.15").abi, v32.abi).result == "subset"
    assert compare(v32.abi, v32.abi).result == "identical"


def test_compare_limits_count_as_offering_more():
    small, large = abi(["VIRTIO_F_VERSION_1"], rx=256), abi(["VIRTIO_F_VERSION_1"], rx=1024)
    result = compare(large, small)
    assert result.result == "superset"
    assert [(d.kind, d.name, d.a, d.b) for d in result.responsible] == [("limit", "max_rx_queue_size", 1024, 256)]


def test_log_all_is_never_a_difference():
    with_log = abi(["VIRTIO_F_VERSION_1", "VHOST_F_LOG_ALL"])
    without = abi(["VIRTIO_F_VERSION_1"])
    assert compare(with_log, without).result == "identical"
    assert with_log.digest == without.digest
    assert runnable(with_log, without).runnable


def test_runnable_lists_what_is_unavailable(registry):
    host = registry.expand("upstream.ovs-dpdk.v2.13").abi
    verdict = runnable(registry.expand("upstream.ovs-dpdk.v3.2").abi, host)
    assert not verdict.runnable
    # only the virtio feature counts: REPLY_ACK and STATUS are optional protocol features
    assert [(g.kind, g.name) for g in verdict.unavailable] == [("virtio_feature", "VIRTIO_NET_F_CSUM")]
    assert verdict.not_offered == ("VHOST_USER_PROTOCOL_F_REPLY_ACK", "VHOST_USER_PROTOCOL_F_STATUS")
    small = abi(["VIRTIO_F_VERSION_1"], qp=1)
    verdict = runnable(abi(["VIRTIO_F_VERSION_1"], qp=4), small)
    assert [(g.name, g.required, g.offered) for g in verdict.unavailable] == [("max_queue_pairs", 4, 1)]
    assert runnable(host, None).runnable  # no capabilities: offers everything


def test_baseline_is_the_greatest_common_without_deprecated(registry):
    v211, v32 = registry.expand("upstream.ovs-dpdk.v2.11"), registry.expand("upstream.ovs-dpdk.v3.2")
    result = baseline([v211.abi, v32.abi], [v211.name, v32.name])
    names = result.abi.virtio_features
    assert "VIRTIO_NET_F_HOST_UFO" not in names and "VIRTIO_NET_F_CSUM" not in names
    assert "VIRTIO_NET_F_GUEST_UFO" not in names and "VIRTIO_F_ANY_LAYOUT" not in names  # deprecated
    assert "VIRTIO_RING_F_EVENT_IDX" in names and "VIRTIO_F_RING_PACKED" in names
    assert result.derived_from == (v211.name, v32.name)
    for source in (v211, v32):
        assert compare(result.abi, source.abi).result in ("subset", "identical")


def test_baseline_drops_what_a_guest_would_refuse():
    a = abi(["VIRTIO_NET_F_CTRL_VQ", "VIRTIO_NET_F_MQ", "VIRTIO_F_VERSION_1"])
    b = abi(["VIRTIO_NET_F_MQ", "VIRTIO_F_VERSION_1"])  # (not a valid mode, but a host may offer it)
    assert baseline([a, b]).abi.virtio_features == ["VIRTIO_F_VERSION_1"]


B_213_CAPS = capabilities_toml(
    catalog.mask_to_names(0xD7C66A7CA, "virtio"), catalog.mask_to_names(0xCBF, "protocol"))


def test_negotiate_picks_the_newest_mode_the_older_host_has(make_host):
    source = load_host(make_host("a"))
    dest = load_host(make_host("b", upstream_until="2.13", capabilities=B_213_CAPS))
    result = negotiate(source, dest)
    assert result.mode is not None and result.mode.name == "upstream.ovs-dpdk.v2.13"
    assert [(c.name, [r.kind + ":" + r.side for r in c.reasons]) for c in result.candidates] == [
        ("upstream.ovs-dpdk.v3.2", ["missing:destination"]),
        ("upstream.ovs-dpdk.v2.15", ["missing:destination"]),
        ("upstream.ovs-dpdk.v2.13", []),
    ]
    assert "the newest mode both a and b define with the same digest and can run" in result.explain().replace(
        str(source.name), "a").replace(str(dest.name), "b")


def test_negotiate_skips_modes_a_backend_cannot_run(make_host):
    # the destination's backend lacks HOST_UFO: 2.11 is unavailable there, 2.9 wins
    source = load_host(make_host("a", upstream_until="2.11"))
    dest = load_host(make_host("b", upstream_until="2.11", capabilities=B_213_CAPS))
    result = negotiate(source, dest)
    assert result.mode.name == "upstream.ovs-dpdk.v2.9"
    refused = result.candidates[0]
    assert refused.name == "upstream.ovs-dpdk.v2.11"
    assert refused.reasons[0].kind == "unavailable" and refused.reasons[0].side == "destination"
    assert [g.name for g in refused.reasons[0].unavailable] == ["VIRTIO_NET_F_HOST_UFO"]
    # recommended: 2.11 without deprecated features no longer needs HOST_UFO
    rec = negotiate(source, dest, "recommended")
    assert rec.mode.name == "upstream.ovs-dpdk.v2.11+recommended"


def test_negotiate_says_loudly_when_a_digest_differs(make_host, shipped: Path):
    text = (shipped / "fc26.ovs-dpdk.toml").read_text().replace("lineage = \"fc26.ovs-dpdk\"", "lineage = \"acme.vswitch\"")
    other = text.replace('    "VIRTIO_NET_F_CTRL_RX",\n', "", 1)
    source = load_host(make_host("a", distro=False, extra={"acme.vswitch.toml": text}))
    dest = load_host(make_host("b", distro=False, extra={"acme.vswitch.toml": other}))
    result = negotiate(source, dest, "acme.vswitch.v2.8")
    assert result.mode is None
    (reason,) = result.candidates[0].reasons
    assert reason.kind == "digest_mismatch"
    assert [d.describe() for d in reason.differences] == ["-VIRTIO_NET_F_CTRL_RX"]
    assert "DIGEST DIFFERS" in reason.describe()


def test_negotiate_with_no_common_mode_explains_every_candidate(make_host):
    source = load_host(make_host("a", distro=False))
    dest = load_host(make_host("b", distro=False, capabilities=capabilities_toml(["VIRTIO_F_VERSION_1"], [])))
    result = negotiate(source, dest)
    assert result.mode is None
    assert len(result.candidates) == 7
    assert all(c.reasons and c.reasons[0].kind == "unavailable" for c in result.candidates)
    assert result.as_dict()["mode"] is None


def test_negotiate_admin_override(make_host):
    source, dest = load_host(make_host("a")), load_host(make_host("b"))
    assert negotiate(source, dest, "upstream.ovs-dpdk.v2.8").mode.name == "upstream.ovs-dpdk.v2.8"
    missing = negotiate(source, dest, "upstream.ovs-dpdk.v9.9")
    assert missing.mode is None and [r.side for r in missing.candidates[0].reasons] == ["source", "destination"]
