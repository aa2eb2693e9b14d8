"""Evidence: every shipped upstream mode is derived from the cited OVS and DPDK source
lines of each release it describes, per port type, and lint fails when they differ."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vucompat.core.evidence import EVIDENCE_DIR, check_evidence, derive, read_evidence
from vucompat.core.lint import lint
from vucompat.core.tables import load_modeset

RELEASES = ["2.6.0", "2.7.0", "2.8.0", "2.9.0", "2.10.0", "2.11.0", "2.12.0", "2.13.0", "2.14.0", "2.15.0",
            "2.16.0", "2.17.0", "3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0", "3.7.0"]


def upstream_evidence(shipped: Path):
    return read_evidence(shipped / EVIDENCE_DIR / "upstream.ovs-dpdk.evidence.toml")


def test_every_upstream_mode_equals_the_offer_its_evidence_derives(shipped: Path):
    evidence = upstream_evidence(shipped)
    modes = load_modeset([shipped]).modes
    checked, problems = check_evidence(evidence, modes)
    assert problems == []
    assert checked == len([m for m in modes.values() if m.lineage == "upstream.ovs-dpdk"])
    # every OVS release through 3.7, both port types, each fact cited at a tag, file and line
    assert [r.ovs for r in evidence.releases] == RELEASES
    for release in evidence.releases:
        assert set(release.modes) == {"dpdkvhostuser", "dpdkvhostuserclient"}, release.ovs
        assert release.dpdk_named is not None and release.dpdk_named.line > 0
    assert all(c.repository and c.tag and c.file and c.line > 0 and c.text for c in evidence.citations())
    # and lint says the same
    assert lint([shipped]).evidenced == checked


def test_from_32_the_port_types_derive_different_modes(shipped: Path):
    evidence = upstream_evidence(shipped)
    by_release = {r.ovs: r for r in evidence.releases}
    for ovs in ("3.1.0", "3.2.0", "3.7.0"):
        release = by_release[ovs]
        client, server = derive(evidence, release, "dpdkvhostuserclient"), derive(evidence, release, "dpdkvhostuser")
        assert (client.virtio ^ server.virtio == 1) == (ovs != "3.1.0")  # VIRTIO_NET_F_CSUM, bit 0
    assert by_release["3.2.0"].modes == {"dpdkvhostuser": "upstream.ovs-dpdk.v2.15",
                                         "dpdkvhostuserclient": "upstream.ovs-dpdk.v3.2"}


def test_a_table_that_disagrees_with_its_evidence_fails_by_feature(shipped: Path):
    evidence = upstream_evidence(shipped)
    modes = load_modeset([shipped]).modes
    # the pre-erratum 2.13 (REPLY_ACK claimed) is caught by name
    claimed = modes["upstream.ovs-dpdk.v2.13"]
    wrong = replace(claimed, abi=replace(claimed.abi, protocol=claimed.abi.protocol | 1 << 3))
    _, problems = check_evidence(evidence, {**modes, wrong.name: wrong})
    assert problems and all("upstream.ovs-dpdk.v2.13 is not what a default OVS 2.1" in p.message and
                            "-VHOST_USER_PROTOCOL_F_REPLY_ACK" in p.message for p in problems)
    # so is evidence that loses a fact: dropping DPDK 17.11's REPLY_ACK strip (no IOMMU) gives it back
    release = next(r for r in evidence.releases if r.ovs == "2.9.0")
    removal = [f for f in release.facts if evidence.facts[f].effect == "remove" and
               any(n == "VHOST_USER_PROTOCOL_F_REPLY_ACK" for n, _ in evidence.facts[f].features)]
    assert removal, "the evidence cites why 2.9 does not offer REPLY_ACK"
    lost = replace(evidence, releases=(replace(release, facts=tuple(f for f in release.facts if f not in removal)),))
    _, problems = check_evidence(lost, modes)
    assert any("+VHOST_USER_PROTOCOL_F_REPLY_ACK" in p.message for p in problems)
    # and a mode no release derives is a problem
    assert any("no release derives upstream.ovs-dpdk.v3.2" in p.message for p in problems)
