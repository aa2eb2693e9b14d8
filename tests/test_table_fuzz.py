"""Bad input never crashes (issue 15, item 3): every table, lock and capabilities
file goes through one reader (core/tomlfile.py), and anything wrong with it is a
VucompatError naming the file, never another exception or a hang.

A seeded mutator over the shipped tables runs thousands of cases in-process, then
one regression test per crash a tester found."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vucompat.core import tomlfile
from vucompat.core.errors import TableError, VucompatError
from vucompat.core.lint import lint
from vucompat.core.lock import read_lock
from vucompat.core.mode import natural_key
from vucompat.core.tables import _read_table, read_capabilities, read_table, search_path, shipped_tables_dir
from vucompat_testing.timing import within

SHIPPED = shipped_tables_dir()
SEEDS = [SHIPPED / "upstream.ovs-dpdk.toml", SHIPPED / "fc26.ovs-dpdk.toml",
         SHIPPED / "distros" / "debian12.ovs-dpdk.toml", SHIPPED / "released.lock"]
CAPABILITIES = b"""virtio_features = ["VIRTIO_NET_F_CSUM", "VIRTIO_F_VERSION_1"]
protocol_features = ["VHOST_USER_PROTOCOL_F_MQ"]
max_queue_pairs = 8
max_rx_queue_size = 1024
max_tx_queue_size = 1024

[port_types.dpdkvhostuser]
virtio_features = ["VIRTIO_F_VERSION_1"]
protocol_features = []
max_queue_pairs = 8
max_rx_queue_size = 1024
max_tx_queue_size = 1024
"""

_NASTY = ['"debian"', '"rpm"', '"natural"', '"1:2.9.0-1~bpo9+1"', '"3.1.0-65.el9_2"', '"1.0^git1~pre"', '"1:"',
          '"0:0"', '"1.0+recommended"', '"1.0-0"', "version_scheme = \"debian\"\n", "version_scheme = \"rpm\"\n",
          "9" * 5000, "9" * 4000, "-1", "0", "1e999", "inf", "nan", "0x7fffffffffffffffffff", "1.5", "true",
          "0001-01-01", "9999-12-31", "1979-05-27T07:32:00Z", '"2020-01-01"', "[" * 600 + "]" * 600,
          "{a = " * 300 + "1" + "}" * 300, '"\\u0000"', '"\U0001f600\u202e\ufeff"', "'''", '"', "[[mode]]",
          '"2.8-rc1.._"', '"3.1.0-2+deb12u1"', '"' + "x" * 100_000 + '"', "[]", "{}", '["VIRTIO_NET_F_MQ"]']


#: a lineage of the debian scheme, as a packager would write one (epochs, ~, +debNuM)
DEBIAN_TABLE = (SHIPPED / "fc26.ovs-dpdk.toml").read_text().replace(
    'summary = "', 'version_scheme = "debian"\nsummary = "', 1).replace(
    'version = "2.7"', 'version = "2.7.1-1~bpo9+1"', 1).replace('version = "2.8"', 'version = "1:2.8.1-1+deb10u1"', 1)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits of `data`: bytes flipped, cut, repeated or spliced with nasty values."""
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        n = len(data)
        at = rng.randrange(n + 1) if n else 0
        if op == 0 and n:  # flip some bytes
            buf = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(n)] = rng.randrange(256)
            data = bytes(buf)
        elif op == 1:  # truncate
            data = data[:at]
        elif op == 2:  # repeat a slice (duplicated sections, keys)
            end = min(n, at + rng.randint(1, 400))
            data = data[:end] + data[at:end] + data[end:]
        elif op == 3:  # replace a value after `=` with a nasty one
            lines = data.split(b"\n")
            i = rng.randrange(len(lines))
            if b"=" in lines[i]:
                lines[i] = lines[i].split(b"=", 1)[0] + b"= " + rng.choice(_NASTY).encode()
            data = b"\n".join(lines)
        elif op == 4:  # insert a nasty value as a new key or raw text
            text = rng.choice(_NASTY).encode()
            data = data[:at] + rng.choice([b"\nx = " + text + b"\n", text]) + data[at:]
        elif op == 5:  # random unicode
            junk = "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x800),
                                           rng.randrange(0x800, 0xD800), rng.randrange(0x10000, 0x110000)]))
                           for _ in range(rng.randint(1, 20)))
            data = data[:at] + junk.encode("utf-8", "surrogatepass") + data[at:]
        elif op == 6:  # change a digit (dates, versions, limits)
            digits = [i for i, b in enumerate(data) if 48 <= b <= 57]
            if digits:
                i = rng.choice(digits)
                data = data[:i] + rng.choice([b"0", b"9", b"99999999999999999999", b"-", b"."]) + data[i + 1:]
        elif op == 7:  # swap two lines
            lines = data.split(b"\n")
            if len(lines) > 1:
                i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
        else:  # delete a line
            lines = data.split(b"\n")
            del lines[rng.randrange(len(lines))]
            data = b"\n".join(lines)
    return data


def _shipped_modes():
    from vucompat.core.tables import _shipped_modes as shipped

    return shipped(str(SHIPPED))


@pytest.mark.parametrize("seed", range(4))
def test_mutated_files_raise_only_vucompat_errors(seed):
    """Thousands of mutants of the shipped tables, lock and a capabilities file: each is
    read as a table, a lock and a capabilities file in-process; only VucompatError may escape."""
    rng = random.Random(1500 + seed)
    sources = [p.read_bytes() for p in SEEDS] + [CAPABILITIES, DEBIAN_TABLE.encode()]
    shipped = _shipped_modes()
    outcomes = {"ok": 0, "error": 0}
    for case in range(900):
        data = mutate(rng.choice(sources), rng)
        for reader in ("table", "lock", "caps"):
            try:
                if reader == "table":
                    lineage = rng.choice(["fc26.ovs-dpdk", "upstream.ovs-dpdk", "debian12.ovs-dpdk", "acme.x"])
                    modes = _read_table(Path(f"/fuzz/{lineage}.toml"), data, lambda: shipped).modes
                    for mode in modes:  # what list/show do with a loaded mode
                        mode.order_key, mode.as_dict()  # noqa: B018
                elif reader == "lock":
                    read_lock(Path("/fuzz/released.lock"), data)
                else:
                    read_capabilities(Path("/fuzz/capabilities.toml"), data)
                outcomes["ok"] += 1
            except VucompatError as err:
                assert str(err)  # a message, with the file
                outcomes["error"] += 1
            except Exception as err:  # pragma: no cover - the point of the test
                pytest.fail(f"seed {seed} case {case} ({reader}): {type(err).__name__}: {err}\n{data[:2000]!r}")
    assert outcomes["error"] > 100 and outcomes["ok"] > 10  # the mutator both breaks and keeps files


def test_mutated_capabilities_files(tmp_path):
    """read_capabilities on mutated files on disk (it reads a path)."""
    rng = random.Random(15)
    path = tmp_path / "capabilities.toml"
    for case in range(400):
        path.write_bytes(mutate(CAPABILITIES, rng))
        try:
            read_capabilities(path)
        except VucompatError:
            pass
        except Exception as err:  # pragma: no cover
            pytest.fail(f"case {case}: {type(err).__name__}: {err}\n{path.read_bytes()[:2000]!r}")


def test_mutated_directories_lint_and_load_agree(tmp_path):
    """Directories of mutated tables: lint and load raise nothing but VucompatError, and
    lint (with the search path) fails exactly when the load refuses."""
    from vucompat.core.tables import load_modeset

    rng = random.Random(3)
    sources = {p.name: p.read_bytes() for p in SEEDS}
    for case in range(60):
        directory = tmp_path / f"d{case}"
        directory.mkdir()
        for name, data in rng.sample(sorted(sources.items()), rng.randint(1, 3)):
            (directory / name).write_bytes(mutate(data, rng) if rng.random() < 0.8 else data)
        search = search_path([directory], {})
        try:
            load_modeset(search)
            refused = False
        except TableError:
            refused = True
        report = lint([directory], search)
        if refused:
            assert report.errors, f"case {case}: load refuses, lint does not"


# -- regressions: each crash the tester found, and each kind of unreadable file --

def _table(version: str = "2.7", released: str = "2017-04-01", extra: str = "") -> str:
    text = (SHIPPED / "fc26.ovs-dpdk.toml").read_text()
    text = text.replace("fc26.ovs-dpdk", "acme.x").replace('version = "2.7"', f'version = "{version}"', 1)
    return text.replace("released = 2017-", f"released = {released}\n# was 2017-", 1) + extra


def _problems(path: Path, content: bytes | None = None) -> str:
    with pytest.raises(TableError) as err:
        _read_table(path, content, _shipped_modes)
    assert str(path) in str(err.value)
    return str(err.value)


def test_deep_nesting_is_a_table_error(tmp_path):
    for depth in (100_000, 900, 40):
        text = f'lineage = "acme.x"\nsummary = "s"\nx = {"[" * depth}{"]" * depth}\n'
        assert "nested too deeply" in _problems(tmp_path / "acme.x.toml", text.encode())
    inline = 'lineage = "acme.x"\nsummary = "s"\nx = ' + "{a = " * 2000 + "1" + "}" * 2000 + "\n"
    assert "nested too deeply" in _problems(tmp_path / "acme.x.toml", inline.encode())


def test_huge_numbers_are_table_errors(tmp_path):
    path = tmp_path / "acme.x.toml"
    message = _problems(path, _table(version="2." + "9" * 5000).encode())
    assert "mode[0].version" in message and "too long" in message
    assert "digits in the version" in _problems(path, _table(version="2." + "9" * 30).encode())
    message = _problems(path, _table(extra="\n").replace("max_queue_pairs = 128", "max_queue_pairs = " + "9" * 5000,
                                                         1).encode())
    assert "not valid TOML" in message and "4300" in message
    message = _problems(path, _table().replace("max_queue_pairs = 128", "max_queue_pairs = " + "9" * 4000, 1).encode())
    assert "mode[0].max_queue_pairs" in message and "out of range" in message and len(message) < 1000


def test_natural_key_never_raises():
    assert natural_key("a.v2." + "9" * 5000) > natural_key("a.v2." + "9" * 4999) > natural_key("a.v2.10")
    assert natural_key("v2.9") < natural_key("v2.10") < natural_key("v10")
    assert natural_key("v2.010") == natural_key("v2.10")


def test_float_limits_are_refused_and_differences_are_named(tmp_path):
    """128.0 passed JSON Schema's integer, then gave the mode another digest with no
    difference to name: 'with other contents ()'."""
    message = _problems(tmp_path / "acme.x.toml", _table().replace("max_queue_pairs = 128", "max_queue_pairs = 128.0",
                                                                   1).encode())
    assert "mode[0].max_queue_pairs: must be an integer written without a decimal point, e.g. 128" in message
    from vucompat.core.tables import _difference_text

    mode = _shipped_modes()["fc26.ovs-dpdk.v2.7"]
    import dataclasses

    odd = dataclasses.replace(mode, abi=dataclasses.replace(mode.abi, max_queue_pairs=128.0))
    assert "()" not in f"({_difference_text(mode, odd)})" and _difference_text(mode, odd)


@pytest.mark.parametrize("released", ["0001-01-01", "1023-05-01", "1989-12-31"])
def test_release_dates_before_the_floor_are_refused(tmp_path, released):
    message = _problems(tmp_path / "acme.x.toml", _table(released=released).encode())
    assert f"mode[0].released: {released} is before 1990-01-01" in message


@pytest.mark.parametrize("version, rule", [
    ("2.8-rc1.._", "ends with '_'"), ("2.8.", "ends with '.'"), ("2..8", "has two separators in a row"),
    ("-2.8", "starts with '-'"), ("2.8_", "ends with '_'"),
    ("3.1.0-2+deb12u1", "'+' (character 8) is not allowed in the natural scheme"),
    ("2.8~rc1", "'~' (character 4) is not allowed in the natural scheme")])
def test_bad_version_strings_name_the_version_rule(tmp_path, version, rule):
    """Each pattern its own message, on the version's key (the Debian version was once
    refused with the message of a feature list): tests/test_versions.py has them all."""
    message = _problems(tmp_path / "acme.x.toml", _table(version=version).encode())
    assert f"mode[0].version: {version!r} {rule}" in message and "full spec name" not in message


def test_the_fuzz_seed_of_the_debian_scheme_is_valid():
    modes = _read_table(Path("/fuzz/fc26.ovs-dpdk.toml"), DEBIAN_TABLE.encode(), _shipped_modes).modes
    assert [m.name for m in modes] == ["fc26.ovs-dpdk.v2.7.1-1~bpo9+1", "fc26.ovs-dpdk.v2.8.1-1+deb10u1"]


def test_good_version_strings(tmp_path):
    path = tmp_path / "acme.x.toml"
    for version in ("2.7", "3.1.0-2-deb12u1", "3.1.0_tso", "20240131"):
        path.write_text(_table(version=version))
        assert read_table(path).modes[0].version == version


def test_fifo_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "x.toml")
    os.mkfifo(tmp_path / "released.lock")
    from vucompat.core.tables import load_modeset

    with pytest.raises(TableError, match=r"x.toml: is a FIFO \(named pipe\), not a file"):
        within(2, load_modeset, [tmp_path])
    report = within(2, lint, [tmp_path])
    assert any("is a FIFO" in p.message for p in report.errors)
    with pytest.raises(TableError, match="is a FIFO"):
        within(2, read_capabilities, tmp_path / "x.toml")
    with pytest.raises(TableError, match="released.lock: is a FIFO"):
        within(2, read_lock, tmp_path / "released.lock")


def test_fifo_in_the_cli_exits_2(tmp_path):
    os.mkfifo(tmp_path / "x.toml")
    env = {**os.environ, "VUCOMPAT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("VUCOMPAT_TABLES", None)
    cli = str(Path(sys.executable).parent / "vucompat")
    for args, code in ((["list", "--tables", str(tmp_path)], 2), (["lint", str(tmp_path)], 1)):
        done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=30, env=env)
        assert done.returncode == code and "is a FIFO" in done.stderr + done.stdout, done
        assert "Traceback" not in done.stderr


def test_other_unreadable_files(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    assert "dir.toml: is a directory, not a file" in _problems(tmp_path / "dir.toml")
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    assert "symbolic link loop" in _problems(loop)
    dangling = tmp_path / "gone.toml"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "does not exist" in _problems(dangling)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (tomlfile.MAX_BYTES + 1))
    assert "is too large" in _problems(big)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(_table().replace("summary = ", "# caf\xe9\nsummary = ").encode("latin-1"))
    assert "not UTF-8 (byte 0xe9" in _problems(latin)
    assert "not a file" in _problems(Path("/dev/null"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_permissions(tmp_path):
    path = tmp_path / "acme.x.toml"
    path.write_text(_table())
    path.chmod(0)
    assert "make it readable" in _problems(path)


def test_lint_dir_reports_what_list_tables_dir_refuses(tmp_path, monkeypatch):
    """A name the shipped tables define, with other contents: lint DIR said ok."""
    monkeypatch.delenv("VUCOMPAT_TABLES", raising=False)
    copy = (SHIPPED / "fc26.ovs-dpdk.toml").read_text().replace("max_queue_pairs = 128", "max_queue_pairs = 64")
    (tmp_path / "fc26.ovs-dpdk.toml").write_text(copy)
    assert not lint([tmp_path]).errors  # the directory alone is fine
    report = lint([tmp_path], search_path([tmp_path], {}))
    assert any("with other contents (max_queue_pairs 64 -> 128)" in p.message for p in report.errors)
    from click.testing import CliRunner

    from vucompat.cli import main

    result = CliRunner().invoke(main, ["lint", str(tmp_path)], env={"VUCOMPAT_CACHE_DIR": str(tmp_path / "c")})
    assert result.exit_code == 1 and "other contents (max_queue_pairs 64 -> 128)" in result.output
    shutil.rmtree(tmp_path / "c", ignore_errors=True)


def test_permission_errors_name_the_fix(tmp_path, monkeypatch):
    """As root no file is unreadable: the open is made to fail as it would for a user."""
    path = tmp_path / "acme.x.toml"
    path.write_text(_table())

    def refuse(*_args, **_kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tomlfile.os, "open", refuse)
    assert "cannot read: Permission denied: make it readable" in _problems(path)
