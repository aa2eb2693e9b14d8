"""The set of modes a host (or the search path) defines, as a value."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Mapping

from vucompat.core.errors import Problem, UnknownModeError
from vucompat.core.mode import RECOMMENDED_SUFFIX, Capabilities, Mode, recommended

if TYPE_CHECKING:
    from vucompat.core.lock import Erratum


@dataclass(frozen=True)
class Lineage:
    """Where a lineage came from."""

    name: str
    summary: str
    #: the file that won (first in the search path)
    source: str
    #: later files of the same lineage that it shadows
    shadowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModeSet:
    """A set of expanded modes by name (a host's, or the search path's), plus where they came from."""

    modes: Mapping[str, Mode]
    lineages: Mapping[str, Lineage] = field(default_factory=dict)
    #: non-fatal findings of validation (lint prints them)
    warnings: tuple[Problem, ...] = ()
    #: a description of where the modes came from, for messages
    where: str = "the compat tables"
    #: errata of the released modes (from each directory's released.lock), oldest first
    errata: tuple["Erratum", ...] = ()

    def expand(self, name: str) -> Mode:
        """Return the expanded mode `name`; `<mode>+recommended` is derived on demand.

        Raises UnknownModeError with the closest names.
        """
        base_name = name.removesuffix(RECOMMENDED_SUFFIX)
        mode = self.modes.get(base_name)
        if mode is None:
            from difflib import get_close_matches  # lazy: only an unknown name needs it

            close = get_close_matches(base_name, list(self.modes), n=3, cutoff=0.6)
            raise UnknownModeError(name=name, suggestions=close, where=self.where)
        return recommended(mode) if name.endswith(RECOMMENDED_SUFFIX) else mode

    @cached_property
    def newest_first(self) -> list[Mode]:
        """Every mode, newest first (released date, then name)."""
        return sorted(self.modes.values(), key=lambda m: m.order_key, reverse=True)


@dataclass(frozen=True)
class Host:
    """A host as the core sees it: the modes it defines and what its backend offers."""

    name: str
    modeset: ModeSet
    #: None: the backend is assumed to offer everything its modes need
    capabilities: Capabilities | None = None
