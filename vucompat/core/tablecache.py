"""A cache of loaded tables: the ModeSet that reading, validating and expanding a
search path gives, stored under a key of everything it depends on, so that a run
with unchanged tables skips JSON Schema validation and expansion (and importing
jsonschema). tables.load_modeset builds the key and calls lookup() and store().

Where: $VUCOMPAT_CACHE_DIR, else $XDG_CACHE_HOME/vucompat, else ~/.cache/vucompat.
Off: VUCOMPAT_NO_CACHE set to anything but "" or "0".

The key is a sha256 over the bytes of every table file and released.lock read (and
the shipped tables', which decide the `upstream.*` check), the directories as named
and as resolved, and fingerprint(): vucompat's core code and JSON Schemas, Python's
version and jsonschema's installed files. Only loads that succeed are stored: bad
tables are validated on every run and give the same error as without a cache.

A cache is a help, never a source of errors or answers: a missing, corrupt,
foreign, unreadable or unwritable cache is ignored. A file is used only when it is
a regular file owned by this user and writable by no one else, starts with its own
key and carries the sha256 of its payload; it is written to a temporary file and
renamed into place, so a reader sees a whole file or none. Two processes that miss
at once both validate and both write the same value; the last rename wins.

The payload is data, not code: the value as nested tuples of plain values (marshal),
with the few classes of a ModeSet named by a tag and rebuilt field by field, so a
cache file cannot run anything. A value is stored only when it decodes back equal.
"""

from __future__ import annotations

import importlib
import marshal
import os
import stat
import sys
import time
from datetime import date
from functools import lru_cache
from pathlib import Path, PosixPath
from typing import Any, Iterable, Mapping

from vucompat.core.modeset import ModeSet

#: the cache directory, instead of $XDG_CACHE_HOME/vucompat or ~/.cache/vucompat
ENV_DIR = "VUCOMPAT_CACHE_DIR"
#: set to anything but "" or "0": no cache is read or written
ENV_OFF = "VUCOMPAT_NO_CACHE"
#: entries kept: beyond this, the least recently used are removed when one is written
MAX_ENTRIES = 64
#: temporary files older than this (seconds) were left by a writer that died
_STALE_TMP = 600.0

try:  # the interpreter's own sha256: hashlib would load OpenSSL (~5 ms) on every start
    from _sha256 import sha256  # Python 3.11
except ImportError:  # pragma: no cover
    try:
        from _sha2 import sha256  # type: ignore[no-redef]  # Python 3.12+
    except ImportError:
        from hashlib import sha256  # type: ignore[no-redef]

_MAGIC = b"vucompat-modeset-cache 1\n"
_PREFIX, _SUFFIX = "modeset-", ".bin"

#: the files (under vucompat/) whose code decides what a load gives: fingerprint() hashes
#: them (tests/test_tablecache.py checks that a load imports no other vucompat module)
CODE_FILES: tuple[str, ...] = (
    "core/tables.py", "core/expand.py", "core/catalog.py", "core/mode.py", "core/modeset.py", "core/errors.py",
    "core/lock.py", "core/compare.py", "core/tomlwrite.py", "core/tomlfile.py", "core/tablecache.py",
    "core/versions.py", "core/names.py",
    "schemas/table.schema.json",
)

#: the classes a cached value may hold, by tag: (module, class); anything else is not stored
_CLASSES: dict[str, tuple[str, str]] = {
    "ModeSet": ("vucompat.core.modeset", "ModeSet"),
    "Lineage": ("vucompat.core.modeset", "Lineage"),
    "Mode": ("vucompat.core.mode", "Mode"),
    "Abi": ("vucompat.core.mode", "Abi"),
    "Problem": ("vucompat.core.errors", "Problem"),
    "Erratum": ("vucompat.core.lock", "Erratum"),
}


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Return the cache directory, or None when the cache is off or there is no home."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_OFF, "") not in ("", "0"):
        return None
    if environ.get(ENV_DIR):
        return Path(environ[ENV_DIR])
    xdg = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec: a relative value is ignored
        return Path(xdg) / "vucompat"
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".cache" / "vucompat" if os.path.isabs(home) else None


@lru_cache(maxsize=1)
def fingerprint() -> str | None:
    """Return a hash of what decides a load besides its files: the bytes of vucompat's
    code that loads (CODE_FILES; an editable install changes without a new version),
    Python's version, and where jsonschema is installed (path, size and mtime of its
    main modules). None when any of it cannot be read."""
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    digest = sha256(sys.version.encode())
    try:
        for name in CODE_FILES:
            with open(os.path.join(package, name), "rb") as handle:
                data = handle.read()
            digest.update(f"\0{name}\0{len(data)}\0".encode())
            digest.update(data)
        digest.update(_jsonschema_stamp().encode())
    except (OSError, ImportError, ValueError):
        return None
    return digest.hexdigest()


def _jsonschema_stamp() -> str:
    """Where jsonschema is and when its files changed, without importing it (the import
    is what the cache saves)."""
    import importlib.util

    spec = importlib.util.find_spec("jsonschema")
    if spec is None or not spec.origin:
        return "jsonschema:none"
    base = Path(spec.origin).parent
    parts = []
    for name in ("__init__.py", "validators.py", "_keywords.py", "_types.py"):
        try:
            st = (base / name).stat()
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            parts.append(f"{name}:-")
    return f"jsonschema:{base}:{','.join(parts)}"


def make_key(parts: Iterable[str]) -> str:
    """Return the key of `parts` (already including fingerprint()): a sha256 in hex."""
    digest = sha256(_MAGIC)
    for part in parts:
        data = part.encode("utf-8", "surrogateescape")
        digest.update(f"{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()


def _path(directory: Path, key: str) -> Path:
    return directory / f"{_PREFIX}{key}{_SUFFIX}"


def _header(key: str) -> bytes:
    return _MAGIC + key.encode() + b"\n"


def lookup(key: str, environ: Mapping[str, str] | None = None) -> ModeSet | None:
    """Return the ModeSet stored under `key`, or None (a miss) when there is none or
    the file is not one this user wrote whole."""
    directory = cache_dir(environ)
    if directory is None:
        return None
    path = _path(directory, key)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            blob = handle.read()
        value = _unpack(blob, key)
    except Exception:  # a damaged or foreign file may fail to decode in many ways: all are a miss
        return None
    if value is not None:
        try:
            os.utime(path)  # recently used: the last to be pruned
        except OSError:
            pass
    return value


def _unpack(blob: bytes, key: str) -> ModeSet | None:
    head = _header(key)
    if not blob.startswith(head):
        return None
    checksum, newline, payload = blob[len(head):len(head) + 64], blob[len(head) + 64:len(head) + 65], \
        blob[len(head) + 65:]
    if newline != b"\n" or sha256(payload).hexdigest().encode() != checksum:
        return None
    value = _decode(marshal.loads(payload))
    return value if type(value) is ModeSet else None


def _encode(value: Any) -> Any:
    """`value` as nested tuples of plain values; TypeError for what it cannot hold."""
    kind = type(value)
    if value is None or kind in (bool, int, float, str, bytes):
        return value
    if kind is tuple:
        return ("tuple", *map(_encode, value))
    if kind is list:
        return ("list", *map(_encode, value))
    if kind is dict:
        return ("dict", *(_encode(x) for item in value.items() for x in item))
    if kind is date:
        return ("date", value.toordinal())
    if kind is PosixPath:
        return ("path", str(value))
    tag = kind.__name__
    if _CLASSES.get(tag) != (kind.__module__, tag):
        raise TypeError(f"the table cache does not hold {kind.__module__}.{tag}")
    return ("object", tag, _encode(vars(value)))  # its fields, and what its cached properties computed


def _decode(node: Any) -> Any:
    """The value `_encode` gave `node` for."""
    if type(node) is not tuple:
        return node
    tag = node[0]
    if tag == "tuple":
        return tuple(map(_decode, node[1:]))
    if tag == "list":
        return list(map(_decode, node[1:]))
    if tag == "dict":
        items = list(map(_decode, node[1:]))
        return dict(zip(items[::2], items[1::2]))
    if tag == "date":
        return date.fromordinal(node[1])
    if tag == "path":
        return Path(node[1])
    if tag == "object":
        module, name = _CLASSES[node[1]]
        value = object.__new__(getattr(importlib.import_module(module), name))
        value.__dict__.update(_decode(node[2]))  # as pickle does: frozen dataclasses, no __init__
        return value
    raise ValueError(f"unknown tag {tag!r}")


def store(key: str, modeset: ModeSet, environ: Mapping[str, str] | None = None) -> None:
    """Store `modeset` under `key`, atomically; any failure (no directory, not
    writable, disk full, a value it cannot hold) is silently skipped."""
    directory = cache_dir(environ)
    if directory is None:
        return
    tmp = None
    try:
        payload = marshal.dumps(_encode(modeset))
        if _decode(marshal.loads(payload)) != modeset:  # what a hit returns must equal what validation gave
            return
        blob = _header(key) + sha256(payload).hexdigest().encode() + b"\n" + payload
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = directory / f".{_PREFIX}{os.getpid()}-{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        os.replace(tmp, _path(directory, key))
        tmp = None
        _prune(directory)
    except Exception:
        pass
    finally:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass


def _prune(directory: Path) -> None:
    """Keep the MAX_ENTRIES most recently used entries; remove temporary files that a
    dead writer left. Files another process removes meanwhile are skipped."""
    entries = []
    now = time.time()
    with os.scandir(directory) as scan:
        for entry in scan:
            try:
                if entry.name.startswith(_PREFIX) and entry.name.endswith(_SUFFIX):
                    entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
                elif entry.name.startswith(f".{_PREFIX}") and entry.name.endswith(".tmp") \
                        and now - entry.stat(follow_symlinks=False).st_mtime > _STALE_TMP:
                    os.unlink(entry.path)
            except OSError:
                continue
    for _, path in sorted(entries)[:-MAX_ENTRIES]:
        try:
            os.unlink(path)
        except OSError:
            pass
