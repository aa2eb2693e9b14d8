"""Expansion of a lineage: apply each version's delta to the one before, and check
the meaning of every version (the semantic half of table validation).

Pure: takes the schema-valid entries of one table file, returns modes and problems.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Mapping, Sequence

from vucompat.core import catalog
from vucompat.core.errors import Problem, suggestions_hint
from vucompat.core.mode import LIMITS, Abi, Mode, natural_key

#: the earliest release date accepted: vhost-user dates from 2014 (QEMU 2.1), so a date
#: before 1990 is a typo (0001-01-01, 1023 for 2023) and would sort the mode first for
#: ever. Not 2014: generated test and bench tables start in 2000
EARLIEST_RELEASE = date(1990, 1, 1)
#: the most digits in one number of a version (a date stamp such as 20240131 has 8)
MAX_VERSION_DIGITS = 18

_FULL_LISTS = ("virtio_features", "protocol_features")
_DELTAS = ("enable", "disable")


@dataclass
class Expansion:
    """The modes of one lineage, oldest first, or the problems that prevent them."""

    modes: list[Mode] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def expand_lineage(lineage: str, entries: Sequence[Mapping[str, Any]], path: Path) -> Expansion:
    """Expand the `[[mode]]` entries of the table file at `path` (already schema-valid).

    Returns every mode when there is no error; with errors, `modes` is empty.
    """
    out = Expansion()
    state: dict[str, int] | None = None
    seen_versions: dict[str, int] = {}
    reported: set[tuple[str, tuple[str, ...]]] = set()
    previous: Mapping[str, Any] | None = None

    for index, entry in enumerate(entries):
        key = f"mode[{index}]"
        version = entry["version"]
        _check_version_order(entry, index, previous, seen_versions, path, out)
        seen_versions.setdefault(version, index)
        previous = entry

        if state is None:
            state = _first_version(entry, key, path, out)
            if state is None:
                return out  # the chain cannot be followed without a complete first version
        else:
            _apply_delta(entry, key, state, entries[index - 1]["version"], path, out)

        for limit in LIMITS:
            if limit in entry:
                state[limit] = entry[limit]
        _check_requirements(state, key, version, path, out, reported)

        out.modes.append(
            Mode(
                name=f"{lineage}.v{version}",
                lineage=lineage,
                version=version,
                released=entry["released"],
                abi=Abi(**state),  # type: ignore[arg-type]
                provenance=dict(entry.get("provenance", {})),
                note=entry.get("note", ""),
                source=str(path),
            )
        )
    if out.errors:
        out.modes = []
    return out


def _first_version(entry: Mapping[str, Any], key: str, path: Path, out: Expansion) -> dict[str, int] | None:
    missing = [k for k in (*_FULL_LISTS, *LIMITS) if k not in entry]
    for k in missing:
        out.errors.append(Problem(path, f"{key}.{k}", "the first version must be complete: set it"))
    for k in _DELTAS:
        if k in entry:
            out.errors.append(Problem(path, f"{key}.{k}", "the first version has nothing to change: "
                                      "list its features in virtio_features/protocol_features"))
    if missing:
        return None
    state = {"virtio": 0, "protocol": 0}
    for list_key, mask in (("virtio_features", "virtio"), ("protocol_features", "protocol")):
        for i, name in enumerate(entry[list_key]):
            feature = _resolve(name, f"{key}.{list_key}[{i}]", path, out)
            if feature is None:
                continue
            if feature.mask != mask:
                other = "protocol_features" if feature.mask == "protocol" else "virtio_features"
                out.errors.append(Problem(path, f"{key}.{list_key}[{i}]",
                                          f"{feature.name} is a {feature.mask} feature: move it to {other}"))
                continue
            state[mask] |= feature.value
    return state


def _apply_delta(entry: Mapping[str, Any], key: str, state: dict[str, int], prev_version: str,
                 path: Path, out: Expansion) -> None:
    for k in _FULL_LISTS:
        if k in entry:
            out.errors.append(Problem(path, f"{key}.{k}", "a later version is a delta on the one "
                                      "before: use enable = [...] and disable = [...]"))
    enabled = set(entry.get("enable", ()))
    for delta in _DELTAS:
        for i, name in enumerate(entry.get(delta, ())):
            where = f"{key}.{delta}[{i}]"
            feature = _resolve(name, where, path, out)
            if feature is None:
                continue
            present = bool(state[feature.mask] & feature.value)
            if delta == "disable" and name in enabled:
                out.errors.append(Problem(path, where, f"{name} is both enabled and disabled: keep one"))
            elif delta == "enable" and present:
                out.errors.append(Problem(path, where, f"{feature.name} is already enabled in v{prev_version}: remove it"))
            elif delta == "disable" and not present:
                out.errors.append(Problem(path, where, f"{feature.name} is not enabled in v{prev_version}: remove it"))
            elif delta == "enable":
                state[feature.mask] |= feature.value
            else:
                state[feature.mask] &= ~feature.value


def _resolve(name: str, where: str, path: Path, out: Expansion) -> catalog.Feature | None:
    feature = catalog.find(name)
    if feature is None:
        hint = suggestions_hint(catalog.suggest(name))
        out.errors.append(Problem(path, where, f"unknown feature {name}{hint}; "
                                  "`vucompat features` lists the known names"))
    elif feature.name != name:
        out.warnings.append(Problem(path, where, f"{name} is the old name of {feature.name}: use the new name"))
    return feature


def _check_version_order(entry: Mapping[str, Any], index: int, previous: Mapping[str, Any] | None,
                         seen: Mapping[str, int], path: Path, out: Expansion) -> None:
    version = entry["version"]
    longest = max((len(run) for run in re.findall(r"[0-9]+", version)), default=0)
    if longest > MAX_VERSION_DIGITS:
        out.errors.append(Problem(path, f"mode[{index}].version",
                                  f"a number of {longest} digits in the version: at most {MAX_VERSION_DIGITS} "
                                  "digits per number (a version is e.g. 3.1.0 or 3.1.0-2-deb12u1)"))
    if entry["released"] < EARLIEST_RELEASE:
        out.errors.append(Problem(path, f"mode[{index}].released",
                                  f"{entry['released'].isoformat()} is before {EARLIEST_RELEASE.isoformat()}: "
                                  "a typo (vhost-user dates from 2014); write the date the "
                                  "release was published"))
    if version in seen:
        out.errors.append(Problem(path, f"mode[{index}].version",
                                  f"version {version} is listed twice (first at mode[{seen[version]}]): "
                                  "give each version once"))
        return
    if previous is None:
        return
    released: date = entry["released"]
    before: date = previous["released"]
    if released < before or (released == before and natural_key(version) <= natural_key(previous["version"])):
        out.errors.append(Problem(path, f"mode[{index}].released",
                                  f"v{version} ({released}) is not newer than the version before it, "
                                  f"v{previous['version']} ({before}): list versions oldest first, "
                                  "each released after the one before"))


def _check_requirements(state: Mapping[str, int], key: str, version: str, path: Path, out: Expansion,
                        reported: set[tuple[str, tuple[str, ...]]]) -> None:
    for feature, group in catalog.unmet_requirements(state["virtio"], state["protocol"]):
        if (feature.name, group) in reported:
            continue  # inherited from an earlier version: said once, where it appeared
        reported.add((feature.name, group))
        needs = " or ".join(group)
        if feature.requirement_breaks_guest:
            out.errors.append(Problem(path, key, f"v{version}: {feature.name} requires {needs}; guests refuse "
                                      f"such a device: enable {needs} or disable {feature.name}"))
        else:
            out.warnings.append(Problem(path, key, f"v{version}: {feature.name} is offered without {needs} "
                                        "(the spec requires it; guests ignore the orphan bit)"))
    mq = catalog.lookup("VIRTIO_NET_F_MQ").value
    if state["max_queue_pairs"] > 1 and not state["virtio"] & mq and ("max_queue_pairs", ()) not in reported:
        reported.add(("max_queue_pairs", ()))
        out.warnings.append(Problem(path, key, f"v{version}: max_queue_pairs is {state['max_queue_pairs']} "
                                    "without VIRTIO_NET_F_MQ: guests will use one queue pair"))
