"""The one reader of vucompat's TOML input files: compat tables, released.lock,
capabilities files and evidence files.

Every failure becomes a Problem naming the file (and what to do), never another
exception: a path that is not a regular file (a directory named *.toml, a FIFO, a
device: refused from os.stat, without opening it, so a FIFO never blocks), a
symlink loop, a permission error, a file over MAX_BYTES, bytes that are not UTF-8,
TOML that does not parse (including integers over Python's 4300-digit limit and
nesting deep enough to exhaust the parser's recursion), and data nested deeper than
MAX_DEPTH (no vucompat file nests past 6 levels; deeper data would only crash later
code).

Pure in the layering sense: os and stat only; tomllib is imported lazily (a cache hit
of the tables reads bytes but parses nothing).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any, Iterable

from vucompat.core.errors import Problem

#: the largest file read (the shipped evidence file is ~180 KB; tables are a few KB)
MAX_BYTES = 4 * 1024 * 1024
#: the deepest nesting of tables and arrays accepted (the formats need at most 6)
MAX_DEPTH = 16

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def read_bytes(path: Path) -> tuple[bytes | None, Problem | None]:
    """Return the bytes of the regular file `path`, or None and the problem.

    A path that is not a regular file is refused from its stat, without opening it."""
    try:
        info = os.stat(path)
    except OSError as err:
        return None, Problem(path, "", _os_error(err))
    except ValueError as err:  # e.g. an embedded NUL byte in the name
        return None, Problem(path, "", f"cannot read: {err}")
    refused = _not_regular(info.st_mode, info.st_size)
    if refused:
        return None, Problem(path, "", refused)
    try:
        # O_NONBLOCK: should the path become a FIFO between stat and open, open does not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        return None, Problem(path, "", _os_error(err))
    try:
        info = os.fstat(fd)
        refused = _not_regular(info.st_mode, info.st_size)
        if refused:
            return None, Problem(path, "", refused)
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BYTES:
            return None, Problem(path, "", _too_big(size))
        return b"".join(chunks), None
    except OSError as err:
        return None, Problem(path, "", _os_error(err))
    finally:
        os.close(fd)


def list_dir(directory: Path) -> tuple[list[str], Problem | None]:
    """Return the names in `directory`, sorted; or [] and the problem: it does not exist,
    is not a directory, is a symbolic link loop, or cannot be listed (permissions).
    Nothing in it is opened or followed: a directory of it is refused by read_bytes()."""
    try:
        with os.scandir(directory) as scan:
            return sorted(entry.name for entry in scan), None
    except OSError as err:
        return [], Problem(directory, "", _dir_error(err))
    except ValueError as err:  # e.g. an embedded NUL byte in the name
        return [], Problem(directory, "", f"cannot list the directory: {err}")


def parse(path: Path, content: bytes) -> tuple[dict[str, Any] | None, Problem | None]:
    """Parse `content` (the bytes of `path`) as TOML; return the data, or None and the problem."""
    import tomllib

    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, Problem(path, "", f"not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start}): "
                                       "TOML files are UTF-8; save the file as UTF-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return None, Problem(path, "", f"not valid TOML: {err}")
    except RecursionError:
        return None, Problem(path, "", f"not valid TOML: nested too deeply (more than {MAX_DEPTH} levels of "
                                       "arrays or tables): vucompat files nest a few levels; fix the brackets")
    except ValueError as err:  # tomllib lets int()'s own errors through: a number of over 4300 digits
        return None, Problem(path, "", f"not valid TOML: {_first_line(err)}: write a number of a sane size")
    except MemoryError:
        return None, Problem(path, "", "not valid TOML: too large to parse")
    key = _too_deep(data)
    if key is not None:
        return None, Problem(path, key, f"nested too deeply (more than {MAX_DEPTH} levels of arrays or tables): "
                                        "vucompat files nest a few levels; fix the brackets")
    return data, None


def load(path: Path, content: bytes | None = None) -> tuple[dict[str, Any] | None, Problem | None]:
    """Read (unless `content` is given) and parse the TOML file `path`."""
    if content is None:
        content, problem = read_bytes(path)
        if content is None:
            return None, problem
    return parse(path, content)


def _not_regular(mode: int, size: int) -> str:
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        return f"is {what}, not a file: vucompat reads only regular files; remove it or rename it"
    if size > MAX_BYTES:
        return _too_big(size)
    return ""


def _too_big(size: int) -> str:
    return (f"is too large ({size} bytes; at most {MAX_BYTES}): not a vucompat file, or a corrupted one; "
            "remove or fix it")


def _os_error(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "cannot read: a symbolic link loop: fix or remove the link"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"cannot read: {err.strerror}: make it readable by the user running vucompat"
    if err.errno == errno.ENOENT:
        return "cannot read: it does not exist (a dangling symbolic link?): fix or remove it"
    return f"cannot read: {err.strerror or err}"


def _dir_error(err: OSError) -> str:
    if err.errno == errno.ENOTDIR:
        return "is not a directory: name a directory of *.toml table files"
    if err.errno in (errno.EACCES, errno.EPERM):
        return (f"cannot list the directory: {err.strerror}: make it readable and searchable (r-x) by the user "
                "running vucompat, or leave it out of the search path")
    if err.errno == errno.ELOOP:
        return "cannot list the directory: a symbolic link loop: fix or remove the link"
    if err.errno == errno.ENOENT:
        return "cannot list the directory: it does not exist (a dangling symbolic link?): fix or remove it"
    return f"cannot list the directory: {err.strerror or err}"


def _first_line(err: BaseException) -> str:
    return str(err).split(";")[0].split("\n")[0]


def _too_deep(data: Any) -> str | None:
    """The key path of the first value nested deeper than MAX_DEPTH, or None (iterative:
    never recurses)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        value, where = stack.pop()
        if len(where) > MAX_DEPTH:
            return key_path(where)
        if isinstance(value, dict):
            stack += [(v, (*where, k)) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, (*where, i)) for i, v in enumerate(value)]
    return None


def key_path(parts: Iterable[Any]) -> str:
    """Return a key path such as mode[2].enable[0]."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
