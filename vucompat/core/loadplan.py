"""What loading tables into a registry database would change: pure, so the OVSDB
layer only has to carry the plan out in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from vucompat.core.compare import Difference, compare
from vucompat.core.errors import VucompatError
from vucompat.core.lock import Erratum, superseded_digests
from vucompat.core.mode import Mode


@dataclass(frozen=True)
class Redefinition:
    """A mode name whose contents in the tables differ from the database's."""

    name: str
    #: database as a, tables as b
    differences: tuple[Difference, ...]

    def describe(self) -> str:
        return f"{self.name} ({', '.join(d.describe() for d in self.differences)})"


class RedefinitionError(VucompatError):
    """The tables give a loaded mode other contents: nothing is written."""

    def render(self) -> str:
        items: Sequence[Redefinition] = self.fields["redefinitions"]
        lines = [f"{self.fields['remote']}: refusing to load: {len(items)} mode(s) in the database have "
                 "other contents in the tables (database -> tables); a name means the same thing "
                 "everywhere, so give the new contents a new version. Nothing was written."]
        lines += [f"  {item.describe()}" for item in items]
        return "\n".join(lines)


@dataclass(frozen=True)
class LoadPlan:
    """The changes one load makes."""

    insert: tuple[Mode, ...] = ()
    unchanged: tuple[str, ...] = ()
    #: names the database holds with another digest (the load must be refused)
    redefined: tuple[str, ...] = ()
    prune: tuple[str, ...] = ()
    #: modes --prune would remove but ports still use: name -> port names
    kept_in_use: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: definitions an erratum corrects and no port uses: replaced by the corrected one
    correct: tuple[tuple[Mode, Erratum], ...] = ()
    #: definitions an erratum corrects that ports still use: kept for them, marked
    #: superseded; name -> (erratum, port names)
    superseded_in_use: Mapping[str, tuple[Erratum, tuple[str, ...]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"added": [m.name for m in self.insert], "unchanged": list(self.unchanged),
                "pruned": list(self.prune), "kept_in_use": {k: list(v) for k, v in self.kept_in_use.items()},
                "corrected": [{"name": m.name, "erratum": e.as_dict()} for m, e in self.correct],
                "superseded_in_use": {k: {"erratum": e.as_dict(), "ports": list(p)}
                                      for k, (e, p) in self.superseded_in_use.items()}}


def plan_load(tables: Mapping[str, Mode], database: Mapping[str, str],
              ports_by_mode: Mapping[str, Sequence[str]], prune: bool,
              errata: Sequence[Erratum] = ()) -> LoadPlan:
    """Return the plan for loading `tables` into a database holding `database`
    (mode name -> digest).

    New names are inserted, identical ones (same digest) left alone. A name the
    database holds with a digest that one of `errata` supersedes is corrected when no
    port uses it, and kept (marked superseded) for the ports that do: a running port's
    contract is never rewritten. Any other digest is `redefined` (the caller refuses
    the whole load). With `prune`, database modes the tables no longer define are
    removed unless a port uses them (`ports_by_mode`: mode name -> port names).
    """
    insert, unchanged, redefined, correct = [], [], [], []
    in_use: dict[str, tuple[Erratum, tuple[str, ...]]] = {}
    for name in sorted(tables):
        digest = database.get(name)
        if digest is None:
            insert.append(tables[name])
        elif digest == tables[name].digest:
            unchanged.append(name)
        elif (erratum := superseded_digests(errata, name, tables[name].digest).get(digest)) is not None:
            users = tuple(sorted(ports_by_mode.get(name, ())))
            if users:
                in_use[name] = (erratum, users)
            else:
                correct.append((tables[name], erratum))
        else:
            redefined.append(name)
    gone = sorted(set(database) - set(tables)) if prune else []
    kept = {name: tuple(sorted(ports_by_mode[name])) for name in gone if ports_by_mode.get(name)}
    return LoadPlan(tuple(insert), tuple(unchanged), tuple(redefined),
                    tuple(name for name in gone if name not in kept), kept, tuple(correct), in_use)


def redefinitions(tables: Mapping[str, Mode], loaded: Mapping[str, Mode]) -> tuple[Redefinition, ...]:
    """Describe, by feature name, how the tables change each loaded mode (database as a)."""
    return tuple(Redefinition(name, compare(mode.abi, tables[name].abi).responsible)
                 for name, mode in sorted(loaded.items()))
