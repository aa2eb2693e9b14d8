"""Packagers' version strings (issue 15, item 3): a table's `version_scheme` (natural,
debian, rpm) decides what a mode's version may be and how a lineage's versions are
ordered (core/versions.py, docs/tables.md "Versions"); mode names stay valid wherever
they are used (OVSDB, ovs-vsctl, Placement traits, node labels: core/names.py)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings, strategies as st

from vucompat.core import versions
from vucompat.core.errors import TableError
from vucompat.core.modeset import ModeSet
from vucompat.core.names import LABEL_PREFIX, node_label, placement_trait
from vucompat.core.tables import load_modeset, read_table, shipped_tables_dir
from vucompat.core.versions import DEBIAN, NATURAL, RPM, compare, name_part, problem, sort_key

SHIPPED = shipped_tables_dir()
FIRST_MODE = (SHIPPED / "fc26.ovs-dpdk.toml").read_text().split("[[mode]]")[1].split("\n[[mode]]")[0]
TRAIT = re.compile(r"^CUSTOM_[A-Z0-9_]+$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
#: what `ovs-vsctl` takes unquoted in `options:vhost-compat=NAME`, a map literal, `find`
#: and `remove` (checked with the real ovs-vsctl on a private ovsdb-server: ':' breaks
#: the last three, '+', '~' and '^' pass; test_mode_names_survive_ovs_vsctl_unquoted)
OVS_VSCTL_SAFE = re.compile(r"^[A-Za-z0-9._+~^-]+$")

#: (a, b, dpkg --compare-versions' answer), taken from dpkg 1.21 on Debian 12
DPKG = [
    ("3.1.0~rc1", "3.1.0", -1),
    ("3.1.0", "3.1.0-1", -1),
    ("3.1.0-2", "3.1.0-2+deb12u1", -1),
    ("3.1.0-2+deb12u1", "3.1.0-2+deb12u2", -1),
    ("3.1.0-2+deb12u1", "3.1.0-3", -1),
    ("2.17.9-0ubuntu0.22.04.1", "2.17.9-1", -1),
    ("2.17.9-0ubuntu0.22.04.1", "2.17.9", 1),
    ("1:2.9.0-1~bpo9+1", "3.1.0-2", 1),
    ("2.9.0-1~bpo9+1", "2.9.0-1", -1),
    ("2.9.0-1", "2.9.0-1+b1", -1),
    ("1.0", "1.0-0", 0),
    ("1.0", "1.00", 0),
    ("1.0~", "1.0", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0~~a", "1.0~", -1),
    ("1.0a", "1.0", 1),
    ("1.0a", "1.0+", -1),
    ("1.0+", "1.0.", -1),
    ("1.0.", "1.0.0", 0),
    ("1.0", "1.0.0", -1),
    ("1.2.10", "1.2.9", 1),
    ("0:1.0", "1.0", 0),
    ("1:0.1", "9.9", 1),
    ("2.0-1ubuntu1~ppa1", "2.0-1ubuntu1", -1),
    ("1.0-A", "1.0-a", -1),
    ("3.1.0~rc1", "3.1.0~rc2", -1),
    ("3.1.0~rc10", "3.1.0~rc9", 1),
    ("3.1.0~beta", "3.1.0~rc1", -1),
    ("1.0-1", "1.0-1.1", -1),
    ("1.0-1~", "1.0-1", -1),
]

#: rpm's own test vectors for rpmvercmp (rpm's tests/rpmvercmp.at, tilde and caret
#: included), then whole EVRs as rpm 4.18's rpm.vercmp() answers
RPMVERCMP = [
    ("1.0", "1.0", 0), ("1.0", "2.0", -1), ("2.0", "1.0", 1), ("2.0.1", "2.0.1", 0), ("2.0", "2.0.1", -1),
    ("2.0.1", "2.0", 1), ("2.0.1a", "2.0.1a", 0), ("2.0.1a", "2.0.1", 1), ("2.0.1", "2.0.1a", -1),
    ("5.5p1", "5.5p1", 0), ("5.5p1", "5.5p2", -1), ("5.5p2", "5.5p1", 1), ("5.5p10", "5.5p10", 0),
    ("5.5p1", "5.5p10", -1), ("5.5p10", "5.5p1", 1), ("10xyz", "10.1xyz", -1), ("10.1xyz", "10xyz", 1),
    ("xyz10", "xyz10", 0), ("xyz10", "xyz10.1", -1), ("xyz10.1", "xyz10", 1), ("xyz.4", "xyz.4", 0),
    ("xyz.4", "8", -1), ("8", "xyz.4", 1), ("xyz.4", "2", -1), ("2", "xyz.4", 1), ("5.5p2", "5.6p1", -1),
    ("5.6p1", "5.5p2", 1), ("5.6p1", "6.5p1", -1), ("6.5p1", "5.6p1", 1), ("6.0.rc1", "6.0", 1),
    ("6.0", "6.0.rc1", -1), ("10b2", "10a1", 1), ("10a2", "10b2", -1), ("1.0aa", "1.0aa", 0),
    ("1.0a", "1.0aa", -1), ("1.0aa", "1.0a", 1), ("10.0001", "10.0001", 0), ("10.0001", "10.1", 0),
    ("10.1", "10.0001", 0), ("10.0001", "10.0039", -1), ("10.0039", "10.0001", 1), ("4.999.9", "5.0", -1),
    ("5.0", "4.999.9", 1), ("20101121", "20101121", 0), ("20101121", "20101122", -1), ("20101122", "20101121", 1),
    ("2_0", "2_0", 0), ("2.0", "2_0", 0), ("2_0", "2.0", 0), ("a", "a", 0), ("a+", "a+", 0), ("a+", "a_", 0),
    ("a_", "a+", 0), ("+a", "+a", 0), ("+a", "_a", 0), ("_a", "+a", 0), ("+_", "+_", 0), ("_+", "+_", 0),
    ("_+", "_+", 0), ("+", "_", 0), ("_", "+", 0),
    ("1.0~rc1", "1.0~rc1", 0), ("1.0~rc1", "1.0", -1), ("1.0", "1.0~rc1", 1), ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~rc2", "1.0~rc1", 1), ("1.0~rc1~git123", "1.0~rc1~git123", 0), ("1.0~rc1~git123", "1.0~rc1", -1),
    ("1.0~rc1", "1.0~rc1~git123", 1),
    ("1.0^", "1.0^", 0), ("1.0^", "1.0", 1), ("1.0", "1.0^", -1), ("1.0^git1", "1.0^git1", 0),
    ("1.0^git1", "1.0", 1), ("1.0", "1.0^git1", -1), ("1.0^git1", "1.0^git2", -1), ("1.0^git2", "1.0^git1", 1),
    ("1.0^git1", "1.01", -1), ("1.01", "1.0^git1", 1), ("1.0^20160101", "1.0^20160101", 0),
    ("1.0^20160101", "1.0.1", -1), ("1.0.1", "1.0^20160101", 1), ("1.0^20160101^git1", "1.0^20160101^git1", 0),
    ("1.0^20160102", "1.0^20160101^git1", 1), ("1.0^20160101^git1", "1.0^20160102", -1),
    ("1.0~rc1^git1", "1.0~rc1^git1", 0), ("1.0~rc1^git1", "1.0~rc1", 1), ("1.0~rc1", "1.0~rc1^git1", -1),
    ("1.0^git1~pre", "1.0^git1~pre", 0), ("1.0^git1", "1.0^git1~pre", 1), ("1.0^git1~pre", "1.0^git1", -1),
    # rpm's "oddity" (RhBug:811992), kept as rpm keeps it
    ("1b.fc17", "1b.fc17", 0), ("1b.fc17", "1.fc17", -1), ("1.fc17", "1b.fc17", 1), ("1g.fc17", "1.fc17", 1),
]
RPM_EVR = [
    ("3.1.0-65.el9", "3.1.0-66.el9", -1),
    ("3.1.0-65.el9", "3.1.0-65.el9_2", -1),
    ("3.1.0-65.el9_2", "3.1.0-65.el9_2.1", -1),
    ("3.1.0~rc1-1.el9", "3.1.0-1.el9", -1),
    ("1:2.9.0-1.el9", "3.1.0-1.el9", 1),
    ("3.1.0-1.el9", "3.1.0^git1-1.el9", -1),
    ("3.1.0^git1-1", "3.1.1-1", -1),
    ("2.17.0-1.fc37", "2.17.0-1.fc38", -1),
    ("3.1.0-65.el9", "3.1.0-65.el9", 0),
    ("1.0-1", "1_0-1", 0),
    ("3.1.0-10.el9", "3.1.0-9.el9", 1),
    ("0:3.1.0-1", "3.1.0-1", 0),
    ("3.1.0-1.el9", "3.1.0-1.el9~bootstrap", 1),
]


def table(versions_and_dates: list[tuple[str, str]], scheme: str | None = None, lineage: str = "acme.x") -> str:
    """A table of `lineage` whose modes are these versions (the first complete, the
    others empty deltas)."""
    head = f'lineage = "{lineage}"\nsummary = "s"\n' + (f'version_scheme = "{scheme}"\n' if scheme else "")
    out = head
    for i, (version, released) in enumerate(versions_and_dates):
        out += f'\n[[mode]]\nversion = "{version}"\nreleased = {released}\n'
        if i == 0:
            out += "\n".join(line for line in FIRST_MODE.splitlines()[3:]) + "\n"  # after version/released/provenance
    return out


def load_one(tmp_path: Path, text: str, lineage: str = "acme.x"):
    path = tmp_path / f"{lineage}.toml"
    path.write_text(text)
    return read_table(path)


def refusal(tmp_path: Path, text: str, lineage: str = "acme.x") -> str:
    with pytest.raises(TableError) as err:
        load_one(tmp_path, text, lineage)
    assert str(tmp_path / f"{lineage}.toml") in str(err.value)  # the file, always
    return str(err.value)


# -- acceptance of what packagers write --

@pytest.mark.parametrize("scheme, version, name", [
    (DEBIAN, "3.1.0-2+deb12u1", "v3.1.0-2+deb12u1"),
    (DEBIAN, "2.17.9-0ubuntu0.22.04.1", "v2.17.9-0ubuntu0.22.04.1"),
    (DEBIAN, "1:2.9.0-1~bpo9+1", "v2.9.0-1~bpo9+1"),  # the epoch is not in the name
    (DEBIAN, "3.1.0~rc1", "v3.1.0~rc1"),
    (RPM, "3.1.0-65.el9", "v3.1.0-65.el9"),
    (RPM, "3.1.0~rc1", "v3.1.0~rc1"),
    (RPM, "1:3.1.0-65.el9_2", "v3.1.0-65.el9_2"),
    (RPM, "3.1.0^git20240101-1.fc40", "v3.1.0^git20240101-1.fc40"),
    (NATURAL, "2.17.9-0ubuntu0.22.04.1", "v2.17.9-0ubuntu0.22.04.1"),
    (NATURAL, "3.1.0-65.el9", "v3.1.0-65.el9"),
])
def test_real_package_versions_are_accepted(tmp_path, scheme, version, name):
    (mode,) = load_one(tmp_path, table([(version, "2024-02-18")], None if scheme == NATURAL else scheme)).modes
    assert mode.name == f"acme.x.{name}" and mode.version == version and mode.version_scheme == scheme
    assert OVS_VSCTL_SAFE.match(mode.name)
    assert TRAIT.match(placement_trait(mode.name)) and len(placement_trait(mode.name)) <= 255
    label = node_label(mode.name)
    assert label.startswith(LABEL_PREFIX + "/") and LABEL_NAME.match(label.split("/", 1)[1])
    assert len(label.split("/", 1)[1]) <= 63


def test_a_debian_lineage_orders_as_dpkg(tmp_path):
    """The versions of one package's history, all released the same day (so only the
    scheme orders them): file order must be dpkg's, and newest is dpkg's newest."""
    history = ["3.1.0~rc1", "3.1.0-1", "3.1.0-2", "3.1.0-2+deb12u1", "1:2.9.0-1~bpo9+1"]
    modes = load_one(tmp_path, table([(v, "2024-02-18") for v in history], DEBIAN)).modes
    newest_first = ModeSet({m.name: m for m in modes}).newest_first
    assert [m.version for m in newest_first] == history[::-1]
    # the natural order would have put 3.1.0~rc1 after 3.1.0-2+deb12u1: refused in natural order
    message = refusal(tmp_path, table([("3.1.0-1", "2024-02-18"), ("3.1.0~rc1", "2024-02-18")], DEBIAN))
    assert "mode[1].released: v3.1.0~rc1 (2024-02-18) is not newer than the version before it, v3.1.0-1 " \
           "(2024-02-18) (dpkg's order)" in message


def test_an_rpm_lineage_orders_as_rpm(tmp_path):
    history = ["3.1.0~rc1-1.el9", "3.1.0-1.el9", "3.1.0-1.el9_1", "3.1.0^git1-1.el9", "3.1.0-65.el9", "1:2.9.0-1.el9"]
    history.sort(key=lambda v: sort_key(v, RPM))
    assert history == ["3.1.0~rc1-1.el9", "3.1.0-1.el9", "3.1.0-1.el9_1", "3.1.0-65.el9", "3.1.0^git1-1.el9",
                       "1:2.9.0-1.el9"]
    modes = load_one(tmp_path, table([(v, "2024-02-18") for v in history], RPM)).modes
    assert [m.version for m in ModeSet({m.name: m for m in modes}).newest_first] == history[::-1]


def test_the_release_date_still_comes_first(tmp_path):
    """A backport released later is newer, whatever its version: a lineage lists
    versions oldest first by date, and the scheme orders only versions of one date."""
    modes = load_one(tmp_path, table([("2.9.0-1", "2018-02-01"), ("2.9.0-1~bpo9+1", "2018-06-01")], DEBIAN)).modes
    assert ModeSet({m.name: m for m in modes}).newest_first[0].version == "2.9.0-1~bpo9+1"


@pytest.mark.parametrize("a, b, expected", DPKG)
def test_dpkg_order(a, b, expected):
    assert compare(a, b, DEBIAN) == expected and compare(b, a, DEBIAN) == -expected


@pytest.mark.parametrize("a, b, expected", RPMVERCMP + RPM_EVR)
def test_rpm_order(a, b, expected):
    assert compare(a, b, RPM) == expected and compare(b, a, RPM) == -expected


def test_a_missing_release_sorts_first():
    """rpm does not compare releases when one is missing (1.0 and 1.0-1 are equal to
    rpm.vercmp); an order needs one answer: a version without a release comes first."""
    assert compare("1.0", "1.0-1", RPM) == -1 and compare("1.0", "1.0-0", RPM) == -1
    assert compare("1.0", "1.0~rc1-1", RPM) == 1  # the version decides first


# -- per-pattern errors: what, where (file and key), what to do --

@pytest.mark.parametrize("scheme, version, message", [
    (NATURAL, "3.1.0-2+deb12u1", "'+' (character 8) is not allowed in the natural scheme (the default): for a "
                                 "Debian or RPM package version write version_scheme = \"debian\" or \"rpm\""),
    (NATURAL, "2.8~rc1", "'~' (character 4) is not allowed in the natural scheme"),
    (NATURAL, "1:2.9", "':' (character 2) is not allowed in the natural scheme"),
    (NATURAL, "2.8-rc1.._", "ends with '_': a version ends with a letter or a digit"),
    (NATURAL, "2..8", "has two separators in a row ('..', character 2)"),
    (NATURAL, "-2.8", "starts with '-': a version starts with a letter or a digit"),
    (NATURAL, "3.1 0", "' ' (character 4) is not allowed in the natural scheme"),
    (NATURAL, "", "is empty: write the version"),
    (DEBIAN, "a:2.9.0-1", "the epoch 'a' (before ':') is not a number"),
    (DEBIAN, "1:2:9.0-1", "has more than one ':'"),
    (DEBIAN, "1:", "has nothing after the epoch '1:'"),
    (DEBIAN, "3.1.0-", "ends with '-': the Debian revision after the last '-' is empty"),
    (DEBIAN, "v3.1.0-1", "the upstream version 'v3.1.0' does not start with a digit (Debian Policy 5.6.12)"),
    (DEBIAN, "3.1.0_1-1", "'_' (character 6) is not allowed in a Debian version (Debian Policy 5.6.12"),
    (DEBIAN, "3.1.0^git1", "'^' (character 6) is not allowed in a Debian version (Debian Policy 5.6.12 allows "
                           "letters, digits and . + ~ -): for an RPM version, use version_scheme = \"rpm\""),
    (DEBIAN, "3.1.", "ends with '.': end the version with a letter, a digit, '~' or '+'"),
    (DEBIAN, "3.1.0-1+recommended", "ends with '+recommended', which names a derived mode"),
    (RPM, "3.1.0-65-el9", "has more than one '-': an RPM version and release cannot contain '-'"),
    (RPM, "3.1.0-", "ends with '-': the release after '-' is empty"),
    (RPM, "-1.el9", "has no version before the release '-1.el9'"),
    (RPM, "~3.1-1", "starts with '~': an RPM version starts with a letter or a digit"),
    (RPM, "3.1.0%{dist}", "'%' (character 6) is not allowed in an RPM version"),
    (DEBIAN, "3.1.0-1" + "0" * 19, "a number of 20 digits in the version: at most 18"),
])
def test_each_bad_pattern_has_its_own_message(tmp_path, scheme, version, message):
    assert problem(version, scheme) is not None and message in problem(version, scheme)
    text = refusal(tmp_path, table([(version, "2024-02-18")], None if scheme == NATURAL else scheme))
    assert f"acme.x.toml: mode[0].version: {version!r} {message}" in text
    assert "full spec name" not in text  # (the message of another field, as in issue 15)


def test_version_errors_of_several_modes_are_said_at_once(tmp_path):
    text = refusal(tmp_path, table([("3.1.0-", "2024-01-01"), ("3.1.0_2", "2024-02-01")], DEBIAN))
    assert "mode[0].version: '3.1.0-' ends with '-'" in text and "mode[1].version: '3.1.0_2' '_'" in text


def test_an_unknown_scheme_is_named(tmp_path):
    text = refusal(tmp_path, table([("3.1.0", "2024-02-18")], "ubuntu"))
    assert "acme.x.toml: version_scheme: 'ubuntu' is not a version scheme: write one of 'natural', 'debian', " \
           "'rpm'" in text


def test_one_name_per_version(tmp_path):
    """The epoch is not in the name: 2.0 and 1:2.0 would share one; dpkg's 1.0 and
    1.0-0 (and rpm's 1.0 and 1_0) are one version to their package manager."""
    text = refusal(tmp_path, table([("2.0-1", "2024-01-01"), ("1:2.0-1", "2024-02-01")], DEBIAN))
    assert "mode[1].version: version 1:2.0-1 gives the mode name v2.0-1, as 2.0-1 (mode[0]) does" in text
    text = refusal(tmp_path, table([("1.0", "2024-01-01"), ("1.0-0", "2024-02-01")], DEBIAN))
    assert "mode[1].version: version 1.0-0 is the same version as 1.0 (mode[0]) to dpkg" in text
    text = refusal(tmp_path, table([("1.0-1", "2024-01-01"), ("1_0-1", "2024-02-01")], RPM))
    assert "version 1_0-1 is the same version as 1.0-1 (mode[0]) to rpm" in text


def test_names_that_share_a_trait_are_refused(tmp_path):
    """Traits are upper case with '.', '-' and '_' alike (as they always were): two modes
    of one search path that would share one cannot both load."""
    directory = tmp_path / "t"
    directory.mkdir()
    (directory / "acme.x.toml").write_text(table([("3.1.2", "2024-01-01"), ("3.1-2", "2024-02-01")]))
    with pytest.raises(TableError) as err:
        load_modeset([directory])
    assert "mode[1].version: acme.x.v3.1-2 has the Placement trait CUSTOM_VHOSTUSER_COMPAT_ACME_X_V3_1_2, as " \
           "acme.x.v3.1.2" in str(err.value)
    # a debian name never shares one with a natural name: its '+', '~' and '^' are escaped
    (directory / "acme.x.toml").write_text(table([("3.1.0-2+deb12u1", "2024-01-01")], DEBIAN))
    (directory / "acme.y.toml").write_text(table([("3.1.0-2.deb12u1", "2024-01-01")], lineage="acme.y"))
    assert len(load_modeset([directory]).modes) == 2 + len(load_modeset([]).modes)
    assert placement_trait("acme.x.v3.1.0-2+deb12u1") != placement_trait("acme.x.v3.1.0-2.deb12u1")


def test_traits_and_labels_of_natural_names_are_as_before():
    """Names of the natural scheme (every name before version schemes) keep the trait
    and label they had: the name upper-cased, '.', '-', '_' as '_'; the label the name."""
    for name in ("upstream.ovs-dpdk.v2.13", "debian12.ovs-dpdk.v3.1.0-tso", "acme.x.v3.1.0_tso",
                 "custom.baseline.v0123456789ab"):
        assert placement_trait(name) == "CUSTOM_VHOSTUSER_COMPAT_" + re.sub(r"[^A-Z0-9]", "_", name.upper())
        assert node_label(name) == f"{LABEL_PREFIX}/{name}"
    assert placement_trait("acme.x.v3.1.0-2+deb12u1") == "CUSTOM_VHOSTUSER_COMPAT_ACME_X_V3_1_0_2__PDEB12U1"
    assert node_label("acme.x.v3.1.0~rc1") == f"{LABEL_PREFIX}/acme.x.v3.1.0__trc1"
    long = "acme." + "x" * 300 + ".v1.0"
    assert len(placement_trait(long)) == 255 and TRAIT.match(placement_trait(long))
    assert placement_trait(long) != placement_trait(long[:-1] + "1")
    assert len(node_label(long).split("/", 1)[1]) == 63 and node_label(long) != node_label(long[:-1] + "1")


def test_the_scheme_survives_the_registry_row():
    """A mode read back from a registry (or the fleet) orders as its table did."""
    from vucompat.ovsdb.rows import VERSION_SCHEME, mode_values, row_to_mode

    mode = next(iter(read_table(SHIPPED / "fc26.ovs-dpdk.toml").modes))
    debian = dataclasses.replace(mode, name="acme.x.v2.9.0-1~bpo9+1", lineage="acme.x", version="1:2.9.0-1~bpo9+1",
                                 version_scheme=DEBIAN)
    values = mode_values(debian)
    assert values["external_ids"] == {VERSION_SCHEME: DEBIAN}
    assert mode_values(mode)["external_ids"] == {}  # natural rows are written as before
    back = row_to_mode(SimpleNamespace(**values), "unix:x")
    assert back.version_scheme == DEBIAN and back.order_key == debian.order_key
    assert debian.as_dict()["version_scheme"] == DEBIAN and "version_scheme" not in mode.as_dict()


# -- properties --

_DEB_CHARS = "0123456789abz.+~"
_RPM_CHARS = "0123456789abz._+~^"


@st.composite
def debian_versions(draw) -> str:
    epoch = draw(st.sampled_from(["", "", "", "1:", "2:", "0:"]))
    upstream = draw(st.sampled_from("0123456789")) + draw(st.text(_DEB_CHARS + "-", max_size=8))
    revision = draw(st.one_of(st.just(""), st.text(_DEB_CHARS, min_size=1, max_size=6).map(lambda r: "-" + r)))
    return epoch + upstream + revision


@st.composite
def rpm_versions(draw, release: bool = True) -> str:
    epoch = draw(st.sampled_from(["", "", "", "1:", "0:"]))
    version = draw(st.sampled_from("0123456789ab")) + draw(st.text(_RPM_CHARS, max_size=8))
    tail = ("-" + draw(st.sampled_from("0123456789ab")) + draw(st.text(_RPM_CHARS, max_size=6))) if release else ""
    return epoch + version + tail


@settings(max_examples=300, deadline=None)
@given(st.one_of(debian_versions().map(lambda v: (v, DEBIAN)), rpm_versions().map(lambda v: (v, RPM)),
                 st.from_regex(r"\A[0-9a-zA-Z]{1,4}([._-][0-9a-zA-Z]{1,4}){0,5}\Z").map(lambda v: (v, NATURAL))))
def test_every_valid_version_makes_a_valid_name(case):
    version, scheme = case
    assume(problem(version, scheme) is None)
    name = f"acme.x.v{name_part(version, scheme)}"
    assert OVS_VSCTL_SAFE.match(name) and ":" not in name
    trait = placement_trait(name)
    assert TRAIT.match(trait) and len(trait) <= 255
    label = node_label(name).split("/", 1)[1]
    assert LABEL_NAME.match(label) and len(label) <= 63
    assert _unescape(label) == name  # labels read back to one name: unique


def _unescape(label: str) -> str:
    codes = {"u": "_", "p": "+", "t": "~", "c": "^"}
    out, i = "", 0
    while i < len(label):
        if label.startswith("__", i):
            out += codes[label[i + 2]]
            i += 3
        else:
            out += label[i]
            i += 1
    return out


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80), st.sampled_from(versions.SCHEMES))
def test_keys_and_checks_never_raise(a, b, scheme):
    """Registry rows may hold any string: keys are total, checks always answer."""
    assert compare(a, b, scheme) == -compare(b, a, scheme)
    assert compare(a, a, scheme) == 0
    assert problem(a, scheme) is None or isinstance(problem(a, scheme), str)
    name_part(a, scheme)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(debian_versions(), rpm_versions()), min_size=3, max_size=3), st.sampled_from([DEBIAN, RPM]))
def test_the_order_is_a_total_order(triple, scheme):
    a, b, c = triple
    if compare(a, b, scheme) <= 0 and compare(b, c, scheme) <= 0:
        assert compare(a, c, scheme) <= 0
    assert (compare(a, b, scheme) == 0) == (sort_key(a, scheme) == sort_key(b, scheme))


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg is not installed (the DPKG examples still run)")
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=[Phase.generate])
@given(st.lists(st.tuples(debian_versions(), debian_versions()), min_size=60, max_size=60))
def test_the_debian_order_is_dpkgs(pairs):
    """Against the real dpkg --compare-versions (each failure shows its pair; no
    shrinking: each step would run dpkg again)."""
    pairs = [(a, b) for a, b in pairs if problem(a, DEBIAN) is None and problem(b, DEBIAN) is None]
    assert len(pairs) > 20  # the generator makes valid versions most of the time
    for a, b in pairs:
        less = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode
        equal = subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode
        assert less in (0, 1) and equal in (0, 1), (a, b)  # both valid to dpkg
        assert compare(a, b, DEBIAN) == (-1 if less == 0 else 0 if equal == 0 else 1), (a, b)


@pytest.mark.skipif(shutil.which("rpm") is None, reason="rpm is not installed (rpm's own vectors still run)")
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=[Phase.generate])
@given(st.booleans().flatmap(lambda r: st.lists(st.tuples(rpm_versions(r), rpm_versions(r)), min_size=100,
                                                max_size=100)))
def test_the_rpm_order_is_rpms(pairs):
    """Against the real rpm (rpm.vercmp, one rpm process for all pairs); both sides
    with a release or both without (rpm does not compare a missing release)."""
    pairs = [(a, b) for a, b in pairs if problem(a, RPM) is None and problem(b, RPM) is None]
    assert len(pairs) > 50
    lua = " ".join(f'print(rpm.vercmp("{a}", "{b}"), "\\n")' for a, b in pairs)
    out = subprocess.run(["rpm", "--eval", "%{lua: " + lua + "}"], capture_output=True, text=True, check=True)
    answers = [int(x) for x in out.stdout.split()]
    assert len(answers) == len(pairs)
    for (a, b), answer in zip(pairs, answers):
        assert compare(a, b, RPM) == answer, (a, b)


def test_mode_names_survive_ovs_vsctl_unquoted(ovsdb_servers):
    """Names of every scheme, set and matched with ovs-vsctl as users type them: in
    options:vhost-compat=NAME, a map literal, find and remove; ':' (an epoch) would not."""
    server = ovsdb_servers("vsctl-names")
    vsctl = ["ovs-vsctl", f"--db={server.unix_remote}", "--no-wait"]
    subprocess.run([*vsctl, "init", "--", "add-br", "br0", "--", "add-port", "br0", "p", "--", "set", "Interface",
                    "p", "type=internal"], check=True)
    for name in ("acme.x.v3.1.0-2+deb12u1", "acme.x.v2.9.0-1~bpo9+1", "acme.x.v3.1.0^git1-1.fc40",
                 "acme.x.v3.1.0-65.el9_2"):
        subprocess.run([*vsctl, "set", "Interface", "p", f"options:vhost-compat={name}"], check=True)
        got = subprocess.run([*vsctl, "get", "Interface", "p", "options:vhost-compat"], capture_output=True,
                             text=True, check=True).stdout.strip()
        assert got.strip('"') == name
        found = subprocess.run([*vsctl, "--bare", "--columns=name", "find", "Interface",
                                f"options:vhost-compat={name}"], capture_output=True, text=True, check=True)
        assert found.stdout.strip() == "p"
        subprocess.run([*vsctl, "remove", "Interface", "p", "options", f"vhost-compat={name}"], check=True)
        subprocess.run([*vsctl, "set", "Interface", "p", f"options={{vhost-compat={name}}}"], check=True)
    refused = subprocess.run([*vsctl, "find", "Interface", "options:vhost-compat=acme.x.v1:2.9.0"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "unexpected \":\"" in refused.stderr


def test_a_debian_lineage_in_a_registry(ovsdb_servers, tmp_path):
    """Loaded into a real registry and read back: the scheme orders the modes there as
    in the table (latest is dpkg's newest of the date), show has the epoch and the
    scheme, traits and labels are valid and escaped."""
    import json

    from vucompat_testing.processes import ENV, VUCOMPAT

    directory = tmp_path / "tables"
    directory.mkdir()
    history = ["3.1.0~rc1", "3.1.0-1", "1:2.9.0-1~bpo9+1"]
    (directory / "acme.x.toml").write_text(table([(v, "2024-02-18") for v in history], DEBIAN))
    server = ovsdb_servers("deb-registry", vswitch=False)
    remote = server.unix_remote

    def run(*args: str) -> str:
        return subprocess.run([VUCOMPAT, *args], check=True, capture_output=True, text=True, env=ENV).stdout

    run("load", "--db", remote, "--tables", str(directory))
    shown = json.loads(run("show", "acme.x.v2.9.0-1~bpo9+1", "--db", remote, "--format", "json"))
    assert shown["version"] == "1:2.9.0-1~bpo9+1" and shown["version_scheme"] == DEBIAN
    (row,) = [r for r in _select(remote) if r["name"] == "acme.x.v3.1.0~rc1"]
    assert dict(row["external_ids"][1]) == {"vucompat-version-scheme": DEBIAN}
    listed = [line.split()[0] for line in run("list", "--db", remote).splitlines()[1:]]
    mine = [name for name in listed if name.startswith("acme.x.")]
    assert mine == ["acme.x.v2.9.0-1~bpo9+1", "acme.x.v3.1.0-1", "acme.x.v3.1.0~rc1"]  # newest first, as dpkg
    traits = json.loads(run("traits", "--db", remote, "--format", "json"))
    assert "CUSTOM_VHOSTUSER_COMPAT_ACME_X_V3_1_0__TRC1" in traits["traits"]
    assert all(TRAIT.match(t) for t in traits["traits"])
    assert f"{LABEL_PREFIX}/acme.x.v2.9.0-1__tbpo9__p1" in traits["labels"]
    assert all(LABEL_NAME.match(label.split("/", 1)[1]) for label in traits["labels"])


def _select(remote: str) -> list[dict]:
    from vucompat_testing.ovsdb_server import select

    return select(remote, "Compat_Mode", ["name", "external_ids"])
