"""Lint for packagers: strict validation, warnings where the spec is merely bent,
the released.lock check ("a released mode's meaning never changes", except through
a listed erratum), and the evidence check (a mode equals the offer derived from the
upstream code it names).

The lock (`released.lock`, TOML, beside the tables; format in lock.py) records each
released mode's digest and its expanded ABI by name, so a change is reported feature
by feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Sequence

from vucompat.core.compare import compare
from vucompat.core.errors import Problem, TableError, UsageError
from vucompat.core.lock import LOCK_FILE, LOCK_HEADER, Erratum, Lock, check_errata, entry_text, new_erratum, read_lock, \
    render_lock, superseded_digests
from vucompat.core.mode import Mode
from vucompat.core.tables import load_modeset, read_dirs, real_path
from vucompat.core.tomlfile import list_dir

__all__ = ["LOCK_FILE", "LintReport", "lint", "update_lock", "add_erratum", "read_lock"]


@dataclass
class LintReport:
    """What lint found; `errors` fail the lint, `warnings` only with --strict."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    #: modes checked against a lock
    checked: int = 0
    #: errata in force (listed in a lock, consistent, and matched by the tables)
    errata: list[Erratum] = field(default_factory=list)
    #: modes checked against an evidence file
    evidenced: int = 0

    def failed(self, strict: bool = False) -> bool:
        return bool(self.errors or (strict and self.warnings))

    def as_dict(self) -> dict[str, Any]:
        return {"errors": [p.as_dict() for p in self.errors], "warnings": [p.as_dict() for p in self.warnings],
                "released_modes_checked": self.checked, "errata": [e.as_dict() for e in self.errata],
                "modes_checked_against_evidence": self.evidenced}


def lint(dirs: Sequence[Path], search: Sequence[Path] | None = None) -> LintReport:
    """Validate the tables of `dirs`, check each directory's released.lock and its
    errata, and each evidence file against the modes it names.

    `search`: the search path a load would use with `dirs` (search_path(dirs)): lint
    then also reports what loading it would refuse (a name the shipped tables, or
    $VUCOMPAT_TABLES, define with other contents; a broken file there), so lint and
    load agree."""
    from vucompat.core.evidence import check_evidence_dir

    report = LintReport()
    files, problems = read_dirs(dirs)
    report.errors += problems
    report.warnings += [w for t in files for w in t.warnings]
    if not problems:
        try:
            load_modeset(dirs)  # shadowing conflicts across directories
        except TableError as err:
            report.errors += err.problems
    if search is not None and [real_path(d) for d in search] != [real_path(d) for d in dirs]:
        try:
            load_modeset(search)
        except TableError as err:
            report.errors += err.problems
    for directory in dirs:
        modes = {m.name: m for t in files if t.path.parent == directory for m in t.modes}
        lock_path = directory / LOCK_FILE
        if LOCK_FILE in list_dir(directory)[0]:  # (as the load sees it; a directory it cannot list is an error)
            _check_lock(lock_path, modes, report)
        if not problems:
            checked, evidence_problems = check_evidence_dir(directory, modes)
            report.evidenced += checked
            report.errors += evidence_problems
    report.errors = list(dict.fromkeys(report.errors))  # a problem two checks found is said once
    return report


def update_lock(directory: Path) -> list[str]:
    """Add every mode of `directory`'s tables that the lock lacks; return their names.

    Existing entries are kept as they are. Raises TableError when the tables are
    invalid or a locked mode changed (run lint first).
    """
    report = lint([directory])
    if report.errors:
        raise TableError(problems=report.errors)
    lock_path = directory / LOCK_FILE
    locked = read_lock(lock_path).modes if lock_path.exists() else {}
    files, _ = read_dirs([directory])
    new = [m for t in files for m in t.modes if m.name not in locked]
    text = lock_path.read_text() if lock_path.exists() else LOCK_HEADER
    for mode in new:
        text += entry_text(mode.name, mode.abi)
    if new:
        lock_path.write_text(text)
    return [m.name for m in new]


def add_erratum(directory: Path, name: str, reason: str, evidence: Sequence[str],
                today: date | None = None) -> Erratum:
    """Correct the released mode `name` in `directory`'s lock to what its table now
    defines, recording an erratum (what changed, `reason`, `evidence`); return it.

    Raises UsageError when there is nothing to correct or no reason/evidence is given,
    and TableError when the tables or the lock are invalid.
    """
    if not reason.strip() or not [e for e in evidence if e.strip()]:
        raise UsageError(message="an erratum needs --reason and at least one --evidence (the upstream file, "
                         "tag and line, or an evidence-file fact, that shows the released definition was wrong)")
    lock_path = directory / LOCK_FILE
    if not lock_path.exists():
        raise UsageError(message=f"{directory} has no {LOCK_FILE}: only released modes take errata")
    files, problems = read_dirs([directory])
    if problems:
        raise TableError(problems=problems)
    lock = read_lock(lock_path)
    mode = next((m for t in files for m in t.modes if m.name == name), None)
    if name not in lock.modes or mode is None:
        raise UsageError(message=f"{name} is not a released mode of {directory} (it must be in its table and "
                         f"in {LOCK_FILE})")
    locked_digest, locked_abi = lock.modes[name]
    if mode.digest == locked_digest:
        raise UsageError(message=f"{name}: the table defines what the lock holds; edit the table first, then "
                         "record the erratum")
    erratum = new_erratum(mode, locked_abi, today or date.today(), reason.strip(),
                          [e.strip() for e in evidence if e.strip()])
    modes = {n: ((mode.digest, mode.abi) if n == name else entry) for n, entry in lock.modes.items()}
    lock_path.write_text(render_lock(Lock(lock_path, modes, lock.errata + (erratum,))))
    return erratum


def _check_lock(lock_path: Path, modes: dict[str, Mode], report: LintReport) -> None:
    try:
        lock = read_lock(lock_path)
    except TableError as err:
        report.errors += err.problems
        return
    errata_problems = check_errata(lock)
    report.errors += errata_problems
    lineages = {m.lineage for m in modes.values()}
    for name, (digest, abi) in lock.modes.items():
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
        if mode.digest == digest:
            if not errata_problems:
                report.errata += lock.errata_of(name)
            continue
        what = ", ".join(d.describe() for d in compare(abi, mode.abi).responsible)
        old = superseded_digests(lock.errata, name, digest).get(mode.digest)
        if old is not None:
            message = (f"released mode {name} is defined as before its {old.describe()}; the table must hold "
                       f"the corrected definition ({what})")
        else:
            message = (f"released mode {name} changed since its release: {what}; released modes are never "
                       "edited: restore it and bump the version instead, or, if the released definition was "
                       "wrong, record an erratum: vucompat lint --erratum "
                       f"{name} --reason TEXT --evidence REF {lock_path.parent}")
        report.errors.append(Problem(Path(mode.source), _mode_key(mode), message))
    for name, mode in modes.items():
        if name not in lock.modes:
            report.warnings.append(Problem(Path(mode.source), _mode_key(mode),
                                           f"{name} is not in {lock_path.name} yet: run `vucompat lint "
                                           f"--update-lock {lock_path.parent}` when you release it"))


def _mode_key(mode: Mode) -> str:
    return f'mode[version="{mode.version}"]'
