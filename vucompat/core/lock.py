"""released.lock: the released modes of a tables directory, and their errata.

A released mode's meaning never changes: the lock pins each one's digest and
expanded ABI. When a released definition was wrong (it claimed a feature the backend
it names does not offer), the correction is an **erratum**: an explicit entry that
names the mode, the digest it supersedes, the digest it corrects it to, what changed
by name, why, and the evidence. The lock entry then holds the corrected contents,
and every erratum can be undone on paper: undoing the newest erratum's changes from
the entry gives the superseded digest, and so on back to the released one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, Mapping, Sequence

from vucompat.core import catalog
from vucompat.core.errors import Problem, TableError
from vucompat.core.mode import LIMITS, Abi, Mode
from vucompat.core.tomlwrite import string, strings

LOCK_FILE = "released.lock"

LOCK_HEADER = """\
# vucompat released.lock: the released modes of the tables in this directory.
# Each entry pins a mode's digest and its expanded ABI. Released modes are never
# edited: `vucompat lint` fails when a table changes one. New entries are added by
# `vucompat lint --update-lock DIR` at release time; existing ones change only through
# an erratum (`vucompat lint --erratum MODE --reason ... --evidence ... DIR`), listed
# at the end: the released definition was wrong, here is the correction and the proof.
"""

_LIMIT_CHANGE = re.compile(r"^(\w+) (\d+) -> (\d+)$")


@dataclass(frozen=True)
class Erratum:
    """A correction of a released mode's definition."""

    mode: str
    #: the digest of the definition it corrects
    superseded: str
    #: the digest of the corrected definition
    digest: str
    date: date
    #: what changed, superseded -> corrected, as compare() describes it:
    #: "-NAME" (removed), "+NAME" (added), "max_queue_pairs 128 -> 32768"
    changes: tuple[str, ...]
    reason: str
    #: where the truth is written: evidence-file facts, upstream file/tag/line
    evidence: tuple[str, ...]

    def describe(self) -> str:
        return (f"erratum {self.date.isoformat()} to {self.mode}: {self.superseded[:19]}... -> "
                f"{self.digest[:19]}... ({', '.join(self.changes)}): {self.reason}")

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "superseded": self.superseded, "digest": self.digest,
                "date": self.date.isoformat(), "changes": list(self.changes), "reason": self.reason,
                "evidence": list(self.evidence)}


@dataclass(frozen=True)
class Lock:
    """A parsed released.lock."""

    path: Path
    #: mode name -> (recorded digest, recorded ABI), in file order
    modes: Mapping[str, tuple[str, Abi]]
    #: oldest first
    errata: tuple[Erratum, ...] = ()

    def errata_of(self, name: str) -> tuple[Erratum, ...]:
        return tuple(e for e in self.errata if e.mode == name)


def read_lock(path: Path, content: bytes | None = None) -> Lock:
    """Parse `path` (or its `content`, already read); raise TableError naming the entry of any problem."""
    from vucompat.core.tomlfile import load  # lazy: a cache hit of the tables needs this module (Erratum) but no TOML

    data, problem = load(path, content)
    if data is None:
        assert problem is not None
        raise TableError(problems=[problem])
    modes: dict[str, tuple[str, Abi]] = {}
    for name, entry in dict(data.get("modes", {})).items():
        try:
            abi = Abi(virtio=catalog.names_to_mask(entry["virtio_features"], "virtio"),
                      protocol=catalog.names_to_mask(entry["protocol_features"], "protocol"),
                      **{k: int(entry[k]) for k in LIMITS})
            modes[name] = (str(entry["digest"]), abi)
        except Exception as err:  # a malformed entry: say which
            raise TableError(problems=[Problem(path, f'modes."{name}"', f"malformed lock entry: {err}")]) from None
    errata = []
    for i, entry in enumerate(data.get("errata", [])):
        try:
            errata.append(Erratum(mode=str(entry["mode"]), superseded=str(entry["superseded"]),
                                  digest=str(entry["digest"]), date=_date(entry["date"]),
                                  changes=tuple(str(c) for c in entry["changes"]), reason=str(entry["reason"]),
                                  evidence=tuple(str(e) for e in entry["evidence"])))
        except (KeyError, TypeError, ValueError) as err:
            raise TableError(problems=[Problem(path, f"errata[{i}]", f"malformed erratum: missing or bad {err}: "
                                               "an erratum has mode, superseded, digest, date, changes, "
                                               "reason and evidence")]) from None
    return Lock(path, modes, tuple(errata))


def _date(value: Any) -> date:
    if not isinstance(value, date):
        raise ValueError("date (write a TOML date, unquoted)")
    return value


def check_errata(lock: Lock) -> list[Problem]:
    """Return the problems of `lock`'s errata: each must name a locked mode, chain
    from the released digest to the entry's, and undo to the digest it supersedes."""
    problems = []
    for name in sorted({e.mode for e in lock.errata}):
        chain = lock.errata_of(name)
        key = f'errata[mode="{name}"]'
        if name not in lock.modes:
            problems.append(Problem(lock.path, key, f"an erratum for {name}, which the lock does not hold"))
            continue
        digest, abi = lock.modes[name]
        for erratum in reversed(chain):
            if erratum.digest != digest:
                problems.append(Problem(lock.path, key, f"the erratum of {erratum.date} corrects to "
                                        f"{erratum.digest}, but the definition after it is {digest}: "
                                        "errata must chain, oldest first"))
                break
            try:
                abi = undo(abi, erratum.changes)
            except ValueError as err:
                problems.append(Problem(lock.path, key, str(err)))
                break
            if abi.digest != erratum.superseded:
                problems.append(Problem(lock.path, key, f"undoing the changes of the erratum of {erratum.date} "
                                        f"gives {abi.digest}, not the superseded {erratum.superseded}: "
                                        "the changes do not say what the erratum changed"))
                break
            digest = erratum.superseded
    return problems


def undo(abi: Abi, changes: Sequence[str]) -> Abi:
    """Return `abi` with `changes` (superseded -> corrected) undone; raise ValueError
    for a change that does not parse or does not hold."""
    masks = {"virtio": abi.virtio, "protocol": abi.protocol}
    limits = {name: abi.limit(name) for name in LIMITS}
    for change in changes:
        limit = _LIMIT_CHANGE.match(change)
        if limit and limit.group(1) in LIMITS:
            name, old, new = limit.group(1), int(limit.group(2)), int(limit.group(3))
            if limits[name] != new:
                raise ValueError(f"erratum change {change!r}: the corrected {name} is {limits[name]}")
            limits[name] = old
            continue
        sign, feature_name = change[:1], change[1:]
        feature = catalog.find(feature_name)
        if sign not in "+-" or not sign or feature is None:
            raise ValueError(f"erratum change {change!r}: write -NAME, +NAME or 'LIMIT OLD -> NEW'")
        has = bool(masks[feature.mask] & feature.value)
        if has != (sign == "+"):
            raise ValueError(f"erratum change {change!r}: the corrected definition "
                             f"{'lacks' if sign == '+' else 'has'} {feature.name}")
        masks[feature.mask] ^= feature.value
    return replace(abi, virtio=masks["virtio"], protocol=masks["protocol"], **limits)


def superseded_digests(errata: Sequence[Erratum], name: str, digest: str) -> dict[str, Erratum]:
    """Return {superseded digest: the erratum that corrected it} for every definition of
    `name` that the errata chain leads from to `digest`."""
    out: dict[str, Erratum] = {}
    current = digest
    for erratum in reversed([e for e in errata if e.mode == name]):
        if erratum.digest == current:
            out[erratum.superseded] = erratum
            current = erratum.superseded
    return out


def new_erratum(mode: Mode, locked: Abi, today: date, reason: str, evidence: Sequence[str]) -> Erratum:
    """Return the erratum that corrects the released `locked` definition to `mode`."""
    from vucompat.core.compare import compare  # lazy: reading a lock (or a cached Erratum) needs no compare

    changes = tuple(d.describe() for d in compare(locked, mode.abi).responsible)
    return Erratum(mode.name, locked.digest, mode.digest, today, changes, reason, tuple(evidence))


def render_lock(lock: Lock) -> str:
    """Return the lock file's text: the header, each entry in order, then the errata."""
    text = LOCK_HEADER
    for name, (_digest, abi) in lock.modes.items():
        text += entry_text(name, abi)
    for erratum in lock.errata:
        text += "\n[[errata]]\n" + "\n".join([
            f"mode = {string(erratum.mode)}", f"superseded = {string(erratum.superseded)}",
            f"digest = {string(erratum.digest)}", f"date = {erratum.date.isoformat()}",
            f"changes = {strings(erratum.changes)}", f"reason = {string(erratum.reason.replace(chr(10), ' '))}",
            f"evidence = {strings(erratum.evidence)}"]) + "\n"
    return text


def entry_text(name: str, abi: Abi) -> str:
    """Return one `[modes."NAME"]` entry."""
    lines = [f"\n[modes.{string(name)}]", f"digest = {string(abi.digest)}",
             f"virtio_features = {strings(abi.virtio_features)}",
             f"protocol_features = {strings(abi.protocol_features)}"]
    lines += [f"{k} = {abi.limit(k)}" for k in LIMITS]
    return "\n".join(lines) + "\n"
