"""Directories of the table search path (issue 15, item 3): a directory that cannot be
listed (permissions), a directory symbolic link loop, a path that is not a directory,
and a directory named like a table file (x.toml/, released.lock/) are each a TableError
naming the path (exit 2; lint: an error, exit 1), never a traceback or a hang, and lint
DIR reports what load --tables DIR refuses.

Root reads any directory: the permission cases run in a child forked from the test
process that drops to uid/gid 65534 (nobody) before it lists anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

from vucompat.core import tables as tables_module
from vucompat.core.errors import TableError, UsageError
from vucompat.core.lint import lint
from vucompat.core.tables import load_modeset, search_path, shipped_tables_dir, table_files
from vucompat_testing.timing import within

NOBODY = 65534
SHIPPED = shipped_tables_dir()


def _table(lineage: str = "acme.x") -> str:
    return (SHIPPED / "fc26.ovs-dpdk.toml").read_text().replace("fc26.ovs-dpdk", lineage)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """A directory every user may search (pytest's tmp_path is 0700 root's): what keeps
    nobody out below is the directory under test, nothing on the way to it."""
    directory = Path(tempfile.mkdtemp(prefix="vuc-dirs-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    for path in [directory, *directory.rglob("*")]:
        try:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        except OSError:
            pass
    shutil.rmtree(directory, ignore_errors=True)


def outcome(directory: Path) -> dict[str, Any]:
    """What load --tables DIR and lint DIR make of `directory`, in-process: the load's
    problems (or its modes), lint's errors, and any exception that is not the project's."""
    out: dict[str, Any] = {}
    try:
        search = search_path([directory], {})
    except UsageError as err:
        return {"usage": str(err)}
    try:
        out["modes"] = sorted(load_modeset(search).modes)
    except TableError as err:
        out["load"] = [str(p) for p in err.problems]
    out["lint"] = [str(p) for p in lint([directory], search).errors]
    return out


def as_nobody(fn: Callable[[], Any]) -> Any:
    """fn() in a child forked from this process that runs as nobody; its JSON result.

    Whatever fn needs must be imported already: the interpreter lives under /root,
    which nobody cannot read. Any exception is reported as {"raised": "Type: message"}."""
    import jsonschema  # noqa: F401 - loaded before the child drops its rights
    import tomllib  # noqa: F401
    import difflib  # noqa: F401
    from vucompat.core import compare, evidence, expand, lock  # noqa: F401

    tables_module._validator("table")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read)
            os.environ["VUCOMPAT_NO_CACHE"] = "1"
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                value = fn()
            except BaseException as err:  # noqa: BLE001 - reported to the parent
                value = {"raised": f"{type(err).__name__}: {err}"}
            os.write(write, json.dumps(value).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child as nobody failed"
    return json.loads(b"".join(chunks))


def _agree(result: dict[str, Any], needle: str) -> None:
    """The load refused with a problem containing `needle`, and lint says the same."""
    assert "modes" not in result, result
    assert any(needle in p for p in result["load"]), result
    assert any(needle in p for p in result["lint"]), result
    assert set(result["load"]) <= set(result["lint"]), result


def test_a_directory_named_like_a_table_file(world: Path):
    (world / "acme.x.toml").write_text(_table())
    (world / "x.toml").mkdir()
    _agree(within(5, outcome, world), f"{world}/x.toml: is a directory, not a file")
    (world / "x.toml").rmdir()
    (world / "released.lock").mkdir()
    _agree(within(5, outcome, world), f"{world}/released.lock: is a directory, not a file")


def test_a_symbolic_link_to_a_directory_named_like_a_table_file(world: Path):
    (world / "acme.x.toml").write_text(_table())
    (world / "self.toml").symlink_to(world)
    _agree(within(5, outcome, world), f"{world}/self.toml: is a directory, not a file")


def test_a_directory_symlink_loop_in_the_search_path(world: Path, monkeypatch: pytest.MonkeyPatch):
    (world / "a").symlink_to(world / "b")
    (world / "b").symlink_to(world / "a")
    _agree(within(5, outcome, world / "a"), f"{world}/a: cannot list the directory: a symbolic link loop")
    monkeypatch.setenv("VUCOMPAT_TABLES", str(world / "b"))
    with pytest.raises(TableError, match="b: cannot list the directory: a symbolic link loop"):
        within(5, load_modeset, search_path())
    # the system directory, when something (here a loop) is there, is listed like any other
    monkeypatch.delenv("VUCOMPAT_TABLES")
    monkeypatch.setattr(tables_module, "SYSTEM_TABLES_DIR", world / "a")
    assert world / "a" in search_path()
    with pytest.raises(TableError, match="a symbolic link loop"):
        load_modeset(search_path())
    # and skipped, as documented, when nothing is there
    monkeypatch.setattr(tables_module, "SYSTEM_TABLES_DIR", world / "absent")
    assert search_path() == [SHIPPED]


def test_links_and_loops_inside_a_directory(world: Path):
    """Only *.toml names are tables: a directory link that loops back (sub -> .) is not
    followed; table names that loop are a TableError each."""
    (world / "acme.x.toml").write_text(_table())
    (world / "sub").symlink_to(world)
    assert sorted(within(5, outcome, world)["modes"]) == sorted(load_modeset(search_path([world], {})).modes)
    (world / "l1.toml").symlink_to(world / "l2.toml")
    (world / "l2.toml").symlink_to(world / "l1.toml")
    _agree(within(5, outcome, world), f"{world}/l1.toml: cannot read: a symbolic link loop")


def test_a_path_that_is_not_a_directory(world: Path):
    (world / "file").write_text("not a directory")
    _agree(outcome(world / "file"), f"{world}/file: is not a directory")
    with pytest.raises(UsageError, match="does not exist"):
        search_path([world / "absent"], {})
    with pytest.raises(TableError, match="is not a directory"):
        table_files(world / "file")


@pytest.mark.parametrize("mode, needle", [
    (0o000, "cannot list the directory: Permission denied: make it readable and searchable (r-x)"),
    (0o311, "cannot list the directory: Permission denied"),  # searchable, not readable
    (0o444, "acme.x.toml: cannot read: Permission denied: make it readable"),  # readable, not searchable
])
def test_a_directory_nobody_may_read(world: Path, mode: int, needle: str):
    tables = world / "tables"
    tables.mkdir()
    (tables / "acme.x.toml").write_text(_table())
    tables.chmod(0o755)
    assert as_nobody(lambda: outcome(tables))["modes"]  # readable: it loads
    tables.chmod(mode)
    result = as_nobody(lambda: outcome(tables))
    assert "raised" not in result, result
    _agree(result, needle)
    tables.chmod(0o755)


def test_an_evidence_directory_nobody_may_read(world: Path):
    """lint checks evidence files (load does not): an evidence directory it cannot list
    is a lint error, not a silently skipped check."""
    shutil.copy(SHIPPED / "upstream.ovs-dpdk.toml", world)
    (world / "evidence").mkdir()
    shutil.copy(SHIPPED / "evidence" / "upstream.ovs-dpdk.evidence.toml", world / "evidence")
    (world / "evidence").chmod(0o755)
    assert as_nobody(lambda: [str(p) for p in lint([world]).errors]) == []
    (world / "evidence").chmod(0o000)
    errors = as_nobody(lambda: [str(p) for p in lint([world]).errors])
    assert errors == [f"{world}/evidence: cannot list the directory: Permission denied: make it readable and "
                      "searchable (r-x) by the user running vucompat, or leave it out of the search path"]


def test_the_cli_exits_2_and_lint_1_without_a_traceback(world: Path):
    (world / "a").symlink_to(world / "b")
    (world / "b").symlink_to(world / "a")
    (world / "named").mkdir()
    (world / "named" / "x.toml").mkdir()
    env = {**os.environ, "VUCOMPAT_NO_CACHE": "1"}
    env.pop("VUCOMPAT_TABLES", None)
    cli = str(Path(sys.executable).parent / "vucompat")
    for directory, needle in ((world / "a", "a symbolic link loop"), (world / "named", "is a directory, not a file")):
        for args, code in ((["list", "--tables", str(directory)], 2), (["lint", str(directory)], 1)):
            done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=30, env=env)
            assert done.returncode == code and needle in done.stderr + done.stdout, done
            assert "Traceback" not in done.stderr + done.stdout
