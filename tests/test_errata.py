"""Errata: a wrong released definition is corrected only through an explicit, checked
entry of released.lock, and a registry that holds the superseded definition is
corrected without rewriting the contract of a port that uses it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from vucompat.core.errors import UsageError
from vucompat.core.lint import LOCK_FILE, add_erratum, lint, read_lock
from vucompat.core.lock import undo
from vucompat.core.tables import load_modeset
from vucompat_testing.ovsdb_server import select
from test_cli import run

REPLY_ACK = '    "VHOST_USER_PROTOCOL_F_REPLY_ACK",\n'


def test_the_shipped_errata_are_in_force_and_each_undoes_to_what_it_supersedes(shipped: Path):
    report = lint([shipped])
    assert report.errors == []
    corrected = {e.mode: e.changes for e in report.errata}
    assert corrected == {
        "upstream.ovs-dpdk.v2.6": ("max_queue_pairs 128 -> 32768",),
        **{f"upstream.ovs-dpdk.v{v}": ("-VHOST_USER_PROTOCOL_F_REPLY_ACK",) for v in ("2.8", "2.9", "2.11", "2.13")}}
    lock = read_lock(shipped / LOCK_FILE)
    for erratum in lock.errata:
        assert erratum.reason and erratum.evidence
        assert undo(lock.modes[erratum.mode][1], erratum.changes).digest == erratum.superseded
    # the superseded digests are the ones the project released before
    assert lock.errata_of("upstream.ovs-dpdk.v2.13")[0].superseded.startswith("sha256:629a7cee226d")


@pytest.fixture
def packager_dir(tmp_path: Path, shipped: Path) -> Path:
    """A packager's released lineage (acme.ovs-dpdk: the fc26 table under another name,
    so the shipped copy does not shadow it) and its lock."""
    directory = tmp_path / "acme"
    directory.mkdir()
    (directory / "acme.ovs-dpdk.toml").write_text((shipped / "fc26.ovs-dpdk.toml").read_text()
                                                  .replace('"fc26.ovs-dpdk"', '"acme.ovs-dpdk"'))
    head, *entries = (shipped / LOCK_FILE).read_text().split("\n[[errata]]")[0].split("\n[modes.")
    lock = head + "".join("\n[modes." + e.replace('"fc26.', '"acme.') for e in entries if e.startswith('"fc26.'))
    (directory / LOCK_FILE).write_text(lock)
    assert set(read_lock(directory / LOCK_FILE).modes) == {"acme.ovs-dpdk.v2.7", "acme.ovs-dpdk.v2.8"}
    return directory


def test_an_unlisted_change_fails_and_names_the_erratum_command(packager_dir: Path):
    table = packager_dir / "acme.ovs-dpdk.toml"
    table.write_text(table.read_text().replace(REPLY_ACK, ""))
    messages = [str(p) for p in lint([packager_dir]).errors]
    assert any("acme.ovs-dpdk.v2.8 changed since its release: -VHOST_USER_PROTOCOL_F_REPLY_ACK" in m
               and "vucompat lint --erratum acme.ovs-dpdk.v2.8" in m for m in messages), messages


def test_an_erratum_is_recorded_checked_and_then_the_old_definition_is_refused(packager_dir: Path):
    table = packager_dir / "acme.ovs-dpdk.toml"
    original = table.read_text()
    with pytest.raises(UsageError, match="the table defines what the lock holds"):
        add_erratum(packager_dir, "acme.ovs-dpdk.v2.8", "why", ["where"])
    table.write_text(original.replace(REPLY_ACK, ""))
    with pytest.raises(UsageError, match="needs --reason and at least one --evidence"):
        add_erratum(packager_dir, "acme.ovs-dpdk.v2.8", "", [])
    code, out, err = run("lint", str(packager_dir), "--erratum", "acme.ovs-dpdk.v2.8", "--reason",
                         "DPDK 17.05 never offers REPLY_ACK", "--evidence",
                         "https://github.com/DPDK/dpdk/blob/v17.05/lib/librte_vhost/vhost_user.h#L59")
    assert code == 0, err
    assert "recorded the erratum" in out and "(-VHOST_USER_PROTOCOL_F_REPLY_ACK)" in out
    report = lint([packager_dir])
    assert report.errors == [] and [e.mode for e in report.errata] == ["acme.ovs-dpdk.v2.8"]
    # the table may not go back to the superseded definition
    table.write_text(original)
    messages = [str(p) for p in lint([packager_dir]).errors]
    assert any("is defined as before its erratum" in m for m in messages), messages
    table.write_text(original.replace(REPLY_ACK, ""))
    # an erratum whose changes do not say what it changed is refused
    lock = packager_dir / LOCK_FILE
    lock.write_text(lock.read_text().replace('changes = ["-VHOST_USER_PROTOCOL_F_REPLY_ACK"]',
                                             'changes = ["-VHOST_USER_PROTOCOL_F_MTU"]'))
    messages = [str(p) for p in lint([packager_dir]).errors]
    assert any("erratum change '-VHOST_USER_PROTOCOL_F_MTU'" in m for m in messages), messages


def _insert_port(remote: str, mode: str) -> None:
    ops = ["VuCompat",
           {"op": "select", "table": "Compat_Mode", "where": [["name", "==", mode]], "columns": ["_uuid"]}]
    uuid = json.loads(subprocess.run(["ovsdb-client", "transact", remote, json.dumps(ops)], capture_output=True,
                                     text=True, check=True).stdout)[0]["rows"][0]["_uuid"]
    row = {"interface_name": "vhu0", "interface_uuid": ["uuid", "6a3c8e1e-0000-4000-8000-000000000001"],
           "interface_type": "dpdkvhostuserclient", "requested": mode, "resolved": mode, "mode": uuid,
           "state": "applied"}
    done = subprocess.run(["ovsdb-client", "transact", remote,
                           json.dumps(["VuCompat", {"op": "insert", "table": "Port", "row": row}])],
                          capture_output=True, text=True, check=True)
    assert "error" not in done.stdout, done.stdout


def test_load_corrects_a_registry_but_keeps_a_running_ports_contract(ovsdb_servers, packager_dir: Path,
                                                                     tmp_path: Path):
    released = tmp_path / "released"
    shutil.copytree(packager_dir, released)
    table = packager_dir / "acme.ovs-dpdk.toml"
    table.write_text(table.read_text().replace(REPLY_ACK, ""))
    add_erratum(packager_dir, "acme.ovs-dpdk.v2.8", "DPDK 17.05 never offers REPLY_ACK", ["vhost_user.h#L59"])
    corrected = load_modeset([packager_dir]).modes["acme.ovs-dpdk.v2.8"]

    server = ovsdb_servers("errata")
    remote = server.unix_remote

    def digests() -> dict[str, str]:
        return {r["name"]: r["digest"] for r in select(remote, "Compat_Mode")}

    assert run("load", "--db", remote, "--tables", str(released))[0] == 0
    old = digests()["acme.ovs-dpdk.v2.8"]
    _insert_port(remote, "acme.ovs-dpdk.v2.8")
    # a port uses the superseded definition: it is kept for it, and marked, loudly
    code, out, err = run("load", "--db", remote, "--tables", str(packager_dir))
    assert code == 0, err
    assert "kept the definition an erratum corrects (-VHOST_USER_PROTOCOL_F_REPLY_ACK)" in out and "vhu0" in out
    assert digests()["acme.ovs-dpdk.v2.8"] == old
    code, out, _ = run("list", "--db", remote)
    assert "acme.ovs-dpdk.v2.8 (superseded by an erratum)" in out
    code, out, _ = run("show", "acme.ovs-dpdk.v2.8", "--db", remote, "--format", "json")
    assert json.loads(out)["superseded_by"] == corrected.digest
    # a second load changes nothing more
    assert "nothing to do" in run("load", "--db", remote, "--tables", str(packager_dir))[1]
    # once no port uses it, the next load puts the corrected definition in its place
    subprocess.run(["ovsdb-client", "transact", remote,
                    json.dumps(["VuCompat", {"op": "delete", "table": "Port", "where": []}])], check=True,
                   capture_output=True)
    code, out, _ = run("load", "--db", remote, "--tables", str(packager_dir))
    assert code == 0 and "corrected 1 by erratum (acme.ovs-dpdk.v2.8: -VHOST_USER_PROTOCOL_F_REPLY_ACK)" in out
    assert digests()["acme.ovs-dpdk.v2.8"] == corrected.digest
    # without an erratum, another meaning is still refused whole
    table.write_text(table.read_text().replace("max_queue_pairs = 128", "max_queue_pairs = 64"))
    code, _, err = run("load", "--db", remote, "--tables", str(packager_dir))
    assert code == 2 and "refusing to load" in err and digests()["acme.ovs-dpdk.v2.8"] == corrected.digest


def test_a_port_on_a_superseded_definition_may_move_to_a_corrected_host(packager_dir: Path, tmp_path: Path):
    from vucompat.core.migration import check_migration
    from vucompat.core.portview import PortView
    from vucompat.core.modeset import Host

    released = tmp_path / "released"
    shutil.copytree(packager_dir, released)
    table = packager_dir / "acme.ovs-dpdk.toml"
    table.write_text(table.read_text().replace(REPLY_ACK, ""))
    add_erratum(packager_dir, "acme.ovs-dpdk.v2.8", "DPDK 17.05 never offers REPLY_ACK", ["vhost_user.h#L59"])
    old, new = Host("old", load_modeset([released])), Host("new", load_modeset([packager_dir]))
    assert new.modeset.modes["acme.ovs-dpdk.v2.8"].supersedes == (old.modeset.modes["acme.ovs-dpdk.v2.8"].digest,)
    port = PortView(name="vhu0", interface_uuid="u", requested="acme.ovs-dpdk.v2.8", resolved="acme.ovs-dpdk.v2.8",
                    state="applied", error=None, mode=old.modeset.modes["acme.ovs-dpdk.v2.8"])
    verdict = check_migration(port, old, new)
    assert verdict.allowed and "corrected by an erratum" in verdict.sentence
    # the erratum changed only a per-connection protocol feature; any other difference is refused
    other = tmp_path / "other"
    shutil.copytree(packager_dir, other)
    (other / "acme.ovs-dpdk.toml").write_text(table.read_text().replace('    "VIRTIO_RING_F_INDIRECT_DESC",\n', ""))
    (other / LOCK_FILE).unlink()
    refused = check_migration(port, old, Host("other", load_modeset([other])))
    assert not refused.allowed and "DIGEST DIFFERS" in refused.sentence


def test_a_site_copy_of_a_superseded_upstream_definition_is_told_to_update(tmp_path: Path, shipped: Path):
    site = tmp_path / "site"
    site.mkdir()
    table = (shipped / "upstream.ovs-dpdk.toml").read_text()
    # the 2.13 of before the erratum: REPLY_ACK back in 2.8's delta, 2.6's 128 queue pairs
    old = table.replace('    "VHOST_USER_PROTOCOL_F_MTU",\n]\nmax_queue_pairs = 128\n',
                        '    "VHOST_USER_PROTOCOL_F_MTU",\n    "VHOST_USER_PROTOCOL_F_REPLY_ACK",\n]\n')
    old = old.replace("max_queue_pairs = 32768", "max_queue_pairs = 128")
    old = old.replace('enable = ["VHOST_USER_PROTOCOL_F_REPLY_ACK", "VHOST_USER_PROTOCOL_F_STATUS"]',
                      'enable = ["VHOST_USER_PROTOCOL_F_STATUS"]')
    assert old != table
    (site / "upstream.ovs-dpdk.toml").write_text(old)
    messages = [str(p) for p in lint([site]).errors]
    assert any("upstream.ovs-dpdk.v2.13 differs from the shipped one (+VHOST_USER_PROTOCOL_F_REPLY_ACK): it is the "
               "released definition an erratum corrected" in m for m in messages), messages
