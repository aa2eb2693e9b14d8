"""Table files: strict validation (one fixture per defect), expansion, search path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES
from vucompat.core.errors import TableError, UnknownModeError, UsageError
from vucompat.core.tables import load_modeset, read_table, search_path

INVALID = FIXTURES / "invalid"

# defect directory -> (key path of the one problem, text the message must contain)
EXPECTED = {
    "unknown_key": ("mode[1].relased", "unknown key (did you mean released?)"),
    "unknown_key_top_mode": ("mode[0].max_queue_pair", "did you mean max_queue_pairs?"),
    "unknown_feature": ("mode[1].enable[0]", "unknown feature VIRTIO_NET_F_MRG_RXBUFF (did you mean VIRTIO_NET_F_MRG_RXBUF"),
    "guest_breaking_dependency": ("mode[0]", "VIRTIO_NET_F_MQ requires VIRTIO_NET_F_CTRL_VQ; guests refuse"),
    "duplicate_version": ("mode[2].version", "version 1.1 is listed twice (first at mode[1])"),
    "released_out_of_order": ("mode[1].released", "is not newer than the version before it"),
    "lineage_outside_file": ("lineage", "does not match the file name: name the file acme.vswitch.toml"),
    "upstream_not_shipped": ("mode[0].version", "upstream.ovs-dpdk.v9.9 is not shipped with vucompat"),
    "queue_size_not_power_of_two": ("mode[0].max_rx_queue_size", "a queue size is a power of two from 1 to 32768"),
    "queue_pairs_out_of_range": ("mode[0].max_queue_pairs", "40000 is out of range: allowed 1..32768"),
    "feature_in_wrong_mask": ("mode[0].virtio_features[5]", "is a protocol feature: move it to protocol_features"),
    "delta_with_full_list": ("mode[1].virtio_features", "use enable = [...] and disable = [...]"),
    "first_version_incomplete": ("mode[0].max_tx_queue_size", "the first version must be complete"),
    "enable_already_enabled": ("mode[1].enable[0]", "VIRTIO_NET_F_CSUM is already enabled in v1.0"),
    "disable_not_enabled": ("mode[1].disable[0]", "VIRTIO_NET_F_MTU is not enabled in v1.0"),
    "enabled_and_disabled": ("mode[1].disable[0]", "is both enabled and disabled"),
    "released_quoted": ("mode[0].released", "must be a TOML date written without quotes"),
    "not_toml": ("", "not valid TOML"),
    "lineage_bad_pattern": ("lineage", "expected <vendor>.<product>"),
}


def test_every_fixture_has_an_expectation():
    assert sorted(p.name for p in INVALID.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("defect", sorted(EXPECTED))
def test_each_defect_gives_one_clear_error(defect: str):
    (path,) = (INVALID / defect).glob("*.toml")
    with pytest.raises(TableError) as err:
        read_table(path)
    problems = err.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    key, text = EXPECTED[defect]
    assert problems[0].key == key
    assert text in problems[0].message
    assert problems[0].path == path
    assert "nothing was loaded" in str(err.value) and str(path.name) in str(err.value)


def test_a_directory_with_one_bad_file_loads_nothing(tmp_path: Path, shipped: Path):
    shutil.copy(shipped / "fc26.ovs-dpdk.toml", tmp_path)
    shutil.copy(INVALID / "unknown_feature" / "acme.vswitch.toml", tmp_path)
    with pytest.raises(TableError) as err:
        load_modeset([tmp_path])
    assert [p.path.name for p in err.value.problems] == ["acme.vswitch.toml"]


def test_shipped_tables_expand_to_the_reference_masks(shipped: Path):
    registry = load_modeset([shipped])
    expected = {  # ../shared/reference/virtio-and-releases.md, as corrected (the errata of released.lock)
        "2.6": (0x144668182, 0x7), "2.8": (0x15466818A, 0x17), "2.9": (0x15466818A, 0x37),
        "2.11": (0xD7C66E7CA, 0xCB7), "2.13": (0xD7C66A7CA, 0xCB7), "2.15": (0xD7C66A7CA, 0x10CBF),
        "3.2": (0xD7C66A7CB, 0x10CBF),
    }
    for version, (virtio, protocol) in expected.items():
        mode = registry.expand(f"upstream.ovs-dpdk.v{version}")
        assert (mode.abi.virtio, mode.abi.protocol) == (virtio, protocol), version
        assert mode.provenance["ovs"].startswith(version)
    # the orphan offload bits that real OVS offers are warnings, said once each
    warnings = [str(w) for w in registry.warnings]
    assert len(warnings) == 2
    assert any("VIRTIO_NET_F_HOST_ECN is offered without" in w for w in warnings)


def test_newest_orders_by_released_date_not_by_name(shipped: Path):
    names = [m.name for m in load_modeset([shipped]).newest_first]
    assert names.index("upstream.ovs-dpdk.v2.13") < names.index("upstream.ovs-dpdk.v2.9")
    assert names[0] == "upstream.ovs-dpdk.v3.2"


def test_unknown_mode_suggests(shipped: Path):
    with pytest.raises(UnknownModeError) as err:
        load_modeset([shipped]).expand("upstream.ovs-dpdk.v2.31")
    assert "unknown mode upstream.ovs-dpdk.v2.31" in str(err.value)
    assert "did you mean upstream.ovs-dpdk.v2.15 or upstream.ovs-dpdk.v2.13" in str(err.value)


def test_recommended_is_derived_without_deprecated_features(shipped: Path):
    registry = load_modeset([shipped])
    rec = registry.expand("upstream.ovs-dpdk.v2.11+recommended")
    assert rec.derived_from == ("upstream.ovs-dpdk.v2.11",)
    assert rec.abi.deprecated_features == []
    assert "VIRTIO_NET_F_GUEST_ECN" in rec.abi.virtio_features
    assert "VIRTIO_NET_F_HOST_UFO" not in rec.abi.virtio_features
    assert rec.digest != registry.expand("upstream.ovs-dpdk.v2.11").digest


def test_search_path_order_and_first_wins(tmp_path: Path, shipped: Path):
    mine = tmp_path / "mine"
    env = tmp_path / "env"
    mine.mkdir()
    env.mkdir()
    dirs = search_path([mine], {"VUCOMPAT_TABLES": str(env)})
    assert dirs[:2] == [mine, env] and dirs[-1] == shipped
    # a distro lineage in the first directory shadows the same lineage further on,
    # as long as the names it shares keep their meaning
    text = (shipped / "fc26.ovs-dpdk.toml").read_text()
    (mine / "fc26.ovs-dpdk.toml").write_text(text.split("\n[[mode]]\nversion = \"2.8\"")[0])
    registry = load_modeset(dirs)
    assert "fc26.ovs-dpdk.v2.8" not in registry.modes
    assert registry.lineages["fc26.ovs-dpdk"].shadowed == (str(shipped / "fc26.ovs-dpdk.toml"),)


def test_same_name_with_other_contents_is_an_error(tmp_path: Path, shipped: Path):
    text = (shipped / "fc26.ovs-dpdk.toml").read_text().replace('    "VIRTIO_NET_F_MQ",\n', "", 1)
    text = text.replace('    "VIRTIO_NET_F_CTRL_RX",\n', "", 1)
    (tmp_path / "fc26.ovs-dpdk.toml").write_text(text)
    with pytest.raises(TableError) as err:
        load_modeset([tmp_path, shipped])
    message = str(err.value)
    assert "fc26.ovs-dpdk.v2.7 is also defined in" in message
    assert "+VIRTIO_NET_F_MQ" in message and "a name means the same thing everywhere" in message


def test_a_copy_of_shipped_upstream_modes_is_accepted(tmp_path: Path, shipped: Path):
    shutil.copy(shipped / "upstream.ovs-dpdk.toml", tmp_path)
    assert len(load_modeset([tmp_path]).modes) == 7


def test_missing_named_directory_is_a_usage_error(tmp_path: Path):
    with pytest.raises(UsageError, match="does not exist"):
        search_path([tmp_path / "nope"], {})


def test_a_bad_capabilities_file_names_each_problem(tmp_path: Path):
    from vucompat.core.tables import read_capabilities

    path = tmp_path / "capabilities.toml"
    path.write_text('virtio_features = ["VIRTIO_NET_F_MQQ", "VHOST_USER_PROTOCOL_F_MQ"]\nprotocol_features = []\n'
                    "max_queue_pairs = 1\nmax_rx_queue_size = 100\nmax_tx_queue_size = 256\n")
    with pytest.raises(TableError) as err:
        read_capabilities(path)
    assert [(p.key, p.message.split(":")[0]) for p in err.value.problems] == [
        ("max_rx_queue_size", "100 is out of range")]
    path.write_text(path.read_text().replace("= 100", "= 128"))
    with pytest.raises(TableError) as err:
        read_capabilities(path)
    assert str(err.value).startswith("invalid capabilities file (2 problems)")
    assert [p.key for p in err.value.problems] == ["virtio_features[0]", "virtio_features[1]"]
    assert "did you mean VIRTIO_NET_F_MQ" in err.value.problems[0].message
    assert "is a protocol feature" in err.value.problems[1].message
