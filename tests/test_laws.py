"""Property-based tests (hypothesis) for the laws of the core."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings, strategies as st

from vucompat.core import catalog
from vucompat.core.compare import baseline, compare, runnable
from vucompat.core.mode import Abi, Capabilities, Mode
from vucompat.core.negotiate import negotiate
from vucompat.core.modeset import Host, ModeSet

VIRTIO_BITS = [f.bit for f in catalog.FEATURES if f.mask == "virtio"]
PROTOCOL_BITS = [f.bit for f in catalog.FEATURES if f.mask == "protocol"]
POWERS = [2 ** i for i in range(16)]


def mask(bits: list[int]):
    return st.lists(st.sampled_from(bits), unique=True).map(lambda bs: sum(1 << b for b in bs))


abis = st.builds(Abi, virtio=mask(VIRTIO_BITS), protocol=mask(PROTOCOL_BITS),
                 max_queue_pairs=st.integers(1, 256), max_rx_queue_size=st.sampled_from(POWERS),
                 max_tx_queue_size=st.sampled_from(POWERS))

MIRROR = {"identical": "identical", "superset": "subset", "subset": "superset", "incompatible": "incompatible"}


@given(abis, abis)
def test_compare_is_antisymmetric(a: Abi, b: Abi):
    ab, ba = compare(a, b), compare(b, a)
    assert ba.result == MIRROR[ab.result]
    assert sorted((d.name, d.a, d.b) for d in ab.responsible) == sorted((d.name, d.b, d.a) for d in ba.responsible)
    assert (ab.result == "identical") == (a.digest == b.digest)


@given(st.lists(abis, min_size=1, max_size=5))
def test_baseline_runs_everywhere_and_is_a_subset_of_each(inputs: list[Abi]):
    result = baseline(inputs).abi
    for abi in inputs:
        assert runnable(result, abi).runnable
        assert compare(result, abi).result in ("subset", "identical")
    assert result.deprecated_features == []
    assert not [f for f, _ in catalog.unmet_requirements(result.virtio, result.protocol)
                if f.requirement_breaks_guest]


@st.composite
def host_pair(draw):
    pool = draw(st.lists(st.tuples(abis, st.integers(0, 3000)), min_size=1, max_size=12))
    modes = [Mode(name=f"acme.vswitch.v{i}", lineage="acme.vswitch", version=str(i),
                  released=date(2015, 1, 1) + timedelta(days=days), abi=abi)
             for i, (abi, days) in enumerate(pool)]

    def side(name: str) -> Host:
        chosen = draw(st.lists(st.sampled_from(modes), unique_by=lambda m: m.name))
        # sometimes a host's table gives a name other contents (digest differs)
        altered = [m if not draw(st.booleans()) or draw(st.integers(0, 4)) else
                   Mode(m.name, m.lineage, m.version, m.released, draw(abis)) for m in chosen]
        # declared capabilities: none, random (rarely runs any mode), or covering one of the
        # host's modes with some more bits, or with a bit or two less (the hard cases on purpose)
        kind = draw(st.sampled_from(["none", "random", "covering", "covering-minus"])) if altered else "random"
        caps = None
        if kind == "random":
            caps = Capabilities(draw(abis))
        elif kind.startswith("covering"):
            base = draw(st.sampled_from(altered)).abi
            virtio, protocol = base.virtio | draw(mask(VIRTIO_BITS)), base.protocol | draw(mask(PROTOCOL_BITS))
            if kind == "covering-minus":
                virtio &= ~(1 << draw(st.sampled_from(VIRTIO_BITS)))
            caps = Capabilities(Abi(virtio, protocol, 256, 32768, 32768))
        return Host(name, ModeSet({m.name: m for m in altered}), caps)

    return side("source"), side("destination")


def _qualifies(name: str, source: Host, dest: Host) -> bool:
    s, d = source.modeset.modes.get(name), dest.modeset.modes.get(name)
    if s is None or d is None or s.digest != d.digest:
        return False
    return all(runnable(m.abi, h.capabilities.abi if h.capabilities else None).runnable
               for m, h in ((s, source), (d, dest)))


@settings(max_examples=300)
@given(host_pair())
def test_negotiate_answer_runs_on_both_and_nothing_newer_qualifies(hosts):
    source, dest = hosts
    result = negotiate(source, dest)
    qualifying = [n for n in set(source.modeset.modes) | set(dest.modeset.modes) if _qualifies(n, source, dest)]
    if result.mode is None:
        assert qualifying == []
        assert len(result.candidates) == len(set(source.modeset.modes) | set(dest.modeset.modes))
        return
    name = result.mode.name
    assert _qualifies(name, source, dest)
    assert source.modeset.modes[name].digest == dest.modeset.modes[name].digest
    for other in qualifying:
        assert source.modeset.modes[other].order_key <= source.modeset.modes[name].order_key
    # every candidate listed before the answer was refused with a reason
    assert all(c.reasons for c in result.candidates[:-1]) and result.candidates[-1].name == name


def test_negotiate_with_declared_capabilities_takes_the_newest_mode_both_run():
    """The explicit example the law above must cover: both hosts define two modes alike,
    the newer one needs a feature the destination's backend lacks: the older is the answer,
    and the newer is refused for what the destination lacks."""
    csum = catalog.lookup("VIRTIO_NET_F_CSUM")
    base = Abi(catalog.names_to_mask(["VIRTIO_NET_F_MRG_RXBUF", "VIRTIO_F_VERSION_1"], "virtio"), 0, 8, 1024, 1024)
    newer = Abi(base.virtio | csum.value, 0, 8, 1024, 1024)
    modes = {m.name: m for m in (Mode("acme.vswitch.v1", "acme.vswitch", "1", date(2020, 1, 1), base),
                                 Mode("acme.vswitch.v2", "acme.vswitch", "2", date(2021, 1, 1), newer))}
    source = Host("source", ModeSet(modes), Capabilities(Abi(newer.virtio, 0, 256, 32768, 32768)))
    dest = Host("destination", ModeSet(modes), Capabilities(Abi(base.virtio, 0, 256, 32768, 32768)))
    result = negotiate(source, dest)
    assert result.mode is not None and result.mode.name == "acme.vswitch.v1"
    (refused,) = [c for c in result.candidates if c.name == "acme.vswitch.v2"]
    assert "VIRTIO_NET_F_CSUM" in str(refused.reasons), refused.reasons
