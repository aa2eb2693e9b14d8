"""Migration decisions: may this port move from source to destination
(check_migration), and which mode should a new port get for a migration scope
(select_mode). Pure: hosts and ports in, verdicts with reasons by name out.

Two levels, as Nova needs them:
- the contract: the destination defines the port's mode with the same digest, and
  can run it;
- the facts: the features the guest really negotiated (the Interface status, as the
  agent recorded it) are all offered by the destination's backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from vucompat.core import catalog
from vucompat.core.contracts import stamp
from vucompat.core.compare import compare, fits, runnable
from vucompat.core.mode import Mode
from vucompat.core.modeset import Host
from vucompat.core.portview import OPTION, PortView
from vucompat.core.resolve import NONCONFORMANT, PASSTHROUGH, REJECTED

Level = Literal["contract", "outside-contract", "identical-backend", "none"]


@dataclass(frozen=True)
class Reason:
    """One structured reason of a verdict."""

    #: missing_mode | digest_mismatch | unavailable | negotiated_unavailable | no_mode |
    #: backend_differs | backend_unknown
    kind: str
    #: the feature, parameter or mode it is about
    name: str
    source: Any = None
    destination: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "source": self.source, "destination": self.destination}


@dataclass(frozen=True)
class Verdict:
    """The answer of check_migration()."""

    allowed: bool
    port: str
    #: the port's mode (None for passthrough and rejected ports)
    mode: str | None
    #: what allowed it: the contract, the negotiated features outside it (only with
    #: allow_outside_contract), an identical backend; "none" when refused
    level: Level
    reasons: tuple[Reason, ...]
    #: one sentence for people
    sentence: str
    #: refused by the contract, but the guest's negotiated features fit the destination
    would_work_outside_contract: bool = False

    @property
    def destination_options(self) -> dict[str, str]:
        """The Interface options to plug the destination port with (empty when refused).
        Allowed by the contract: the source port's mode, so the destination offers the
        guest exactly what it negotiated against. Allowed otherwise (an identical
        backend, or outside the contract): passthrough, because the guest may have
        negotiated beyond the mode, which a masked destination port would refuse."""
        if not self.allowed:
            return {}
        return {OPTION: self.mode if self.level == "contract" and self.mode else PASSTHROUGH}

    def as_dict(self) -> dict[str, Any]:
        """The verdict as JSON-ready data (contract vucompat.verdict, docs/cli.md)."""
        return stamp("vucompat.verdict", {
            "allowed": self.allowed, "port": self.port, "mode": self.mode, "level": self.level,
            "sentence": self.sentence, "would_work_outside_contract": self.would_work_outside_contract,
            "destination_options": self.destination_options, "reasons": [r.as_dict() for r in self.reasons]})


def check_migration(port: PortView, source: Host, destination: Host,
                    allow_outside_contract: bool = False, dest_port_type: str | None = None) -> Verdict:
    """Decide whether `port` (as its source host's registry holds it) may move to
    `destination`, into a port of `dest_port_type` there (default: the port's own
    type; from OVS 3.2 the types offer different masks). A passthrough or
    nonconformant port may only go to an identical backend; a port whose contract
    fails but whose negotiated features fit is refused unless `allow_outside_contract`."""
    dest_type = dest_port_type or port.interface_type
    dst = destination.name
    if destination.capabilities is not None and destination.capabilities.types_differ:
        dst = f"{destination.name} ({dest_type} ports)"
    if port.state == REJECTED or (port.mode is None and port.resolved != PASSTHROUGH):
        reason = Reason("no_mode", port.name, port.state, None)
        return Verdict(False, port.name, None, "none", (reason,),
                       f"{port.name} has no mode ({port.state}): it does not run, so there is nothing to migrate")
    if port.resolved == PASSTHROUGH or port.state == NONCONFORMANT:
        return _identical_backend(port, source, destination, dest_type)
    mode = port.mode
    assert mode is not None
    contract = _contract(mode, destination, dest_type)
    facts = _facts(port, destination, dest_type)
    if not contract and facts:  # the guest went beyond its mode (not yet caught): the facts decide
        return Verdict(False, port.name, mode.name, "none", tuple(facts),
                       f"the guest negotiated {', '.join(r.name for r in facts)}, outside {mode.name}, and {dst} "
                       "does not offer it")
    if not contract:
        theirs = destination.modeset.modes[mode.name]
        if theirs.digest != mode.digest:
            return Verdict(True, port.name, mode.name, "contract", (),
                           f"{dst} defines {mode.name} as corrected by an erratum (its digest differs only in "
                           "protocol features, which every connection negotiates again) and can run the port's "
                           "definition")
        return Verdict(True, port.name, mode.name, "contract", (),
                       f"{dst} defines {mode.name} with the same digest and can run it")
    fits = facts is not None and not facts
    head = _contract_sentence(mode, dst, contract)
    if fits and allow_outside_contract:
        return Verdict(True, port.name, mode.name, "outside-contract", contract,
                       f"{head}; allowed outside the contract: the features the guest negotiated are all offered "
                       f"by {dst}", True)
    if fits:
        return Verdict(False, port.name, mode.name, "none", contract,
                       f"{head}; it would work with the features the guest negotiated, outside the contract "
                       "(allow_outside_contract accepts that)", True)
    return Verdict(False, port.name, mode.name, "none", contract + tuple(facts or ()), head)


def _contract(mode: Mode, destination: Host, dest_type: str) -> tuple[Reason, ...]:
    theirs = destination.modeset.modes.get(mode.name)
    if theirs is None:
        return (Reason("missing_mode", mode.name, mode.digest, None),)
    if theirs.digest != mode.digest:
        differences = compare(mode.abi, theirs.abi).responsible
        if not (_erratum_links(mode, theirs) and all(d.kind == "protocol_feature" for d in differences)):
            return tuple(Reason("digest_mismatch", d.name, d.a, d.b) for d in differences)
        # an erratum corrected the definition, and only protocol features differ: they are
        # negotiated on every connection, so the guest's state carries over; the port keeps
        # its own definition, which the destination must be able to run
    verdict = runnable(mode.abi, destination.capabilities.offer(dest_type) if destination.capabilities else None)
    return tuple(Reason("unavailable", g.name, g.required, g.offered) for g in verdict.unavailable)


def _erratum_links(a: Mode, b: Mode) -> bool:
    """Whether an erratum known to either registry corrected one of these definitions of
    one name to the other."""
    return a.superseded_by == b.digest or b.superseded_by == a.digest or a.digest in b.supersedes or \
        b.digest in a.supersedes


def _facts(port: PortView, destination: Host, dest_type: str) -> list[Reason] | None:
    """What the guest negotiated that the destination's backend does not offer;
    None when either is unknown (no negotiation recorded, capabilities unknown)."""
    if not port.negotiated_features or destination.capabilities is None:
        return None
    negotiated = port.negotiated_features & ~catalog.NON_ABI_VIRTIO_MASK
    missing = negotiated & ~destination.capabilities.offer(dest_type).virtio
    return [Reason("negotiated_unavailable", name, True, False) for name in catalog.mask_to_names(missing, "virtio")]


def _contract_sentence(mode: Mode, dst: str, reasons: Sequence[Reason]) -> str:
    kinds = {r.kind for r in reasons}
    if "missing_mode" in kinds:
        return f"{dst} does not define {mode.name}"
    if "digest_mismatch" in kinds:
        what = ", ".join(f"{'+' if r.destination else '-'}{r.name}" if isinstance(r.destination, bool)
                         else f"{r.name} {r.source} -> {r.destination}" for r in reasons)
        return f"{dst} defines {mode.name} with another meaning (DIGEST DIFFERS: {what})"
    return f"{dst} cannot run {mode.name}: missing " + ", ".join(r.name for r in reasons)


def _identical_backend(port: PortView, source: Host, destination: Host, dest_type: str) -> Verdict:
    why = "passthrough" if port.resolved == PASSTHROUGH else "nonconformant"
    if source.capabilities is None or destination.capabilities is None:
        reason = Reason("backend_unknown", "capabilities", source.capabilities is not None,
                        destination.capabilities is not None)
        return Verdict(False, port.name, port.mode.name if port.mode else None, "none", (reason,),
                       f"{port.name} is {why}: it may only move to an identical backend, and the backends' "
                       "capabilities are not known (probe both hosts)")
    diff = compare(source.capabilities.offer(port.interface_type), destination.capabilities.offer(dest_type))
    if diff.result == "identical":
        return Verdict(True, port.name, port.mode.name if port.mode else None, "identical-backend", (),
                       f"{port.name} is {why}; {destination.name}'s backend is identical to {source.name}'s")
    reasons = tuple(Reason("backend_differs", d.name, d.a, d.b) for d in diff.responsible)
    return Verdict(False, port.name, port.mode.name if port.mode else None, "none", reasons,
                   f"{port.name} is {why}: it may only move to an identical backend, and {destination.name}'s "
                   "differs: " + ", ".join(d.describe() for d in diff.responsible))


@dataclass(frozen=True)
class Scope:
    """A migration scope, as users state it."""

    #: everywhere (the given set of all hosts) | hosts (the given hosts) | lineage | none
    kind: Literal["everywhere", "hosts", "lineage", "none"]
    #: for kind lineage: the platform's lineage, e.g. upstream.ovs-dpdk
    lineage: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Scope":
        """everywhere | hosts | hosts=... (the hosts are given separately) | lineage=NAME | none."""
        kind, _, value = text.partition("=")
        if kind in ("everywhere", "none") and not value:
            return cls(kind)  # type: ignore[arg-type]
        if kind == "hosts":
            return cls("hosts")
        if kind == "lineage" and value:
            return cls("lineage", value)
        raise ValueError(f"unknown scope {text!r}: use everywhere, hosts, lineage=NAME or none")


@dataclass(frozen=True)
class Selection:
    """The answer of select_mode()."""

    scope: Scope
    hosts: tuple[str, ...]
    #: the chosen mode; None for scope none (passthrough) and when nothing qualifies
    mode: Mode | None
    passthrough: bool = False
    #: why newer candidates were refused: mode name -> reasons (host: what)
    refused: dict[str, list[str]] = field(default_factory=dict)

    def sentence(self) -> str:
        if self.passthrough:
            return "scope none: passthrough (no mode; the port can only move to an identical backend)"
        if self.mode is None:
            return f"no mode is runnable with the same meaning on all {len(self.hosts)} host(s)"
        return f"{self.mode.name}: the newest mode all {len(self.hosts)} host(s) define identically and can run"

    def as_dict(self) -> dict[str, Any]:
        """The selection as JSON-ready data (contract vucompat.selection, docs/cli.md)."""
        return stamp("vucompat.selection", {
            "scope": self.scope.kind if not self.scope.lineage else f"lineage={self.scope.lineage}",
            "hosts": list(self.hosts), "mode": self.mode.name if self.mode else None,
            "digest": self.mode.digest if self.mode else None, "passthrough": self.passthrough,
            "sentence": self.sentence(), "refused": self.refused})


def select_mode(scope: Scope, hosts: Sequence[Host], explain: int = 5) -> Selection:
    """The newest mode every host of the scope defines with the same digest and can
    run (restricted to a lineage for scope lineage); passthrough for scope none.
    `refused` explains up to `explain` newer candidates, each by up to `explain`
    hosts."""
    names = tuple(h.name for h in hosts)
    if scope.kind == "none":
        return Selection(scope, names, None, passthrough=True)
    if not hosts:
        raise ValueError("select_mode needs at least one host")
    first = hosts[0]
    refused: dict[str, list[str]] = {}
    for mode in first.modeset.newest_first:
        if scope.lineage and mode.lineage != scope.lineage:
            continue
        problems = []
        for host in hosts:
            theirs = host.modeset.modes.get(mode.name)
            if theirs is None:
                problems.append(f"{host.name}: not defined")
            elif theirs.digest != mode.digest:
                problems.append(f"{host.name}: DIGEST DIFFERS")
            else:
                caps = host.capabilities.abi if host.capabilities else None
                if not fits(mode.abi, caps):
                    problems.append(f"{host.name}: missing {runnable(mode.abi, caps).describe()}")
            if problems and (len(refused) >= explain or len(problems) >= explain):
                break  # enough said; go on to the next candidate
        if not problems:
            return Selection(scope, names, mode, refused=refused)
        if len(refused) < explain:
            refused[mode.name] = problems
    return Selection(scope, names, None, refused=refused)


@dataclass(frozen=True)
class Impact:
    """What an upgrade would do to one port."""

    port: str
    mode: str | None
    #: keeps | loses-mode | changes-meaning | unrunnable | unaffected (passthrough, rejected)
    outcome: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"port": self.port, "mode": self.mode, "outcome": self.outcome, "detail": self.detail}


def plan_upgrade(ports: Sequence[PortView], upgraded: Host) -> list[Impact]:
    """For each port, what it would become if its host had `upgraded`'s tables and
    backend: it keeps its mode, or the new tables lose it, give it another meaning,
    or the new backend cannot run it."""
    out = []
    caps = upgraded.capabilities.abi if upgraded.capabilities else None
    for port in sorted(ports, key=lambda p: p.name):
        mode = port.mode
        if mode is None or port.state == REJECTED:
            out.append(Impact(port.name, None, "unaffected", "no mode (passthrough or rejected)"))
            continue
        theirs = upgraded.modeset.modes.get(mode.name)
        if theirs is None:
            out.append(Impact(port.name, mode.name, "loses-mode", "the new tables do not define it"))
        elif theirs.digest != mode.digest:
            what = ", ".join(d.describe() for d in compare(mode.abi, theirs.abi).responsible)
            out.append(Impact(port.name, mode.name, "changes-meaning", f"DIGEST DIFFERS: {what}"))
        elif not (verdict := runnable(mode.abi, caps)).runnable:
            out.append(Impact(port.name, mode.name, "unrunnable", "missing " + verdict.describe()))
        else:
            out.append(Impact(port.name, mode.name, "keeps"))
    return out
