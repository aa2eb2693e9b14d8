"""compare, runnable and baseline: pure functions on ABIs (values in, values out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from vucompat.core import catalog
from vucompat.core.catalog import MASK_KINDS
from vucompat.core.errors import UsageError
from vucompat.core.mode import LIMITS, Abi, Mode, common_offer

Result = Literal["identical", "superset", "subset", "incompatible"]

_KIND = {"virtio": "virtio_feature", "protocol": "protocol_feature"}


def _abi_mask(abi: Abi, kind: str) -> int:
    """The mask as guest ABI: VHOST_F_LOG_ALL never counts."""
    value = abi.mask(kind)
    return value & ~catalog.NON_ABI_VIRTIO_MASK if kind == "virtio" else value


@dataclass(frozen=True)
class Difference:
    """One feature or limit that differs between a and b."""

    #: virtio_feature | protocol_feature | limit
    kind: str
    name: str
    #: for features: present in a / in b; for limits: the values
    a: bool | int
    b: bool | int

    def describe(self) -> str:
        """'+NAME' (only in b), '-NAME' (only in a) or 'limit a -> b'."""
        if self.kind == "limit":
            return f"{self.name} {self.a} -> {self.b}"
        return f"+{self.name}" if self.b else f"-{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class Comparison:
    """The answer of compare(a, b)."""

    #: identical | superset (a offers more) | subset (a offers less) | incompatible
    result: Result
    #: the features and limits responsible, by name
    responsible: tuple[Difference, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.result, "responsible": [d.as_dict() for d in self.responsible]}


def compare(a: Abi, b: Abi) -> Comparison:
    """Compare two ABIs, like QEMU's query-cpu-model-comparison.

    Returns `superset` when a offers everything b does and more, `subset` for the
    reverse, `identical`, or `incompatible` when each offers something the other
    does not. `responsible` names every differing feature and limit.
    """
    diffs: list[Difference] = []
    a_more = b_more = False
    for kind in MASK_KINDS:
        ma, mb = _abi_mask(a, kind), _abi_mask(b, kind)
        for bit in catalog.bits_of(ma ^ mb):
            in_a = bool(ma >> bit & 1)
            a_more |= in_a
            b_more |= not in_a
            diffs.append(Difference(_KIND[kind], catalog.bit_name(kind, bit), in_a, not in_a))
    for name in LIMITS:
        va, vb = a.limit(name), b.limit(name)
        if va != vb:
            a_more |= va > vb
            b_more |= vb > va
            diffs.append(Difference("limit", name, va, vb))
    result: Result = ("incompatible" if a_more and b_more else "superset" if a_more
                      else "subset" if b_more else "identical")
    return Comparison(result, tuple(diffs))


@dataclass(frozen=True)
class Gap:
    """A feature or limit a mode needs that a host does not offer."""

    #: virtio_feature | protocol_feature | limit
    kind: str
    name: str
    #: what the mode needs (True for a feature, the value for a limit)
    required: bool | int
    #: what the host offers
    offered: bool | int

    def describe(self) -> str:
        if self.kind == "limit":
            return f"{self.name} {self.required} (host offers {self.offered})"
        return self.name

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "required": self.required, "offered": self.offered}


@dataclass(frozen=True)
class Runnability:
    """Whether a mode is runnable on a host, and if not, what is unavailable."""

    unavailable: tuple[Gap, ...] = ()
    #: optional protocol features of the mode the host lacks: the mode runs, and the
    #: relay does not offer these to the frontend
    not_offered: tuple[str, ...] = ()

    @property
    def runnable(self) -> bool:
        return not self.unavailable

    def describe(self) -> str:
        return ", ".join(g.describe() for g in self.unavailable)

    def as_dict(self) -> dict[str, Any]:
        return {"runnable": self.runnable, "unavailable": [g.as_dict() for g in self.unavailable],
                "optional_not_offered": list(self.not_offered)}


RUNNABLE = Runnability()


def fits(mode: Abi, host: Abi | None) -> bool:
    """Return whether a host offering `host` can run `mode`: runnable() without the
    explanation, for hot paths. Of the protocol features, only those the mode
    requires count (Abi.required_protocol)."""
    if host is None:
        return True
    return not (_abi_mask(mode, "virtio") & ~host.virtio or mode.required_protocol & ~host.protocol) and \
        mode.max_queue_pairs <= host.max_queue_pairs and mode.max_rx_queue_size <= host.max_rx_queue_size and \
        mode.max_tx_queue_size <= host.max_tx_queue_size


def runnable(mode: Abi, host: Abi | None) -> Runnability:
    """Return whether a host offering `host` can run `mode` (None: the host offers
    everything), with the unavailable features and limits by name, and the optional
    protocol features it will run without."""
    if host is None:
        return RUNNABLE
    not_offered = tuple(catalog.mask_to_names(mode.protocol & ~mode.required_protocol & ~host.protocol, "protocol"))
    if fits(mode, host):
        return Runnability((), not_offered) if not_offered else RUNNABLE
    missing_virtio = _abi_mask(mode, "virtio") & ~host.virtio
    missing_protocol = mode.required_protocol & ~host.protocol
    gaps = [Gap(_KIND[kind], name, True, False)
            for kind, missing in (("virtio", missing_virtio), ("protocol", missing_protocol))
            for name in catalog.mask_to_names(missing, kind)]  # type: ignore[arg-type]
    gaps += [Gap("limit", n, mode.limit(n), host.limit(n)) for n in LIMITS if mode.limit(n) > host.limit(n)]
    return Runnability(tuple(gaps), not_offered)


def baseline(inputs: Sequence[Abi], names: Sequence[str] = ()) -> Mode:
    """Return the greatest configuration every input can run, as a custom mode.

    Deprecated features are left out, and so is any feature whose requirement the
    intersection lost where a guest would refuse the device. Limits are the
    smallest of the inputs. `names` (the inputs' names) are recorded in
    `derived_from`. Raises UsageError for no inputs.
    """
    if not inputs:
        raise UsageError(message="baseline needs at least one mode or capabilities file")
    common = common_offer(inputs).without_deprecated()
    short = common.digest.removeprefix("sha256:")[:12]
    return Mode(name=f"custom.baseline.v{short}", lineage="custom.baseline", version=short,
                released=None, abi=common, note="baseline of " + ", ".join(names) if names else "baseline",
                derived_from=tuple(names))


def newest(modes: Sequence[Mode]) -> Mode | None:
    """Return the newest of `modes` (released date, then name), or None."""
    return max(modes, key=lambda m: m.order_key, default=None)


