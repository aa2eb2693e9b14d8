"""Expansion of a lineage: apply each version's delta to the one before, and check
the meaning of every version (the semantic half of table validation).

Pure: takes the schema-valid entries of one table file, returns modes and problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Mapping, Sequence

from vucompat.core import catalog, versions
from vucompat.core.errors import Problem, suggestions_hint
from vucompat.core.mode import LIMITS, Abi, Mode

#: the earliest release date accepted: vhost-user dates from 2014 (QEMU 2.1), so a date
#: before 1990 is a typo (0001-01-01, 1023 for 2023) and would sort the mode first for
#: ever. Not 2014: generated test and bench tables start in 2000
EARLIEST_RELEASE = date(1990, 1, 1)

_FULL_LISTS = ("virtio_features", "protocol_features")
_DELTAS = ("enable", "disable")


@dataclass
class Expansion:
    """The modes of one lineage, oldest first, or the problems that prevent them."""

    modes: list[Mode] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def expand_lineage(lineage: str, entries: Sequence[Mapping[str, Any]], path: Path,
                   scheme: str = versions.NATURAL) -> Expansion:
    """Expand the `[[mode]]` entries of the table file at `path` (already schema-valid,
    versions valid under `scheme`, the table's version_scheme).

    Returns every mode when there is no error; with errors, `modes` is empty.
    """
    out = Expansion()
    state: dict[str, int] | None = None
    seen = _Seen()
    reported: set[tuple[str, tuple[str, ...]]] = set()

    for index, entry in enumerate(entries):
        key = f"mode[{index}]"
        version = entry["version"]
        _check_version_order(entry, index, seen, scheme, path, out)

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
                name=f"{lineage}.v{versions.name_part(version, scheme)}",
                lineage=lineage,
                version=version,
                released=entry["released"],
                abi=Abi(**state),  # type: ignore[arg-type]
                provenance=dict(entry.get("provenance", {})),
                note=entry.get("note", ""),
                source=str(path),
                version_scheme=scheme,
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


class _Seen:
    """The versions of a lineage met so far, by version, by the name each gives and by
    its sort key (each to its first index), and the last entry."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.names: dict[str, int] = {}
        self.keys: dict[Any, int] = {}
        self.last: Mapping[str, Any] | None = None
        self.last_key: Any = None


def _check_version_order(entry: Mapping[str, Any], index: int, seen: _Seen, scheme: str, path: Path,
                         out: Expansion) -> None:
    """The release date's floor; each version once (by name, and by the scheme's order:
    dpkg's 1.0 and 1.0-0 are one version); each newer than the one before it: released
    later, or on the same date and later in the scheme's order. Records `entry` in `seen`."""
    version = entry["version"]
    if entry["released"] < EARLIEST_RELEASE:
        out.errors.append(Problem(path, f"mode[{index}].released",
                                  f"{entry['released'].isoformat()} is before {EARLIEST_RELEASE.isoformat()}: "
                                  "a typo (vhost-user dates from 2014); write the date the "
                                  "release was published"))
    name = versions.name_part(version, scheme)
    key = versions.sort_key(version, scheme)
    previous, previous_key = seen.last, seen.last_key
    first = {"version": seen.versions.setdefault(version, index), "name": seen.names.setdefault(name, index),
             "key": seen.keys.setdefault(key, index) if scheme != versions.NATURAL else index}
    seen.last, seen.last_key = entry, key
    where = f"mode[{index}].version"
    if first["version"] != index:
        out.errors.append(Problem(path, where, f"version {version} is listed twice (first at "
                                  f"mode[{first['version']}]): give each version once"))
        return
    if first["name"] != index:
        other = next(v for v, i in seen.versions.items() if i == first["name"])
        out.errors.append(Problem(path, where, f"version {version} gives the mode name v{name}, as {other} "
                                  f"(mode[{first['name']}]) does: an epoch is not part of a mode's name (as it is "
                                  "not of a package's file name); give one of them another version"))
        return
    if first["key"] != index:
        other = next(v for v, i in seen.versions.items() if i == first["key"])
        manager = "dpkg" if scheme == versions.DEBIAN else "rpm"
        out.errors.append(Problem(path, where, f"version {version} is the same version as {other} "
                                  f"(mode[{first['key']}]) to {manager}: give each version once"))
        return
    if previous is None:
        return
    released: date = entry["released"]
    before: date = previous["released"]
    if released < before or (released == before and key <= previous_key):
        order = "" if scheme == versions.NATURAL else f" ({'dpkg' if scheme == versions.DEBIAN else 'rpm'}'s order)"
        out.errors.append(Problem(path, f"mode[{index}].released",
                                  f"v{version} ({released}) is not newer than the version before it, "
                                  f"v{previous['version']} ({before}){order}: list versions oldest first, "
                                  "each released after the one before (on the same date: in version order)"))


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
