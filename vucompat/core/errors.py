"""One exception base for every error a user can cause.

Each error class has a message template filled from structured fields, so callers
(the CLI, and later the Nova API) can both print a sentence and read the fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


class VucompatError(Exception):
    """Base of all vucompat errors: `str(err)` is the whole user-facing message.

    Subclasses set `template` (str.format fields) and pass the fields as keywords;
    the fields stay available as attributes and in `fields`.
    """

    template = "{message}"

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)
        super().__init__(self.render())

    def render(self) -> str:
        """Return the message built from the template and the fields."""
        return self.template.format(**self.fields)


class UsageError(VucompatError):
    """Bad input that is not a table file: an argument, an environment value."""

    template = "{message}"


class UnknownFeatureError(VucompatError):
    """A feature name the catalog does not know (or the wrong mask for it)."""

    def render(self) -> str:
        name = self.fields["name"]
        wrong = self.fields.get("wrong_mask")
        if wrong:
            where = "protocol_features" if wrong == "protocol" else "virtio_features"
            return f"{name} is a {wrong} feature: list it under {where}"
        hint = suggestions_hint(self.fields.get("suggestions") or [])
        return f"unknown feature {name}{hint}; `vucompat features` lists the known names"


class UnknownModeError(VucompatError):
    """A mode name that is not defined where it was looked up."""

    def render(self) -> str:
        hint = suggestions_hint(self.fields.get("suggestions") or [])
        where = self.fields.get("where") or "the compat tables"
        return f"unknown mode {self.fields['name']} in {where}{hint}; `vucompat list` shows the known modes"


@dataclass(frozen=True)
class Problem:
    """One finding in a table file: where it is, what is wrong, what to do."""

    #: the file it was found in
    path: Path
    #: the key path inside the file, e.g. mode[2].enable[0]; "" for the whole file
    key: str
    #: what is wrong, and what to do about it
    message: str

    def __str__(self) -> str:
        shown = self.path
        if shown.is_absolute() and shown.is_relative_to(Path.cwd()):
            shown = shown.relative_to(Path.cwd())
        where = f"{shown}: {self.key}" if self.key else str(shown)
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"file": str(self.path), "key": self.key, "message": self.message}


class TableError(VucompatError):
    """One or more table (or capabilities) files are invalid: nothing was loaded.

    Fields: problems (a list of Problem), what (optional: what was being read)."""

    def render(self) -> str:
        problems: Sequence[Problem] = self.fields["problems"]
        what = self.fields.get("what", "compat tables")
        head = f"invalid {what} ({len(problems)} problem{'s' if len(problems) != 1 else ''}); nothing was loaded:"
        return "\n".join([head] + [f"  {p}" for p in problems])


def suggestions_hint(suggestions: Sequence[str]) -> str:
    """Return ' (did you mean A or B?)' for a non-empty list, else ''."""
    if not suggestions:
        return ""
    return f" (did you mean {' or '.join(suggestions)}?)"
