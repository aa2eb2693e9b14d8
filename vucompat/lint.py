"""Lint for packagers: strict validation, warnings where the spec is merely bent,
and the released.lock check ("a released mode's meaning never changes").

The lock (`released.lock`, TOML, beside the tables) records each released mode's
digest and its expanded ABI by name, so a change is reported feature by feature.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import catalog
from .compare import compare
from .errors import Problem, TableError
from .mode import LIMITS, Abi, Mode
from .tables import read_dirs, load_registry

LOCK_FILE = "released.lock"

_LOCK_HEADER = """\
# vucompat released.lock: the released modes of the tables in this directory.
# Each entry pins a mode's digest and its expanded ABI. Released modes are never
# edited: `vucompat lint` fails when a table changes one. New entries are added by
# `vucompat lint --update-lock DIR` at release time; existing ones are never changed.
"""


@dataclass
class LintReport:
    """What lint found; `errors` fail the lint, `warnings` only with --strict."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    #: modes checked against a lock
    checked: int = 0

    def failed(self, strict: bool = False) -> bool:
        return bool(self.errors or (strict and self.warnings))

    def as_dict(self) -> dict[str, Any]:
        return {"errors": [p.as_dict() for p in self.errors], "warnings": [p.as_dict() for p in self.warnings],
                "released_modes_checked": self.checked}


def lint(dirs: Sequence[Path]) -> LintReport:
    """Validate the tables of `dirs` and check each directory's released.lock."""
    report = LintReport()
    files, problems = read_dirs(dirs)
    report.errors += problems
    report.warnings += [w for t in files for w in t.warnings]
    if not problems:
        try:
            load_registry(dirs)  # shadowing conflicts across directories
        except TableError as err:
            report.errors += err.problems
    for directory in dirs:
        lock_path = directory / LOCK_FILE
        if lock_path.exists():
            modes = {m.name: m for t in files if t.path.parent == directory for m in t.modes}
            _check_lock(lock_path, modes, report)
    return report


def read_lock(path: Path) -> dict[str, tuple[str, Abi]]:
    """Return {mode name: (recorded digest, recorded ABI)}; raise TableError."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise TableError(problems=[Problem(path, "", f"cannot read the lock: {err}")]) from None
    out = {}
    for name, entry in data.get("modes", {}).items():
        try:
            abi = Abi(virtio=catalog.names_to_mask(entry["virtio_features"], "virtio"),
                      protocol=catalog.names_to_mask(entry["protocol_features"], "protocol"),
                      **{k: int(entry[k]) for k in LIMITS})
            out[name] = (str(entry["digest"]), abi)
        except Exception as err:  # a malformed entry: say which
            raise TableError(problems=[Problem(path, f'modes."{name}"', f"malformed lock entry: {err}")]) from None
    return out


def update_lock(directory: Path) -> list[str]:
    """Add every mode of `directory`'s tables that the lock lacks; return their names.

    Existing entries are kept as they are. Raises TableError when the tables are
    invalid or a locked mode changed (run lint first).
    """
    report = lint([directory])
    if report.errors:
        raise TableError(problems=report.errors)
    lock_path = directory / LOCK_FILE
    locked = read_lock(lock_path) if lock_path.exists() else {}
    files, _ = read_dirs([directory])
    new = [m for t in files for m in t.modes if m.name not in locked]
    text = lock_path.read_text() if lock_path.exists() else _LOCK_HEADER
    for mode in new:
        text += _lock_entry(mode)
    if new:
        lock_path.write_text(text)
    return [m.name for m in new]


def _lock_entry(mode: Mode) -> str:
    def names(values: list[str]) -> str:
        return "[" + ", ".join(f'"{v}"' for v in values) + "]"

    lines = [f'\n[modes."{mode.name}"]', f'digest = "{mode.digest}"',
             f"virtio_features = {names(mode.abi.virtio_features)}",
             f"protocol_features = {names(mode.abi.protocol_features)}"]
    lines += [f"{k} = {mode.abi.limit(k)}" for k in LIMITS]
    return "\n".join(lines) + "\n"


def _check_lock(lock_path: Path, modes: dict[str, Mode], report: LintReport) -> None:
    try:
        locked = read_lock(lock_path)
    except TableError as err:
        report.errors += err.problems
        return
    lineages = {m.lineage for m in modes.values()}
    for name, (digest, abi) in locked.items():
        key = f'modes."{name}"'
        if abi.digest != digest:
            report.errors.append(Problem(lock_path, key, "the entry's digest does not match its contents: "
                                         "the lock was edited by hand; restore it from version control"))
            continue
        mode = modes.get(name)
        if mode is None:
            if name.rsplit(".v", 1)[0] in lineages:
                report.errors.append(Problem(lock_path, key, f"released mode {name} is no longer defined: "
                                             "released modes stay; restore it"))
            continue
        report.checked += 1
        if mode.digest != digest:
            what = ", ".join(d.describe() for d in compare(abi, mode.abi).responsible)
            report.errors.append(Problem(Path(mode.source), _mode_key(mode),
                                         f"released mode {name} changed since its release: {what}; released "
                                         "modes are never edited: restore it and bump the version instead"))
    for name, mode in modes.items():
        if name not in locked:
            report.warnings.append(Problem(Path(mode.source), _mode_key(mode),
                                           f"{name} is not in {lock_path.name} yet: run `vucompat lint "
                                           f"--update-lock {lock_path.parent}` when you release it"))


def _mode_key(mode: Mode) -> str:
    return f'mode[version="{mode.version}"]'
