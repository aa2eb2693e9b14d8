"""The cache of loaded tables (vucompat/core/tablecache.py): a hit is the value a cold
load gives, a changed file misses, a damaged, foreign or unwritable cache is ignored,
bad tables give the same error, and processes that load at once agree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import FIXTURES
from vucompat.core import tablecache
from vucompat.core.errors import TableError
from vucompat.core.tables import load_modeset, search_path, shipped_tables_dir

VUCOMPAT = str(Path(sys.executable).parent / "vucompat")
EXAMPLES = FIXTURES.parent.parent / "examples"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory of this test's own, switched on."""
    directory = tmp_path / "cache"
    monkeypatch.setenv(tablecache.ENV_DIR, str(directory))
    monkeypatch.delenv(tablecache.ENV_OFF, raising=False)
    return directory


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("modeset-*")) if cache.is_dir() else []


def cold(dirs: list[Path], monkeypatch: pytest.MonkeyPatch, where: str | None = None):
    """The load without a cache: what validation gives."""
    with monkeypatch.context() as m:
        m.setenv(tablecache.ENV_OFF, "1")
        return load_modeset(dirs, where)


def site_dirs(tmp_path: Path, upstream: bool = True) -> list[Path]:
    """A site directory before the shipped tables: a lineage of its own, a copy of a
    shipped one (shadowing it), and an upstream copy, which is checked against the
    shipped tables (a load of its own, cached too)."""
    shipped = shipped_tables_dir()
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(EXAMPLES / "one-queue-pair" / "acme.ovs-dpdk.toml", site)
    shutil.copy(shipped / "fc26.ovs-dpdk.toml", site)
    if upstream:
        shutil.copy(shipped / "upstream.ovs-dpdk.toml", site)
    return [site, shipped]


def test_a_hit_is_the_value_a_cold_load_gives(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for dirs, where in ((search_path(()), None), (site_dirs(tmp_path), None), ([tmp_path / "site"], "host-a")):
        expected = cold(dirs, monkeypatch, where)
        first = load_modeset(dirs, where)  # a miss: validated, then stored
        second = load_modeset(dirs, where)  # a hit
        assert first == expected and second == expected and second is not first
        # everything a caller reads, not only what == compares
        assert second.warnings == expected.warnings and second.errata == expected.errata
        assert second.where == expected.where and second.lineages == expected.lineages
        assert [m.name for m in second.newest_first] == [m.name for m in expected.newest_first]
        assert {n: (m.digest, m.supersedes, m.source) for n, m in second.modes.items()} == \
            {n: (m.digest, m.supersedes, m.source) for n, m in expected.modes.items()}
    assert len(entries(cache)) >= 3
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in entries(cache))


def test_a_warm_run_skips_validation(cache: Path):
    """What the cache is for: `vucompat list` with unchanged tables imports no jsonschema."""
    code = ("import sys; from vucompat.cli import main\n"
            "try: main(['list'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('jsonschema', 'tomllib', 'vucompat.core.expand') if m in sys.modules))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**os.environ}) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    listing = [r.stdout.splitlines()[:-1] for r in runs]
    assert listing[0] == listing[1] and "upstream.ovs-dpdk.v2.13" in "\n".join(listing[0])
    assert runs[0].stdout.splitlines()[-1] == "['jsonschema', 'tomllib', 'vucompat.core.expand']"  # cold
    assert runs[1].stdout.splitlines()[-1] == "[]"  # warm


def test_a_changed_file_misses(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dirs = site_dirs(tmp_path, upstream=False)
    table = dirs[0] / "acme.ovs-dpdk.toml"
    before = load_modeset(dirs)
    assert before.modes["acme.ovs-dpdk.v1.0"].abi.max_rx_queue_size == 256
    # the same length and the same mtime: only the content tells
    stat = table.stat()
    table.write_text(table.read_text().replace("max_rx_queue_size = 256", "max_rx_queue_size = 128", 1))
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert table.stat().st_size == stat.st_size and table.stat().st_mtime_ns == stat.st_mtime_ns
    after = load_modeset(dirs)
    assert after.modes["acme.ovs-dpdk.v1.0"].abi.max_rx_queue_size == 128
    assert after == cold(dirs, monkeypatch) and len(entries(cache)) == 2
    # a released.lock is part of what a load reads
    (dirs[0] / "released.lock").write_text("")
    assert load_modeset(dirs) == cold(dirs, monkeypatch) and len(entries(cache)) == 3
    # and so are the names of the files: a new file misses
    shutil.copy(shipped_tables_dir() / "distros" / "debian12.ovs-dpdk.toml", dirs[0])
    loaded = load_modeset(dirs)
    assert any(name.startswith("debian12.") for name in loaded.modes) and loaded == cold(dirs, monkeypatch)


@pytest.mark.parametrize("damage", ["truncated", "payload-bit", "garbage", "empty", "other-key", "checksum-ok-junk"])
def test_a_damaged_cache_file_is_ignored(damage: str, cache: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch):
    dirs = site_dirs(tmp_path, upstream=False)
    expected = cold(dirs, monkeypatch)
    load_modeset(dirs)
    (path,) = entries(cache)
    blob = path.read_bytes()
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    elif damage == "payload-bit":
        blob = blob[:-10] + bytes([blob[-10] ^ 1]) + blob[-9:]
    elif damage == "garbage":
        blob = os.urandom(len(blob))
    elif damage == "empty":
        blob = b""
    elif damage == "other-key":  # a whole, valid file of another load, under this load's name
        other = tmp_path / "other"
        other.mkdir()
        shutil.copy(shipped_tables_dir() / "fc26.ovs-dpdk.toml", other)
        load_modeset([other])
        blob = next(p for p in entries(cache) if p != path).read_bytes()
    elif damage == "checksum-ok-junk":  # a well-formed file whose payload is not a ModeSet
        import marshal
        payload = marshal.dumps(("object", "Abi", ("dict",)))
        head = tablecache._header(path.name.removeprefix("modeset-").removesuffix(".bin"))
        blob = head + tablecache.sha256(payload).hexdigest().encode() + b"\n" + payload
    path.write_bytes(blob)
    assert load_modeset(dirs) == expected  # ignored, validated again ...
    assert load_modeset(dirs) == expected  # ... and stored whole again
    assert path.read_bytes() != blob


def forge(path: Path, modeset) -> None:
    """Write `modeset` as a whole, well-formed entry at `path` (its key, its checksum)."""
    import marshal

    key = path.name[len("modeset-"):-len(".bin")]
    payload = marshal.dumps(tablecache._encode(modeset))
    path.write_bytes(tablecache._header(key) + tablecache.sha256(payload).hexdigest().encode() + b"\n" + payload)


def test_a_cache_file_others_could_have_written_is_ignored(cache: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    dirs = site_dirs(tmp_path, upstream=False)
    expected = cold(dirs, monkeypatch)
    load_modeset(dirs)
    (path,) = entries(cache)
    key = path.name[len("modeset-"):-len(".bin")]
    # a whole, well-formed entry with another value: trusted only when only this user could write it
    other = replace(expected, where="not what validation gives")
    forge(path, other)
    path.chmod(0o600)
    assert tablecache.lookup(key) == other  # (the check below is what refuses it)
    for mode in (0o620, 0o602, 0o666):
        path.chmod(mode)
        assert tablecache.lookup(key) is None
        assert load_modeset(dirs) == expected
        forge(path, other)
    if os.geteuid() == 0:  # owned by another user
        path.chmod(0o600)
        os.chown(path, 4242, -1)
        assert tablecache.lookup(key) is None
        assert load_modeset(dirs) == expected
    # a symlink is not followed, even to a good entry
    path.unlink()
    load_modeset(dirs)
    target = tmp_path / "elsewhere.bin"
    os.replace(path, target)
    path.symlink_to(target)
    assert tablecache.lookup(key) is None


def test_an_unwritable_or_unusable_cache_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dirs = site_dirs(tmp_path)
    expected = cold(dirs, monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for directory in (blocker / "cache", blocker):  # mkdir fails; then the "directory" is a file
        monkeypatch.setenv(tablecache.ENV_DIR, str(directory))
        assert load_modeset(dirs) == expected
        assert load_modeset(dirs) == expected
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "readonly"
        readonly.mkdir(mode=0o500)
        monkeypatch.setenv(tablecache.ENV_DIR, str(readonly))
        assert load_modeset(dirs) == expected
    assert blocker.read_text() == "not a directory"


def test_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv(tablecache.ENV_DIR, str(directory))
    monkeypatch.setenv(tablecache.ENV_OFF, "1")
    load_modeset(site_dirs(tmp_path))
    assert not directory.exists()


def test_where_the_cache_lives():
    home = {"HOME": "/home/u"}
    assert tablecache.cache_dir(home) == Path("/home/u/.cache/vucompat")
    assert tablecache.cache_dir({**home, "XDG_CACHE_HOME": "/var/cache/u"}) == Path("/var/cache/u/vucompat")
    assert tablecache.cache_dir({**home, "XDG_CACHE_HOME": "relative"}) == Path("/home/u/.cache/vucompat")
    assert tablecache.cache_dir({**home, "XDG_CACHE_HOME": "/x", "VUCOMPAT_CACHE_DIR": "/c"}) == Path("/c")
    assert tablecache.cache_dir({**home, "VUCOMPAT_NO_CACHE": "1", "VUCOMPAT_CACHE_DIR": "/c"}) is None
    assert tablecache.cache_dir({**home, "VUCOMPAT_NO_CACHE": "0"}) == Path("/home/u/.cache/vucompat")
    assert tablecache.cache_dir({**home, "VUCOMPAT_NO_CACHE": ""}) == Path("/home/u/.cache/vucompat")


def test_bad_tables_give_the_same_error_with_the_cache(cache: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    for defect in sorted((FIXTURES / "invalid").iterdir()):
        dirs = [defect, shipped_tables_dir()]
        with monkeypatch.context() as m:
            m.setenv(tablecache.ENV_OFF, "1")
            with pytest.raises(TableError) as without:
                load_modeset(dirs)
        for _ in range(2):
            with pytest.raises(TableError) as err:
                load_modeset(dirs)
            assert err.value.problems == without.value.problems and str(err.value) == str(without.value)
    assert len(entries(cache)) == 1  # only the shipped tables, which the upstream check loaded
    # a table that was good (and cached) and turns bad is an error, not the cached value
    dirs = site_dirs(tmp_path)
    load_modeset(dirs)
    table = dirs[0] / "acme.ovs-dpdk.toml"
    table.write_text(table.read_text().replace("max_queue_pairs = 1", "max_queue_pairs = 40000", 1))
    with pytest.raises(TableError, match="40000 is out of range"):
        load_modeset(dirs)
    # through the CLI, as a user sees it: the same message, cache or not
    bad = FIXTURES / "invalid" / "unknown_feature"
    runs = [subprocess.run([VUCOMPAT, "list", "--tables", str(bad)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, **extra}) for extra in ({"VUCOMPAT_NO_CACHE": "1"}, {}, {})]
    assert [r.returncode for r in runs] == [2, 2, 2]
    assert runs[0].stderr == runs[1].stderr == runs[2].stderr and "unknown feature" in runs[0].stderr


def test_processes_that_load_at_once_agree(cache: Path, tmp_path: Path):
    """Several processes miss at once, write the same entry, and read it while others
    replace it: each gets the whole value, and no temporary file is left."""
    dirs = site_dirs(tmp_path)
    code = ("import json, sys; from pathlib import Path; from vucompat.core.tables import load_modeset\n"
            "dirs = [Path(d) for d in sys.argv[1:]]\n"
            "seen = {json.dumps(sorted((n, m.digest) for n, m in load_modeset(dirs).modes.items())) "
            "for _ in range(15)}\n"
            "print(len(seen), seen.pop())")
    procs = [subprocess.Popen([sys.executable, "-c", code, *map(str, dirs)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert len({out for out, _ in outs}) == 1 and outs[0][0].startswith("1 ")
    expected = sorted((n, m.digest) for n, m in load_modeset(dirs).modes.items())
    assert json.loads(outs[0][0].split(" ", 1)[1]) == [list(x) for x in expected]
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []
    # shipped-only (the upstream check) and site+shipped
    assert len(entries(cache)) == 2


def test_old_entries_are_pruned(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tablecache, "MAX_ENTRIES", 3)
    for i in range(6):
        host = tmp_path / f"host{i}"
        host.mkdir()
        shutil.copy(shipped_tables_dir() / "fc26.ovs-dpdk.toml", host)
        load_modeset([host])
    assert len(entries(cache)) == 3
    stale = cache / ".modeset-1-dead.tmp"
    stale.write_bytes(b"left by a writer that died")
    os.utime(stale, (1, 1))
    load_modeset([tmp_path / "host0", tmp_path / "host1"])  # a new entry: a store, which prunes
    assert not stale.exists() and len(entries(cache)) == 3


def test_the_fingerprint_covers_the_code_a_load_runs(tmp_path: Path):
    """A load imports no vucompat module outside CODE_FILES (they decide its value, and an
    editable install changes them without a new version)."""
    dirs = site_dirs(tmp_path)
    (dirs[0] / "fc26.ovs-dpdk.toml").write_text((dirs[0] / "fc26.ovs-dpdk.toml").read_text().replace(
        "max_queue_pairs = 128", "max_queue_pairs = 64", 1))  # a shadowing conflict: the error path too
    code = ("import sys; from pathlib import Path; from vucompat.core.tables import load_modeset\n"
            "from vucompat.core.errors import TableError\n"
            "try: load_modeset([Path(d) for d in sys.argv[1:]])\nexcept TableError: pass\n"
            "load_modeset([Path(sys.argv[-1])])\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('vucompat'))))")
    done = subprocess.run([sys.executable, "-c", code, *map(str, dirs)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "VUCOMPAT_NO_CACHE": "1"})
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split()) - {"vucompat", "vucompat.core"}
    assert "vucompat.core.expand" in loaded and "vucompat.core.compare" in loaded
    covered = {"vucompat." + f.removesuffix(".py").replace("/", ".") for f in tablecache.CODE_FILES}
    assert loaded <= covered, loaded - covered
    package = Path(tablecache.__file__).parent.parent
    assert all((package / f).is_file() for f in tablecache.CODE_FILES)
