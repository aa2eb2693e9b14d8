"""lint: the shipped tables pass; an edited released mode is caught by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vucompat.core.errors import TableError
from vucompat.core.lint import LOCK_FILE, lint, read_lock, update_lock
from vucompat.core.tables import load_modeset


def test_shipped_tables_pass_and_every_released_mode_is_pinned(shipped: Path):
    report = lint([shipped])
    assert report.errors == []
    modes = load_modeset([shipped]).modes
    locked = read_lock(shipped / LOCK_FILE).modes
    assert set(locked) == set(modes), "every shipped mode is released: run vucompat lint --update-lock"
    assert report.checked == len(modes)
    for name, (digest, _abi) in locked.items():
        assert modes[name].digest == digest, f"released mode {name} changed: bump the version instead"


@pytest.fixture
def packager_dir(tmp_path: Path, shipped: Path) -> Path:
    shutil.copy(shipped / "fc26.ovs-dpdk.toml", tmp_path)
    shutil.copy(shipped / LOCK_FILE, tmp_path)
    return tmp_path


def test_an_edited_released_mode_fails_with_the_difference_by_name(packager_dir: Path):
    table = packager_dir / "fc26.ovs-dpdk.toml"
    table.write_text(table.read_text().replace('    "VIRTIO_RING_F_INDIRECT_DESC",\n', "")
                     .replace("max_queue_pairs = 128", "max_queue_pairs = 64"))
    report = lint([packager_dir])
    messages = [str(p) for p in report.errors]
    assert any("released mode fc26.ovs-dpdk.v2.7 changed since its release: max_queue_pairs 128 -> 64" in m
               for m in messages), messages
    assert any("fc26.ovs-dpdk.v2.8 changed since its release: -VIRTIO_RING_F_INDIRECT_DESC" in m
               and "bump the version instead" in m for m in messages), messages
    assert report.failed()


def test_a_removed_released_mode_fails(packager_dir: Path):
    table = packager_dir / "fc26.ovs-dpdk.toml"
    table.write_text(table.read_text().split('\n[[mode]]\nversion = "2.8"')[0])
    assert any("released mode fc26.ovs-dpdk.v2.8 is no longer defined" in str(p) for p in lint([packager_dir]).errors)


def test_a_hand_edited_lock_fails(packager_dir: Path):
    lock = packager_dir / LOCK_FILE
    lock.write_text(lock.read_text().replace("max_queue_pairs = 128", "max_queue_pairs = 64", 1))
    assert any("lock was edited by hand" in str(p) for p in lint([packager_dir]).errors)


def test_update_lock_adds_new_versions_only(packager_dir: Path):
    table = packager_dir / "fc26.ovs-dpdk.toml"
    table.write_text(table.read_text() + '\n[[mode]]\nversion = "2.9"\nreleased = 2018-03-01\n'
                     'enable = ["VHOST_USER_PROTOCOL_F_BACKEND_REQ"]\n')
    report = lint([packager_dir])
    assert not report.failed() and report.failed(strict=True)
    assert any("fc26.ovs-dpdk.v2.9 is not in released.lock yet" in str(w) for w in report.warnings)
    before = (packager_dir / LOCK_FILE).read_text()
    assert update_lock(packager_dir) == ["fc26.ovs-dpdk.v2.9"]
    after = (packager_dir / LOCK_FILE).read_text()
    assert after.startswith(before) and "fc26.ovs-dpdk.v2.9" in after
    assert update_lock(packager_dir) == []
    assert lint([packager_dir]).warnings == []


def test_update_lock_refuses_a_changed_released_mode(packager_dir: Path):
    table = packager_dir / "fc26.ovs-dpdk.toml"
    table.write_text(table.read_text().replace("max_queue_pairs = 128", "max_queue_pairs = 64"))
    before = (packager_dir / LOCK_FILE).read_text()
    with pytest.raises(TableError, match="changed since its release"):
        update_lock(packager_dir)
    assert (packager_dir / LOCK_FILE).read_text() == before


def test_the_distribution_lineages_pass_and_are_released(shipped: Path):
    distros = shipped / "distros"
    report = lint([distros])
    assert report.errors == []
    assert set(read_lock(distros / LOCK_FILE).modes) == set(load_modeset([distros]).modes)
    # opt-in: the default search path does not load them
    assert not any(name.startswith("debian12.") for name in load_modeset([shipped]).modes)
