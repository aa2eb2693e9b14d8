"""Writing TOML: the one place that quotes strings for the files vucompat writes
(table entries, released.lock), and a mode's `[[mode]]` entry."""

from __future__ import annotations

import re
from datetime import date
from typing import Mapping, Sequence

from vucompat.core import catalog
from vucompat.core.mode import LIMITS, Abi


def string(text: str) -> str:
    """`text` as a TOML basic string (JSON's escapes are TOML's; DEL is escaped too)."""
    import json

    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def strings(values: Sequence[str], inline: bool = True) -> str:
    """`values` as a TOML array of strings: on one line, or one value per line."""
    if not values:
        return "[]"
    if inline:
        return "[" + ", ".join(string(v) for v in values) + "]"
    return "[\n" + "".join(f"    {string(v)},\n" for v in values) + "]"


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else string(key)


def mode_entry_toml(abi: Abi, version: str, released: date, provenance: Mapping[str, str] | None = None,
                    note: str = "", comments: Sequence[str] = (), limit_comments: Mapping[str, str] | None = None,
                    previous: Abi | None = None) -> str:
    """A ready-to-paste `[[mode]]` entry of a table file (docs/tables.md) for `abi`.

    Without `previous`: the complete entry a lineage's first version needs (every
    feature by name, every limit). With `previous` (the ABI of the lineage's last
    version): the delta a later version is written as (`enable`/`disable`, and
    only the limits that change). `comments` go above the entry as `# ` lines,
    `limit_comments` (limit name -> text) after a limit's value. The entry reads
    back (tables.read_table, under a `lineage`/`summary` header) as exactly `abi`."""
    lines = [f"# {line}".rstrip() for comment in comments for line in comment.splitlines()]
    lines += ["[[mode]]", f"version = {string(version)}", f"released = {released.isoformat()}"]
    if provenance:
        lines.append("provenance = { " + ", ".join(f"{_toml_key(k)} = {string(v)}"
                                                   for k, v in provenance.items()) + " }")
    if previous is None:
        lines += [f"virtio_features = {strings(abi.virtio_features, inline=False)}",
                  f"protocol_features = {strings(abi.protocol_features, inline=False)}"]
        limits = list(LIMITS)
    else:
        enable = catalog.mask_to_names(abi.virtio & ~previous.virtio, "virtio") + \
            catalog.mask_to_names(abi.protocol & ~previous.protocol, "protocol")
        disable = catalog.mask_to_names(previous.virtio & ~abi.virtio, "virtio") + \
            catalog.mask_to_names(previous.protocol & ~abi.protocol, "protocol")
        lines += [f"{key} = {strings(names, inline=len(names) <= 3)}"
                  for key, names in (("enable", enable), ("disable", disable)) if names]
        limits = [name for name in LIMITS if abi.limit(name) != previous.limit(name)]
    for name in limits:
        comment = (limit_comments or {}).get(name)
        lines.append(f"{name} = {abi.limit(name)}" + (f"  # {comment}" if comment else ""))
    if note:
        lines.append(f"note = {string(note)}")
    return "\n".join(lines) + "\n"
