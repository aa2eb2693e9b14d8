"""What loading tables into a registry database would change: pure, so the OVSDB
layer only has to carry the plan out in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .compare import Difference, compare
from .errors import VucompatError
from .mode import Mode


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
    redefinitions: tuple[Redefinition, ...] = ()
    prune: tuple[str, ...] = ()
    #: modes --prune would remove but ports still use: name -> port names
    kept_in_use: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"added": [m.name for m in self.insert], "unchanged": list(self.unchanged),
                "pruned": list(self.prune), "kept_in_use": {k: list(v) for k, v in self.kept_in_use.items()}}


def plan_load(tables: Mapping[str, Mode], database: Mapping[str, Mode],
              ports_by_mode: Mapping[str, Sequence[str]], prune: bool) -> LoadPlan:
    """Return the plan for loading `tables` into a database holding `database`.

    New names are inserted, identical ones (same digest) left alone, a name with
    other contents is a redefinition (the caller refuses the whole load). With
    `prune`, database modes the tables no longer define are removed unless a port
    uses them (`ports_by_mode`: mode name -> port names).
    """
    insert, unchanged, redefinitions = [], [], []
    for name in sorted(tables):
        mode = tables[name]
        loaded = database.get(name)
        if loaded is None:
            insert.append(mode)
        elif loaded.digest == mode.digest:
            unchanged.append(name)
        else:
            redefinitions.append(Redefinition(name, compare(loaded.abi, mode.abi).responsible))
    gone = sorted(set(database) - set(tables)) if prune else []
    kept = {name: tuple(sorted(ports_by_mode[name])) for name in gone if ports_by_mode.get(name)}
    return LoadPlan(tuple(insert), tuple(unchanged), tuple(redefinitions),
                    tuple(name for name in gone if name not in kept), kept)
