"""Evidence files: the upstream source lines that make a backend offer what a mode
says it offers (format: compat_tables/evidence/FORMAT.md).

derive() computes, per release and port type, the offer the cited facts produce;
check_evidence() compares it with the modes each release names. Pure: parsed TOML
in, values and problems out. Reading the cited lines in the upstream repositories
is scripts/check-evidence's job (it needs local copies of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from vucompat.core import catalog
from vucompat.core.compare import compare
from vucompat.core.errors import Problem, UnknownFeatureError
from vucompat.core.mode import LIMITS, Abi, Mode

#: where a tables directory keeps its evidence files
EVIDENCE_DIR = "evidence"
SUFFIX = ".evidence.toml"
PORT_TYPES = ("dpdkvhostuser", "dpdkvhostuserclient")
EFFECTS = ("offer", "remove", "limit", "context")


@dataclass(frozen=True)
class Citation:
    """One cited line."""

    repository: str
    tag: str
    file: str
    line: int
    text: str

    def url(self) -> str:
        return f"https://github.com/{self.repository}/blob/{self.tag}/{self.file}#L{self.line}"


@dataclass(frozen=True)
class Fact:
    id: str
    effect: str
    what: str
    #: offer/remove: the mask kind and its features, each with its citation
    mask: str = ""
    features: tuple[tuple[str, Citation], ...] = ()
    #: limit: which limit and its value
    limit: str = ""
    value: int = 0
    #: limit/context: the cited line
    citation: Citation | None = None

    def citations(self) -> list[Citation]:
        return [c for _, c in self.features] + ([self.citation] if self.citation else [])


@dataclass(frozen=True)
class Release:
    ovs: str
    tag: str
    dpdk: str
    facts: tuple[str, ...]
    #: port type -> facts that apply to that type only
    type_facts: Mapping[str, tuple[str, ...]]
    #: port type -> the mode its derived offer must equal
    modes: Mapping[str, str]
    dpdk_named: Citation | None = None


@dataclass(frozen=True)
class Evidence:
    path: Path
    lineage: str
    facts: Mapping[str, Fact]
    releases: tuple[Release, ...]

    def citations(self) -> list[Citation]:
        out = [c for f in self.facts.values() for c in f.citations()]
        return out + [r.dpdk_named for r in self.releases if r.dpdk_named]


class EvidenceError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))


def read_evidence(path: Path) -> Evidence:
    """Parse an evidence file; raise EvidenceError listing every problem."""
    from vucompat.core.tomlfile import load

    data, problem = load(path)
    if data is None:
        assert problem is not None
        raise EvidenceError([problem])
    problems: list[Problem] = []
    facts: dict[str, Fact] = {}
    for i, raw in enumerate(data.get("fact", [])):
        try:
            fact = _fact(raw)
        except (KeyError, TypeError, ValueError, UnknownFeatureError) as err:
            problems.append(Problem(path, f"fact[{i}]", f"malformed fact: {err}"))
            continue
        if fact.id in facts:
            problems.append(Problem(path, f"fact[{i}].id", f"fact {fact.id} is defined twice"))
        facts[fact.id] = fact
    releases = []
    for i, raw in enumerate(data.get("release", [])):
        try:
            release = _release(raw)
        except (KeyError, TypeError, ValueError) as err:
            problems.append(Problem(path, f"release[{i}]", f"malformed release: {err}"))
            continue
        for fid in release.facts + tuple(f for fs in release.type_facts.values() for f in fs):
            if fid not in facts:
                problems.append(Problem(path, f"release[{i}]", f"OVS {release.ovs} cites fact {fid}, "
                                        "which the file does not define"))
        releases.append(release)
    if not isinstance(data.get("lineage"), str):
        problems.append(Problem(path, "lineage", "required: the lineage whose modes this file proves"))
    if problems:
        raise EvidenceError(problems)
    return Evidence(path, data["lineage"], facts, tuple(releases))


def _citation(raw: Mapping[str, Any], line: Any, text: Any) -> Citation:
    return Citation(str(raw["repository"]), str(raw["tag"]), str(raw["file"]), int(line), str(text))


def _fact(raw: Mapping[str, Any]) -> Fact:
    effect = raw["effect"]
    if effect not in EFFECTS:
        raise ValueError(f"effect {effect!r}: one of {', '.join(EFFECTS)}")
    base = dict(id=str(raw["id"]), effect=effect, what=str(raw.get("what", "")))
    if effect in ("offer", "remove"):
        mask = raw["mask"]
        features = []
        for item in raw["features"]:
            feature = catalog.lookup(item["name"])
            if feature.mask != mask:
                raise ValueError(f"{item['name']} is not a {mask} feature")
            features.append((feature.name, _citation(raw, item["line"], item["text"])))
        return Fact(**base, mask=mask, features=tuple(features))
    citation = _citation(raw, raw["line"], raw["text"])
    if effect == "limit":
        if raw["limit"] not in LIMITS:
            raise ValueError(f"limit {raw['limit']!r}: one of {', '.join(LIMITS)}")
        return Fact(**base, limit=raw["limit"], value=int(raw["value"]), citation=citation)
    return Fact(**base, citation=citation)


def _release(raw: Mapping[str, Any]) -> Release:
    named = raw.get("dpdk_named")
    type_facts = {t: tuple(ids) for t, ids in dict(raw.get("type_facts", {})).items()}
    modes = dict(raw["modes"])
    for port_type in list(type_facts) + list(modes):
        if port_type not in PORT_TYPES:
            raise ValueError(f"port type {port_type!r}: one of {', '.join(PORT_TYPES)}")
    return Release(ovs=str(raw["ovs"]), tag=str(raw["tag"]), dpdk=str(raw["dpdk"]), facts=tuple(raw["facts"]),
                   type_facts=type_facts, modes=modes,
                   dpdk_named=Citation("openvswitch/ovs", str(raw["tag"]), str(named["file"]), int(named["line"]),
                                       str(named["text"])) if named else None)


def derive(evidence: Evidence, release: Release, port_type: str) -> Abi:
    """Return the offer of `release`'s default `port_type` port: the union of its
    offered features minus the union of its removed ones, and its limits.

    Raises ValueError when a limit has no fact, or two facts that disagree."""
    facts = [evidence.facts[f] for f in release.facts + release.type_facts.get(port_type, ())]
    offered = {"virtio": 0, "protocol": 0}
    removed = {"virtio": 0, "protocol": 0}
    limits: dict[str, int] = {}
    for fact in facts:
        for name, _citation_ in fact.features:
            bit = catalog.lookup(name).value
            (offered if fact.effect == "offer" else removed)[fact.mask] |= bit
        if fact.effect == "limit":
            if limits.get(fact.limit, fact.value) != fact.value:
                raise ValueError(f"OVS {release.ovs}: two facts give {fact.limit} different values")
            limits[fact.limit] = fact.value
    missing = [name for name in LIMITS if name not in limits]
    if missing:
        raise ValueError(f"OVS {release.ovs}: no fact gives {', '.join(missing)}")
    return Abi(virtio=offered["virtio"] & ~removed["virtio"], protocol=offered["protocol"] & ~removed["protocol"],
               **limits)


def check_evidence(evidence: Evidence, modes: Mapping[str, Mode]) -> tuple[int, list[Problem]]:
    """Derive every release's offer per port type and compare it with the mode it
    names. Returns (modes checked, problems); a mode of the lineage that no release
    names is a problem too."""
    problems = []
    proven: set[str] = set()
    for i, release in enumerate(evidence.releases):
        for port_type, name in release.modes.items():
            key = f"release[{i}].modes.{port_type}"
            mode = modes.get(name)
            if mode is None:
                problems.append(Problem(evidence.path, key, f"OVS {release.ovs} names {name}, which the tables "
                                        "do not define"))
                continue
            try:
                offer = derive(evidence, release, port_type)
            except ValueError as err:
                problems.append(Problem(evidence.path, key, str(err)))
                continue
            differences = compare(mode.abi, offer).responsible
            if differences:
                problems.append(Problem(Path(mode.source), f'mode[version="{mode.version}"]',
                                        f"{name} is not what a default OVS {release.ovs} {port_type} port offers "
                                        f"by its evidence ({evidence.path.name}): mode -> evidence "
                                        f"{', '.join(d.describe() for d in differences)}; fix the table through an "
                                        "erratum, or the evidence"))
            else:
                proven.add(name)
    for name, mode in sorted(modes.items()):
        if mode.lineage == evidence.lineage and not any(name in r.modes.values() for r in evidence.releases):
            problems.append(Problem(evidence.path, "release", f"no release derives {name}: add the release it "
                                    "describes, with its facts"))
    return len(proven), problems


def check_evidence_dir(directory: Path, modes: Mapping[str, Mode]) -> tuple[int, list[Problem]]:
    """check_evidence() for every evidence file of a tables directory whose lineage it
    defines."""
    from vucompat.core.tomlfile import list_dir

    checked, problems = 0, []
    if EVIDENCE_DIR not in list_dir(directory)[0]:
        return checked, problems
    names, problem = list_dir(directory / EVIDENCE_DIR)
    if problem is not None:
        return checked, [problem]
    for path in [directory / EVIDENCE_DIR / name for name in names if name.endswith(SUFFIX)]:
        try:
            evidence = read_evidence(path)
        except EvidenceError as err:
            problems += err.problems
            continue
        lineage_modes = {n: m for n, m in modes.items() if m.lineage == evidence.lineage}
        if not lineage_modes:
            continue
        count, found = check_evidence(evidence, modes)
        checked += count
        problems += found
    return checked, problems
