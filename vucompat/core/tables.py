"""Reading compat table files and capabilities files: TOML (stdlib tomllib), checked
against the JSON Schemas shipped in vucompat/schemas, then expanded and checked for
meaning (expand.py).

Every reader is all-or-nothing: a directory with one bad file loads nothing, and
the TableError lists every problem with its file and key path.

load_modeset reads each file once and keys the result by those bytes: unchanged
tables come from the cache (tablecache.py) without validation; bad ones are never
cached.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from vucompat.core import catalog, tablecache, versions
from vucompat.core.errors import Problem, TableError, UnknownFeatureError, UsageError, suggestions_hint
from vucompat.core.mode import PORT_TYPES, Abi, Capabilities, Mode
from vucompat.core.modeset import Lineage, ModeSet
from vucompat.core.names import clashes as name_clashes
from vucompat.core.tomlfile import key_path, list_dir, load as load_toml_file, read_bytes

#: a host directory may hold this file next to its tables; it is not a table
CAPABILITIES_FILE = "capabilities.toml"
#: the system-wide tables directory, searched after --tables and $VUCOMPAT_TABLES
SYSTEM_TABLES_DIR = Path("/etc/vucompat/compat_tables.d")
#: the prefix of lineages that only vucompat's shipped tables may define
UPSTREAM_PREFIX = "upstream."

_SCHEMA_DIR = Path(__file__).parent.parent / "schemas"
_UNKNOWN_KEY_HINT = re.compile(r"unknown key \(did you mean (\w+)\?\)")


def shipped_tables_dir() -> Path:
    """Return the directory of the tables shipped with the package."""
    return (Path(__file__).parent.parent / "compat_tables").resolve()


@dataclass(frozen=True)
class TableFile:
    """One valid table file, expanded."""

    path: Path
    lineage: str
    summary: str
    #: oldest first, as written
    modes: tuple[Mode, ...]
    warnings: tuple[Problem, ...]


def search_path(tables: Sequence[Path] = (), environ: Mapping[str, str] | None = None) -> list[Path]:
    """Return the directories to load, first wins per lineage: each `tables` dir,
    then $VUCOMPAT_TABLES (colon-separated), /etc/vucompat/compat_tables.d/ when it
    exists, then the shipped tables. A directory named twice (or two names of one
    directory) counts once, at its first place.

    Raises UsageError for a named directory that does not exist. Any other problem of
    a directory (not a directory, a symbolic link loop, not readable) is the load's
    (and lint's) TableError naming it, when its files are listed.
    """
    environ = os.environ if environ is None else environ
    named = list(tables) + [Path(p) for p in environ.get("VUCOMPAT_TABLES", "").split(":") if p]
    for directory in named:
        if _absent(directory):
            raise UsageError(message=f"tables directory {directory} does not exist: "
                             "check --tables and $VUCOMPAT_TABLES")
    system = [] if _absent(SYSTEM_TABLES_DIR) else [SYSTEM_TABLES_DIR]
    unique: list[Path] = []
    seen: set[str] = set()
    for directory in named + system + [shipped_tables_dir()]:
        real = real_path(directory)
        if real not in seen:
            seen.add(real)
            unique.append(directory)
    return unique


def _absent(path: Path) -> bool:
    """Whether nothing at all is at `path` (not even a dangling or looping symbolic link)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False  # there, but unusable: listing it says why
    return False


def real_path(path: Path) -> str:
    """The canonical path of `path` (os.path.realpath: never raises on a symbolic link
    loop, which Path.resolve() does)."""
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return os.path.abspath(path)


def load_modeset(dirs: Sequence[Path], where: str | None = None) -> ModeSet:
    """Load every table file of `dirs`; for each lineage the first directory wins.

    The result of unchanged files comes from the cache (tablecache.py), without
    validating again; it is the same value.

    Raises TableError listing every problem (nothing is loaded) when any file is
    invalid, when a shadowed file gives a mode name another meaning, or when a file
    outside the shipped tables defines `upstream.*` modes that vucompat does not ship.
    """
    dirs = list(dirs)
    shipped_dir = shipped_tables_dir()
    files = _Files.read([*dirs, shipped_dir])
    return _load_cached(dirs, where or ", ".join(str(d) for d in dirs), files, shipped_dir)


class _Files:
    """The table files and locks of some directories, each read once: a load is made
    from these bytes, and cached under their hashes. (A plain class: a dataclass costs
    ~1 ms of start-up.)"""

    def __init__(self) -> None:
        #: each directory's table files (table_files order)
        self.tables: dict[Path, list[Path]] = {}
        #: the bytes of every table file and released.lock that could be read
        self.data: dict[Path, bytes] = {}
        #: files that could not be read, and why (their readers read them again, and say so);
        #: directories that could not be listed, and why
        self.unreadable: dict[Path, Problem] = {}

    @classmethod
    def read(cls, dirs: Iterable[Path]) -> "_Files":
        from vucompat.core.lock import LOCK_FILE

        files = cls()
        for directory in dirs:
            if directory in files.tables:
                continue
            names, problem = list_dir(directory)
            if problem is not None:
                files.unreadable[directory] = problem
            files.tables[directory] = _table_names(directory, names)
            lock = directory / LOCK_FILE
            for path in files.tables[directory] + ([lock] if LOCK_FILE in names else []):
                content, problem = read_bytes(path)
                if content is not None:
                    files.data[path] = content
                elif problem is not None:
                    files.unreadable[path] = problem
        return files

    def cache_key(self, dirs: Sequence[Path], where: str, shipped_dir: Path) -> str | None:
        """The cache key of loading `dirs` from these files, or None (no caching)."""
        from vucompat.core.lock import LOCK_FILE

        code = tablecache.fingerprint()
        if code is None or self.unreadable:
            return None
        parts = [code, where, str(len(dirs))]
        for directory in [*dirs, shipped_dir]:
            try:
                parts += ["dir", str(directory), str(directory.resolve()), str(len(self.tables[directory]))]
            except (OSError, RuntimeError):
                return None
            for path in self.tables[directory]:
                parts += [path.name, tablecache.sha256(self.data[path]).hexdigest()]
            lock = self.data.get(directory / LOCK_FILE)
            parts += ["lock", "-" if lock is None else tablecache.sha256(lock).hexdigest()]
        return tablecache.make_key(parts)


def _load_cached(dirs: Sequence[Path], where: str, files: _Files, shipped_dir: Path) -> ModeSet:
    key = files.cache_key(dirs, where, shipped_dir)
    if key is not None:
        cached = tablecache.lookup(key)
        if cached is not None:
            return cached
    modeset = _load(dirs, where, files, shipped_dir)
    if key is not None:
        for mode in modeset.modes.values():
            mode.digest  # noqa: B018  (computed now, so a hit carries it and needs no hashlib)
        tablecache.store(key, modeset)
    return modeset


def _load(dirs: Sequence[Path], where: str, files: _Files, shipped_dir: Path) -> ModeSet:
    """load_modeset, from `files`."""
    shipped = cache(lambda: _load_cached([shipped_dir], str(shipped_dir), files, shipped_dir).modes)
    tables, problems = _read_dirs(dirs, files, shipped)
    winners: dict[str, TableFile] = {}
    shadowed: dict[str, list[TableFile]] = {}
    for table in tables:
        if table.lineage in winners:
            shadowed.setdefault(table.lineage, []).append(table)
        else:
            winners[table.lineage] = table
    for lineage, losers in shadowed.items():
        problems += _same_meaning(winners[lineage], losers)
    problems += _clashing_names(list(winners.values()))
    if problems:
        raise TableError(problems=problems)
    modes = {m.name: m for t in winners.values() for m in t.modes}
    errata = _errata(dirs, modes, files)
    for name in {e.mode for e in errata}:
        modes[name] = replace(modes[name], supersedes=tuple(e.superseded for e in errata if e.mode == name))
    lineages = {
        name: Lineage(name, t.summary, str(t.path), tuple(str(x.path) for x in shadowed.get(name, [])))
        for name, t in winners.items()
    }
    warnings = tuple(w for t in tables for w in t.warnings)
    return ModeSet(modes=modes, lineages=lineages, warnings=warnings, where=where, errata=errata)


def _errata(dirs: Sequence[Path], modes: Mapping[str, Mode], files: _Files) -> tuple[Any, ...]:
    """The errata of each directory's released.lock that lead to a loaded mode's digest.

    Raises TableError when a lock cannot be read."""
    from vucompat.core.lock import LOCK_FILE, read_lock, superseded_digests

    out = []
    for directory in dirs:
        lock_path = directory / LOCK_FILE
        if lock_path in files.data or lock_path in files.unreadable:
            errata = read_lock(lock_path, files.data.get(lock_path)).errata
            for name in sorted({e.mode for e in errata} & set(modes)):
                out += sorted(superseded_digests(errata, name, modes[name].digest).values(), key=lambda e: e.date)
    return tuple(out)


def read_table(path: Path) -> TableFile:
    """Read, validate and expand one table file; raise TableError with every problem."""
    return _read_table(path, None, lambda: _shipped_modes(str(shipped_tables_dir())))


def _read_table(path: Path, content: bytes | None, shipped: Callable[[], Mapping[str, Mode]]) -> TableFile:
    """read_table of `content` (None: read `path`), with the shipped modes from `shipped`."""
    data, problems = _load_toml(path, content)
    if data is None:
        raise TableError(problems=problems)
    problems = _schema_problems(data, "table", path) + _version_problems(data, path)
    if problems:
        raise TableError(problems=problems)
    lineage = data["lineage"]
    if path.name != f"{lineage}.toml":
        raise TableError(problems=[Problem(path, "lineage", f"lineage {lineage} does not match the file "
                                           f"name: name the file {lineage}.toml or fix the lineage")])
    from vucompat.core.expand import expand_lineage  # lazy, as tomllib and jsonschema: a cache hit needs none

    expansion = expand_lineage(lineage, data["mode"], path, data.get("version_scheme", versions.NATURAL))
    if expansion.errors:
        raise TableError(problems=expansion.errors)
    problems = _upstream_problems(path, lineage, expansion.modes, shipped)
    if problems:
        raise TableError(problems=problems)
    return TableFile(path, lineage, data["summary"], tuple(expansion.modes), tuple(expansion.warnings))


def _version_problems(data: Mapping[str, Any], path: Path) -> list[Problem]:
    """Each mode's version under the table's version_scheme (core/versions.py: one
    message per pattern). Versions the schema refuses already (not a string, too long)
    and tables whose scheme it refuses are left to its message."""
    scheme = data.get("version_scheme", versions.NATURAL)
    entries = data.get("mode")
    if not versions.is_scheme(scheme) or not isinstance(entries, list):
        return []
    problems = []
    for index, entry in enumerate(entries):
        version = entry.get("version") if isinstance(entry, dict) else None
        if isinstance(version, str) and len(version) <= versions.MAX_LENGTH:
            found = versions.problem(version, scheme)
            if found:
                problems.append(Problem(path, f"mode[{index}].version", f"{_shown(version)} {found}"))
    return problems


def read_capabilities(path: Path, content: bytes | None = None) -> Capabilities:
    """Read a capabilities file (what a host's backend offers): the top-level offer,
    and `[port_types.<type>]` tables for the port types that offer otherwise.

    Raises TableError naming the file and key of every problem. `content`: the file's
    bytes, already read (None: read `path`).
    """
    data, problems = _load_toml(path, content)
    if data is None:
        raise TableError(problems=problems, what="capabilities file")
    problems = _schema_problems(data, "capabilities", path)
    if problems:
        raise TableError(problems=problems, what="capabilities file")
    abi = _offer(data, "", path, problems)
    by_type = {port_type: _offer(offer, f"port_types.{port_type}.", path, problems)
               for port_type, offer in data.get("port_types", {}).items()}
    if problems:
        raise TableError(problems=problems, what="capabilities file")
    if not by_type:
        return Capabilities(abi=abi, source=str(path))
    return Capabilities.of_types({t: by_type.get(t, abi) for t in PORT_TYPES}, source=str(path))


def _offer(data: Mapping[str, Any], prefix: str, path: Path, problems: list[Problem]) -> Abi:
    masks = {"virtio": 0, "protocol": 0}
    for key, kind in (("virtio_features", "virtio"), ("protocol_features", "protocol")):
        for i, name in enumerate(data[key]):
            try:
                masks[kind] |= catalog.names_to_mask([name], kind)  # type: ignore[arg-type]
            except UnknownFeatureError as err:
                problems.append(Problem(path, f"{prefix}{key}[{i}]", str(err)))
    return Abi(virtio=masks["virtio"], protocol=masks["protocol"],
               **{name: data[name] for name in ("max_queue_pairs", "max_rx_queue_size", "max_tx_queue_size")})


def table_files(directory: Path) -> list[Path]:
    """Return the table files of `directory`, sorted by name: every name ending in .toml
    but capabilities.toml (what they are is checked when they are read).

    Raises TableError naming the directory when it cannot be listed (not a directory, a
    symbolic link loop, permissions)."""
    names, problem = list_dir(directory)
    if problem is not None:
        raise TableError(problems=[problem])
    return _table_names(directory, names)


def _table_names(directory: Path, names: Iterable[str]) -> list[Path]:
    return [directory / name for name in sorted(names) if name.endswith(".toml") and name != CAPABILITIES_FILE]


def read_dirs(dirs: Iterable[Path]) -> tuple[list[TableFile], list[Problem]]:
    """Return every valid table file of `dirs` (read, validated, expanded; never cached),
    and the problems of the others."""
    dirs = list(dirs)
    return _read_dirs(dirs, _Files.read(dirs), lambda: _shipped_modes(str(shipped_tables_dir())))


def _read_dirs(dirs: Iterable[Path], files: _Files,
               shipped: Callable[[], Mapping[str, Mode]]) -> tuple[list[TableFile], list[Problem]]:
    tables: list[TableFile] = []
    problems: list[Problem] = []
    for directory in dirs:
        if directory in files.unreadable:
            problems.append(files.unreadable[directory])
        for path in files.tables[directory]:
            try:
                tables.append(_read_table(path, files.data.get(path), shipped))
            except TableError as err:
                problems.extend(err.problems)
    return tables, problems


def _same_meaning(winner: TableFile, losers: Sequence[TableFile]) -> list[Problem]:
    """A name means the same thing everywhere: a shadowed file may not redefine it."""
    mine = {m.name: m for m in winner.modes}
    problems = []
    for loser in losers:
        for mode in loser.modes:
            other = mine.get(mode.name)
            if other is not None and other.digest != mode.digest:
                problems.append(Problem(loser.path, f"mode[{loser.modes.index(mode)}]",
                                        f"{mode.name} is also defined in {winner.path} with other contents "
                                        f"({_difference_text(other, mode)}): a name means the same thing "
                                        "everywhere; give the new contents a new version"))
    return problems


def _clashing_names(tables: Sequence[TableFile]) -> list[Problem]:
    """Two modes of one search path may not share a Placement trait or a node label
    (core/names.py: traits are upper case, with '.', '-' and '_' alike)."""
    where = {m.name: (t.path, i) for t in tables for i, m in enumerate(t.modes)}
    problems = []
    for name, first, what in name_clashes(where):
        path, index = where[name]
        problems.append(Problem(path, f"mode[{index}].version", f"{name} has the {what}, as {first} "
                                f"({where[first][0]}) has: a scheduler could not tell them apart; give one of "
                                "them another version"))
    return problems


def _difference_text(a: Mode, b: Mode) -> str:
    from vucompat.core.compare import compare

    differences = compare(a.abi, b.abi).responsible
    if differences:
        return ", ".join(d.describe() for d in differences)
    return f"the same features and limits, yet digests {a.digest[:19]}... and {b.digest[:19]}... differ"


def _upstream_problems(path: Path, lineage: str, modes: Sequence[Mode],
                       shipped_modes: Callable[[], Mapping[str, Mode]]) -> list[Problem]:
    """Only the shipped tables define upstream.* modes; elsewhere a file may hold a
    copy of shipped upstream modes (e.g. a host that stops at an older release)."""
    if not lineage.startswith(UPSTREAM_PREFIX):
        return []
    shipped_dir = shipped_tables_dir()
    if real_path(path.parent) == real_path(shipped_dir):
        return []
    shipped = shipped_modes()
    problems = []
    for i, mode in enumerate(modes):
        original = shipped.get(mode.name)
        if original is None or original.digest != mode.digest:
            what = "is not shipped with vucompat" if original is None else \
                f"differs from the shipped one ({_difference_text(original, mode)})"
            advice = f"{UPSTREAM_PREFIX}* belongs to the upstream tables; use your own lineage, <vendor>.<product>"
            if original is not None and mode.digest in original.supersedes:
                advice = "it is the released definition an erratum corrected (see the shipped released.lock): copy " \
                         "the shipped upstream table again"
            problems.append(Problem(path, f"mode[{i}].version", f"{mode.name} {what}: {advice}"))
    return problems


@lru_cache(maxsize=4)
def _shipped_modes(shipped_dir: str) -> Mapping[str, Mode]:
    """The shipped modes, with the digests their errata supersede."""
    return load_modeset([Path(shipped_dir)]).modes


def _load_toml(path: Path, content: bytes | None = None) -> tuple[dict[str, Any] | None, list[Problem]]:
    data, problem = load_toml_file(path, content)
    return data, [problem] if problem is not None else []


@lru_cache(maxsize=None)
def _validator(name: str) -> Any:
    import json

    import jsonschema  # lazy: the import costs ~90 ms

    schema = json.loads((_SCHEMA_DIR / f"{name}.schema.json").read_text())
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "date", lambda _checker, value: isinstance(value, date) and not isinstance(value, datetime)
    ).redefine(  # JSON Schema counts 128.0 as an integer; a limit must be one (its digest writes it)
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def _schema_problems(data: Any, schema: str, path: Path) -> list[Problem]:
    validator = _validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        problems.extend(_describe(error, path))
    # a misspelt key ("relased") is one problem, not also a missing "released"
    suggested = set()
    for problem in problems:
        match = _UNKNOWN_KEY_HINT.match(problem.message)
        if match:
            parent = problem.key.rsplit(".", 1)[0] if "." in problem.key else ""
            suggested.add(f"{parent}.{match.group(1)}" if parent else match.group(1))
    return [p for p in problems if not (p.message.startswith("required key") and p.key in suggested)]


def _describe(error: Any, path: Path) -> list[Problem]:
    """Turn one jsonschema error into problems a packager can act on."""
    from difflib import get_close_matches

    key = key_path(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        out = []
        for extra in sorted(set(error.instance) - set(allowed)):
            hint = suggestions_hint(get_close_matches(extra, allowed, n=1))
            out.append(Problem(path, key_path([*error.absolute_path, extra]),
                               f"unknown key{hint}; allowed keys: {', '.join(allowed)}"))
        return out
    if kind == "required":
        missing = error.message.split("'")[1]
        return [Problem(path, key_path([*error.absolute_path, missing]), "required key is missing: add it")]
    if kind == "type":
        expected = error.validator_value
        if expected == "date":
            message = "must be a TOML date written without quotes, e.g. 2020-02-14"
        elif expected == "integer" and isinstance(error.instance, float):
            example = f"{error.instance:.0f}" if error.instance.is_integer() and abs(error.instance) < 1e18 else "128"
            message = f"must be an integer written without a decimal point, e.g. {example}, not {error.instance!r}"
        else:
            message = f"must be of type {expected}, not {type(error.instance).__name__}"
        return [Problem(path, key, message)]
    if kind == "enum" and key == "version_scheme":
        return [Problem(path, key, f"{_shown(error.instance)} is not a version scheme: write one of "
                                   f"{', '.join(map(repr, versions.SCHEMES))} (natural, the default, when "
                                   "the versions are not a package manager's)")]
    if kind == "enum":
        return [Problem(path, key, f"{_shown(error.instance)} is out of range: a queue size is a power of two "
                                   "from 1 to 32768")]
    if kind in ("minimum", "maximum"):
        return [Problem(path, key, f"{_shown(error.instance)} is out of range: allowed "
                                   f"{error.schema.get('minimum')}..{error.schema.get('maximum')}")]
    if kind == "pattern":
        what = error.schema.get("description") or f"the pattern {error.validator_value}"
        if key.endswith("]"):
            what = "a feature's full spec name in upper case, e.g. VIRTIO_NET_F_MRG_RXBUF"
        return [Problem(path, key, f"{_shown(error.instance)} is not valid: expected {what}")]
    if kind == "maxLength":
        return [Problem(path, key, f"{_shown(error.instance)} is too long ({len(error.instance)} characters; at "
                                   f"most {error.validator_value})")]
    if kind == "uniqueItems":
        return [Problem(path, key, "lists a name twice: give each name once")]
    if kind == "minItems":
        return [Problem(path, key, "is empty: define at least one [[mode]]")]
    if kind == "minLength":
        return [Problem(path, key, "is empty: write a one-line description")]
    return [Problem(path, key, error.message if len(error.message) < 300 else error.message[:300] + "...")]


def _shown(value: Any) -> str:
    """repr of a value from a file, cut to a readable length (a number of thousands of
    digits is shown by its first ones; repr of such an int would raise)."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value) if abs(value) < 10 ** 60 else f"a {value.bit_length()}-bit number"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
