"""negotiate(source, destination, policy): the newest mode both hosts define with
the same digest and can run. Pure: hosts in, a Negotiation out."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .compare import Difference, Gap, compare, runnable
from .mode import RECOMMENDED_SUFFIX, Mode, recommended
from .registry import Host

POLICIES = ("latest", "recommended")
SIDES = ("source", "destination")


@dataclass(frozen=True)
class Reason:
    """Why a candidate mode does not qualify."""

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
    reasons: tuple[Reason, ...]

    @property
    def qualifies(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "released": self.released, "qualifies": self.qualifies,
                "reasons": [r.as_dict() for r in self.reasons]}


@dataclass(frozen=True)
class Negotiation:
    """The answer of negotiate()."""

    policy: str
    source: str
    destination: str
    #: the chosen mode (derived <name>+recommended for that policy), None when none qualifies
    mode: Mode | None
    #: the modes considered, newest first, down to the chosen one (all of them when none qualifies)
    candidates: tuple[Candidate, ...]

    def explain(self) -> str:
        """One sentence for people."""
        if self.mode is None:
            return (f"no common mode between {self.source} and {self.destination} "
                    f"(policy {self.policy}): {len(self.candidates)} candidate(s) refused, see the reasons")
        skipped = len(self.candidates) - 1
        why = f"; {skipped} newer candidate(s) refused" if skipped else ""
        return (f"{self.mode.name}: the newest mode both {self.source} and {self.destination} "
                f"define with the same digest and can run (policy {self.policy}){why}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "destination": self.destination,
            "mode": self.mode.name if self.mode else None,
            "digest": self.mode.digest if self.mode else None,
            "explanation": self.explain(),
            "candidates": [c.as_dict() for c in self.candidates],
        }


def negotiate(source: Host, destination: Host, policy: str = "latest") -> Negotiation:
    """Return the newest mode that both hosts define with the same digest and can
    both run.

    `policy` is `latest` (default), `recommended` (the same, minus deprecated
    features: the answer is `<mode>+recommended`) or a mode name (the admin's
    override; only that mode is considered). Candidates are tried newest first
    (released date, then name); the answer lists each one tried and why it was
    refused.
    """
    derive: Callable[[Mode], Mode] = recommended if (
        policy == "recommended" or policy.endswith(RECOMMENDED_SUFFIX)) else (lambda m: m)
    if policy in POLICIES:
        names: Iterator[str] = _newest_first_names(source, destination)
    else:
        names = iter([policy.removesuffix(RECOMMENDED_SUFFIX)])
    candidates = []
    chosen: Mode | None = None
    for name in names:
        candidate, mode = _evaluate(name, source, destination, derive)
        candidates.append(candidate)
        if mode is not None:
            chosen = mode
            break
    return Negotiation(policy, source.name, destination.name, chosen, tuple(candidates))


def _newest_first_names(source: Host, destination: Host) -> Iterator[str]:
    seen: set[str] = set()
    merged = heapq.merge(source.registry.newest_first, destination.registry.newest_first,
                         key=lambda m: m.order_key, reverse=True)
    for mode in merged:
        if mode.name not in seen:
            seen.add(mode.name)
            yield mode.name


def _evaluate(name: str, source: Host, destination: Host,
              derive: Callable[[Mode], Mode]) -> tuple[Candidate, Mode | None]:
    on_source = source.registry.modes.get(name)
    on_dest = destination.registry.modes.get(name)
    reasons = [Reason("missing", side) for side, m in zip(SIDES, (on_source, on_dest)) if m is None]
    if on_source is not None and on_dest is not None and on_source.digest != on_dest.digest:
        reasons.append(Reason("digest_mismatch", "both", differences=compare(on_source.abi, on_dest.abi).responsible))
    for side, host, mode in (("source", source, on_source), ("destination", destination, on_dest)):
        if mode is not None:
            verdict = runnable(derive(mode).abi, host.capabilities.abi if host.capabilities else None)
            if not verdict.runnable:
                reasons.append(Reason("unavailable", side, unavailable=verdict.unavailable))
    known = on_source or on_dest
    released = known.released.isoformat() if known and known.released else None
    candidate = Candidate(name, released, tuple(reasons))
    return candidate, (derive(on_source) if candidate.qualifies and on_source else None)
