"""Writing TOML values: the one place that quotes strings for the files vucompat
writes (table entries, released.lock)."""

from __future__ import annotations

from typing import Sequence


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
