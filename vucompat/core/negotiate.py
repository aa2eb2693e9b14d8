"""negotiate(source, destination, policy): the newest mode both hosts define with
the same digest and can run. Pure: hosts in, a Negotiation out."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterator

from vucompat.core.compare import Difference, Gap, compare, fits, runnable
from vucompat.core.contracts import stamp
from vucompat.core.mode import RECOMMENDED_SUFFIX, Abi, Mode, recommended
from vucompat.core.modeset import Host

POLICIES = ("latest", "recommended")
SIDES = ("source", "destination")


@dataclass(frozen=True)
class Refusal:
    """Why a candidate mode does not qualify (one of them). A migration verdict's
    reasons are migration.Reason."""

    #: missing (not defined on `side`) | digest_mismatch | unavailable (not runnable on `side`)
    kind: str
    #: source | destination | both (digest_mismatch)
    side: str
    #: digest_mismatch: what differs, source as a, destination as b
    differences: tuple[Difference, ...] = ()
    #: unavailable: what that side's backend lacks
    unavailable: tuple[Gap, ...] = ()

    def describe(self) -> str:
        if self.kind == "missing":
            return f"not defined on the {self.side}"
        if self.kind == "digest_mismatch":
            what = ", ".join(d.describe() for d in self.differences)
            return f"DIGEST DIFFERS between the hosts (the same name means different things: {what})"
        return f"the {self.side} cannot run it: missing " + ", ".join(g.describe() for g in self.unavailable)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "side": self.side}
        if self.kind == "digest_mismatch":
            out["differences"] = [d.as_dict() for d in self.differences]
        if self.kind == "unavailable":
            out["unavailable"] = [g.as_dict() for g in self.unavailable]
        return out


@dataclass(frozen=True)
class Candidate:
    """One mode considered, newest first, and why it does or does not qualify."""

    name: str
    released: str | None
    reasons: tuple[Refusal, ...]

    @property
    def qualifies(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "released": self.released, "qualifies": self.qualifies,
                "reasons": [r.as_dict() for r in self.reasons]}


@dataclass(frozen=True)
class Negotiation:
    """The answer of negotiate(). `candidates` is worked out when first read, so a
    caller that only needs the decision does not pay for the explanation."""

    policy: str
    source: Host = field(repr=False)
    destination: Host = field(repr=False)
    #: the chosen mode (derived <name>+recommended for that policy), None when none qualifies
    mode: Mode | None

    @cached_property
    def candidates(self) -> tuple[Candidate, ...]:
        """The modes considered, newest first, down to the chosen one (all of them
        when none qualifies), each with the reasons it was refused."""
        out = []
        for name in self._names():
            candidate = _explain(name, self.source, self.destination, _derivation(self.policy))
            out.append(candidate)
            if candidate.qualifies:
                break
        return tuple(out)

    def _names(self) -> Iterator[str]:
        if self.policy not in POLICIES:
            return iter([self.policy.removesuffix(RECOMMENDED_SUFFIX)])
        return _newest_first_names(self.source, self.destination)

    def explain(self) -> str:
        """One sentence for people."""
        src, dst = self.source.name, self.destination.name
        if self.mode is None:
            return (f"no common mode between {src} and {dst} (policy {self.policy}): "
                    f"{len(self.candidates)} candidate(s) refused, see the reasons")
        skipped = len(self.candidates) - 1
        why = f"; {skipped} newer candidate(s) refused" if skipped else ""
        return (f"{self.mode.name}: the newest mode both {src} and {dst} "
                f"define with the same digest and can run (policy {self.policy}){why}")

    def as_dict(self) -> dict[str, Any]:
        """The answer as JSON-ready data (contract vucompat.negotiation, docs/cli.md)."""
        return stamp("vucompat.negotiation", {
            "policy": self.policy,
            "source": self.source.name,
            "destination": self.destination.name,
            "mode": self.mode.name if self.mode else None,
            "digest": self.mode.digest if self.mode else None,
            "explanation": self.explain(),
            "candidates": [c.as_dict() for c in self.candidates],
        })


def negotiate(source: Host, destination: Host, policy: str = "latest") -> Negotiation:
    """Return the newest mode that both hosts define with the same digest and can
    both run.

    `policy` is `latest` (default), `recommended` (the same, minus deprecated
    features: the answer is `<mode>+recommended`) or a mode name (the admin's
    override; only that mode is considered). Candidates are tried newest first
    (released date, then name); `candidates` of the answer lists each one tried
    and why it was refused.
    """
    derive = _derivation(policy)
    if policy in POLICIES:
        in_dest = destination.modeset.modes
        common: Iterator[Mode] = (m for m in source.modeset.newest_first if m.name in in_dest)
    else:
        found = source.modeset.modes.get(policy.removesuffix(RECOMMENDED_SUFFIX))
        common = iter([found] if found else [])
    chosen = None
    for mode in common:
        other = destination.modeset.modes.get(mode.name)
        if other is None or other.digest != mode.digest:
            continue
        derived = derive(mode)
        if fits(derived.abi, _offer(source)) and fits(derive(other).abi, _offer(destination)):
            chosen = derived
            break
    return Negotiation(policy, source, destination, chosen)


def _derivation(policy: str) -> Callable[[Mode], Mode]:
    if policy == "recommended" or policy.endswith(RECOMMENDED_SUFFIX):
        return recommended
    return _same


def _same(mode: Mode) -> Mode:
    return mode


def _offer(host: Host) -> Abi | None:
    return host.capabilities.abi if host.capabilities else None


def _newest_first_names(source: Host, destination: Host) -> Iterator[str]:
    seen: set[str] = set()
    merged = heapq.merge(source.modeset.newest_first, destination.modeset.newest_first,
                         key=lambda m: m.order_key, reverse=True)
    for mode in merged:
        if mode.name not in seen:
            seen.add(mode.name)
            yield mode.name


def _explain(name: str, source: Host, destination: Host, derive: Callable[[Mode], Mode]) -> Candidate:
    on_source = source.modeset.modes.get(name)
    on_dest = destination.modeset.modes.get(name)
    reasons = [Refusal("missing", side) for side, m in zip(SIDES, (on_source, on_dest)) if m is None]
    if on_source is not None and on_dest is not None and on_source.digest != on_dest.digest:
        reasons.append(Refusal("digest_mismatch", "both", differences=compare(on_source.abi, on_dest.abi).responsible))
    for side, host, mode in (("source", source, on_source), ("destination", destination, on_dest)):
        if mode is not None:
            verdict = runnable(derive(mode).abi, _offer(host))
            if not verdict.runnable:
                reasons.append(Refusal("unavailable", side, unavailable=verdict.unavailable))
    known = on_source or on_dest
    released = known.released.isoformat() if known and known.released else None
    return Candidate(name, released, tuple(reasons))
