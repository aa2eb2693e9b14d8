"""A mode's name where other systems hold it: a Placement custom trait
(`^CUSTOM_[A-Z0-9_]+$`, at most 255 characters) and a Kubernetes node label
(`vhostuser-compat.vucompat.io/<name>`: the name part [A-Za-z0-9._-], at most 63
characters, a letter or digit at each end). Pure.

A name of the natural scheme keeps the trait and label it always had. A name with a
character those systems do not take ('+', '~', '^', from a Debian or RPM version) or
with '__' (an RPM version may hold it) is written with escapes first: '_' -> '__u',
'+' -> '__p', '~' -> '__t', '^' -> '__c' (so `v3.1.0-2+deb12u1` -> `v3.1.0-2__pdeb12u1`).
A natural name never holds '__' (single separators; a lineage has no '_'), so escaped
names never meet natural ones, and an escaped name reads back to one name only: labels
are unique. A name too long for either is cut and ends in '__h' and 10 characters of
its sha256 (base32). Traits are upper case, with '.', '-' and '_' all '_', as they
always were: names that differ only there or in case share a trait, so a load refuses
a search path whose modes would (clashes()).
"""

from __future__ import annotations

import re
from typing import Iterable

#: the prefix of a mode's Placement custom trait
TRAIT_PREFIX = "CUSTOM_VHOSTUSER_COMPAT_"
MAX_TRAIT = 255
#: the Kubernetes label prefix of the modes a node can run: <prefix>/<mode name>=true
LABEL_PREFIX = "vhostuser-compat.vucompat.io"
MAX_LABEL_NAME = 63

_ESCAPES = {"_": "u", "+": "p", "~": "t", "^": "c"}
_NOT_TRAIT = re.compile(r"[^A-Z0-9]")
_HASHED = 10


def escaped(name: str) -> str:
    """`name` with '_', '+', '~' and '^' escaped, when it holds '+', '~', '^' or '__'
    (else `name` itself)."""
    if not any(c in name for c in "+~^") and "__" not in name:
        return name
    return "".join(f"__{_ESCAPES[c]}" if c in _ESCAPES else c for c in name)


def placement_trait(mode_name: str) -> str:
    """The Placement custom trait of a mode: CUSTOM_VHOSTUSER_COMPAT_<NAME>, where
    <NAME> is the (escaped) name in upper case with every character but A-Z and 0-9 as
    '_'; cut, with a hash of the name, to 255 characters."""
    body = _NOT_TRAIT.sub("_", escaped(mode_name).upper())
    trait = TRAIT_PREFIX + body
    if len(trait) <= MAX_TRAIT:
        return trait
    return trait[:MAX_TRAIT - _HASHED - 3] + "__H" + _digest(mode_name).upper()


def node_label(mode_name: str) -> str:
    """A Kubernetes node label key for a mode: <prefix>/<escaped name>, cut with a hash
    of the name when longer than 63 characters."""
    name = escaped(mode_name)
    if len(name) > MAX_LABEL_NAME:
        name = name[:MAX_LABEL_NAME - _HASHED - 3] + "__h" + _digest(mode_name)
    return f"{LABEL_PREFIX}/{name}"


def clashes(names: Iterable[str]) -> list[tuple[str, str, str]]:
    """The names that share a trait or a label with an earlier one of `names`: (name,
    the earlier name, what they share: "Placement trait X" or "node label X")."""
    found: list[tuple[str, str, str]] = []
    seen: dict[str, str] = {}
    for name in names:
        for what in (f"Placement trait {placement_trait(name)}", f"node label {node_label(name)}"):
            first = seen.setdefault(what, name)
            if first != name:
                found.append((name, first, what))
                break
    return found


def _digest(name: str) -> str:
    import base64
    import hashlib

    return base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:_HASHED].lower()
