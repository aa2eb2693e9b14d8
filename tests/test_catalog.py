from vucompat.core import catalog
from vucompat.core.errors import UnknownFeatureError

import pytest


def test_names_are_unique_and_bits_unique_per_mask():
    names = [f.name for f in catalog.FEATURES]
    assert len(names) == len(set(names))
    keys = [(f.mask, f.bit) for f in catalog.FEATURES]
    assert len(keys) == len(set(keys))


def test_every_requirement_names_a_catalog_feature():
    for feature in catalog.FEATURES:
        for group in feature.requires:
            for name in group:
                assert catalog.find(name) is not None, (feature.name, name)


def test_reference_bits_are_in_the_catalog():
    assert catalog.lookup("VIRTIO_NET_F_SPEED_DUPLEX").bit == 63
    assert catalog.lookup("VHOST_F_LOG_ALL").bit == 26
    assert catalog.lookup("VHOST_USER_PROTOCOL_F_DEVICE_STATE").bit == 19
    assert catalog.lookup("VIRTIO_F_IOMMU_PLATFORM").name == "VIRTIO_F_ACCESS_PLATFORM"
    assert len([f for f in catalog.FEATURES if f.mask == "protocol"]) == 20


def test_dependencies_and_flags_from_the_spec():
    mq = catalog.lookup("VIRTIO_NET_F_MQ")
    assert mq.requires == (("VIRTIO_NET_F_CTRL_VQ",),) and mq.requirement_breaks_guest
    tso4 = catalog.lookup("VIRTIO_NET_F_HOST_TSO4")
    assert tso4.requires == (("VIRTIO_NET_F_CSUM",),) and not tso4.requirement_breaks_guest
    assert catalog.lookup("VIRTIO_NET_F_HOST_USO").host_dependent
    assert catalog.lookup("VIRTIO_F_ACCESS_PLATFORM").host_dependent
    assert catalog.lookup("VIRTIO_NET_F_HOST_UFO").deprecated
    assert not catalog.lookup("VHOST_F_LOG_ALL").guest_abi


def test_hex_round_trip_with_bit_63():
    value = catalog.parse_hex("0x8000000d7c66a7ca")
    names = catalog.mask_to_names(value, "virtio")
    assert names[-1] == "VIRTIO_NET_F_SPEED_DUPLEX"
    assert catalog.names_to_mask(names, "virtio") == value
    assert catalog.to_hex(value) == "0x8000000d7c66a7ca"
    assert catalog.parse_hex("d7c66a7ca") == 0xD7C66A7CA


def test_unnamed_bits_are_shown_not_dropped():
    assert catalog.mask_to_names(1 << 24, "virtio") == ["VIRTIO_BIT_24"]


@pytest.mark.parametrize("bad", ["0xzz", "0x1" + "0" * 16, "-1"])
def test_parse_hex_rejects(bad):
    with pytest.raises(ValueError):
        catalog.parse_hex(bad)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownFeatureError) as err:
        catalog.lookup("VIRTIO_NET_F_MRG_RXBUFF")
    assert "did you mean VIRTIO_NET_F_MRG_RXBUF" in str(err.value)
    assert catalog.suggest("INDIRECT_DESC") == ["VIRTIO_RING_F_INDIRECT_DESC"]


def test_wrong_mask_is_named():
    with pytest.raises(UnknownFeatureError, match="is a protocol feature: list it under protocol_features"):
        catalog.names_to_mask(["VHOST_USER_PROTOCOL_F_MQ"], "virtio")


def test_drop_guest_breaking_follows_chains():
    virtio = catalog.names_to_mask(["VIRTIO_NET_F_MQ", "VIRTIO_NET_F_CTRL_RX", "VIRTIO_NET_F_MTU"], "virtio")
    assert catalog.mask_to_names(catalog.drop_guest_breaking(virtio, 0)[0], "virtio") == ["VIRTIO_NET_F_MTU"]
    # a protocol feature without VHOST_USER_F_PROTOCOL_FEATURES is dropped as well
    protocol = catalog.names_to_mask(["VHOST_USER_PROTOCOL_F_MQ"], "protocol")
    assert catalog.drop_guest_breaking(0, protocol) == (0, 0)
