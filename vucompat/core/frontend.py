"""Masking from the guest side: the QEMU virtio-net-pci properties and the libvirt
<interface> settings that make the frontend itself ask for no more than a mode.
Pure: a mode in, text out.

Every feature the mode lacks and QEMU has a property for is switched off; queue sizes
are capped (QEMU's virtio-net allows at most 1024); the number of queue pairs goes to
the vhost-user netdev (`queues=`), and MSI-X vectors follow it (2N + 2).
"""

from __future__ import annotations

from vucompat.core import catalog
from vucompat.core.mode import Mode

#: virtio feature -> (QEMU virtio-net-pci property, first QEMU release that has it)
QEMU_PROPERTIES: dict[str, tuple[str, tuple[int, int]]] = {
    "VIRTIO_NET_F_CSUM": ("csum", (1, 0)),
    "VIRTIO_NET_F_GUEST_CSUM": ("guest_csum", (1, 0)),
    "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS": ("ctrl_guest_offloads", (2, 0)),
    "VIRTIO_NET_F_GSO": ("gso", (1, 0)),
    "VIRTIO_NET_F_GUEST_TSO4": ("guest_tso4", (1, 0)),
    "VIRTIO_NET_F_GUEST_TSO6": ("guest_tso6", (1, 0)),
    "VIRTIO_NET_F_GUEST_ECN": ("guest_ecn", (1, 0)),
    "VIRTIO_NET_F_GUEST_UFO": ("guest_ufo", (1, 0)),
    "VIRTIO_NET_F_HOST_TSO4": ("host_tso4", (1, 0)),
    "VIRTIO_NET_F_HOST_TSO6": ("host_tso6", (1, 0)),
    "VIRTIO_NET_F_HOST_ECN": ("host_ecn", (1, 0)),
    "VIRTIO_NET_F_HOST_UFO": ("host_ufo", (1, 0)),
    "VIRTIO_NET_F_MRG_RXBUF": ("mrg_rxbuf", (1, 0)),
    "VIRTIO_NET_F_STATUS": ("status", (1, 0)),
    "VIRTIO_NET_F_CTRL_VQ": ("ctrl_vq", (1, 0)),
    "VIRTIO_NET_F_CTRL_RX": ("ctrl_rx", (1, 0)),
    "VIRTIO_NET_F_CTRL_VLAN": ("ctrl_vlan", (1, 0)),
    "VIRTIO_NET_F_CTRL_RX_EXTRA": ("ctrl_rx_extra", (1, 0)),
    "VIRTIO_NET_F_CTRL_MAC_ADDR": ("ctrl_mac_addr", (1, 6)),
    "VIRTIO_NET_F_GUEST_ANNOUNCE": ("guest_announce", (1, 5)),
    "VIRTIO_NET_F_MQ": ("mq", (1, 5)),
    "VIRTIO_NET_F_RSS": ("rss", (5, 1)),
    "VIRTIO_NET_F_HASH_REPORT": ("hash", (5, 1)),
    "VIRTIO_NET_F_GUEST_USO4": ("guest_uso4", (8, 2)),
    "VIRTIO_NET_F_GUEST_USO6": ("guest_uso6", (8, 2)),
    "VIRTIO_NET_F_HOST_USO": ("host_uso", (8, 2)),
    "VIRTIO_NET_F_RSC_EXT": ("guest_rsc_ext", (4, 2)),
    "VIRTIO_F_ANY_LAYOUT": ("any_layout", (2, 4)),
    "VIRTIO_F_ACCESS_PLATFORM": ("iommu_platform", (2, 9)),
    "VIRTIO_F_RING_RESET": ("queue_reset", (7, 2)),
    "VIRTIO_RING_F_INDIRECT_DESC": ("indirect_desc", (1, 0)),
    "VIRTIO_RING_F_EVENT_IDX": ("event_idx", (1, 0)),
    "VIRTIO_F_RING_PACKED": ("packed", (4, 2)),
}
#: QEMU's virtio-net ring sizes: at most 1024
QEMU_MAX_QUEUE_SIZE = 1024
DEFAULT_QEMU = (7, 2)  # Debian bookworm

#: libvirt <driver><host .../>: host offloads; <driver><guest .../>: guest offloads
LIBVIRT_HOST = {"VIRTIO_NET_F_CSUM": "csum", "VIRTIO_NET_F_GSO": "gso", "VIRTIO_NET_F_HOST_TSO4": "tso4",
                "VIRTIO_NET_F_HOST_TSO6": "tso6", "VIRTIO_NET_F_HOST_ECN": "ecn", "VIRTIO_NET_F_HOST_UFO": "ufo",
                "VIRTIO_NET_F_MRG_RXBUF": "mrg_rxbuf"}
LIBVIRT_GUEST = {"VIRTIO_NET_F_GUEST_CSUM": "csum", "VIRTIO_NET_F_GUEST_TSO4": "tso4",
                 "VIRTIO_NET_F_GUEST_TSO6": "tso6", "VIRTIO_NET_F_GUEST_ECN": "ecn", "VIRTIO_NET_F_GUEST_UFO": "ufo"}
#: <driver> attributes
LIBVIRT_DRIVER = {"VIRTIO_RING_F_EVENT_IDX": "event_idx", "VIRTIO_F_RING_PACKED": "packed",
                  "VIRTIO_NET_F_RSS": "rss", "VIRTIO_NET_F_HASH_REPORT": "rss_hash_report"}


def _off(mode: Mode, qemu: tuple[int, int]) -> dict[str, str]:
    """feature name -> QEMU property, for every feature the mode lacks that QEMU can switch off."""
    present = set(mode.abi.virtio_features)
    return {name: prop for name, (prop, since) in QEMU_PROPERTIES.items() if name not in present and since <= qemu}


def qemu_device_properties(mode: Mode, qemu: tuple[int, int] = DEFAULT_QEMU) -> list[str]:
    """virtio-net-pci properties (`name=value`) that keep the frontend within `mode`."""
    props = [f"{prop}=off" for prop in _off(mode, qemu).values()]
    props.append(f"rx_queue_size={min(mode.abi.max_rx_queue_size, QEMU_MAX_QUEUE_SIZE)}")
    props.append(f"tx_queue_size={min(mode.abi.max_tx_queue_size, QEMU_MAX_QUEUE_SIZE)}")
    pairs = mode.abi.max_queue_pairs
    if pairs > 1 and "VIRTIO_NET_F_MQ" in mode.abi.virtio_features:
        props.append(f"vectors={2 * pairs + 2}")
    return props


def qemu_args(mode: Mode, qemu: tuple[int, int] = DEFAULT_QEMU) -> str:
    """A commented QEMU command-line fragment for a vhost-user NIC in `mode`."""
    pairs = mode.abi.max_queue_pairs if "VIRTIO_NET_F_MQ" in mode.abi.virtio_features else 1
    return "\n".join([
        f"# {mode.name} ({mode.digest[:19]}): the frontend asks for no more than the mode",
        f"-netdev vhost-user,id=net0,chardev=char0,queues={pairs} \\",
        "-device virtio-net-pci,netdev=net0," + ",".join(qemu_device_properties(mode, qemu)),
    ])


def libvirt_interface(mode: Mode, qemu: tuple[int, int] = DEFAULT_QEMU) -> str:
    """The libvirt <interface type='vhostuser'> settings for `mode`: <driver> with its
    host and guest offloads, and a <qemu:override> for what libvirt has no attribute for."""
    off = _off(mode, qemu)
    pairs = mode.abi.max_queue_pairs if "VIRTIO_NET_F_MQ" in mode.abi.virtio_features else 1
    attrs = [f"queues='{pairs}'", f"rx_queue_size='{min(mode.abi.max_rx_queue_size, QEMU_MAX_QUEUE_SIZE)}'",
             f"tx_queue_size='{min(mode.abi.max_tx_queue_size, QEMU_MAX_QUEUE_SIZE)}'"]
    attrs += [f"{attr}='off'" for name, attr in LIBVIRT_DRIVER.items() if name in off]
    host = [f"{attr}='off'" for name, attr in LIBVIRT_HOST.items() if name in off]
    guest = [f"{attr}='off'" for name, attr in LIBVIRT_GUEST.items() if name in off]
    rest = [off[name] for name in off if name not in LIBVIRT_HOST and name not in LIBVIRT_GUEST
            and name not in LIBVIRT_DRIVER]
    lines = [f"<!-- {mode.name} ({mode.digest[:19]}): the frontend asks for no more than the mode -->",
             "<interface type='vhostuser'>", "  <model type='virtio'/>",
             f"  <driver {' '.join(attrs)}>"]
    if host:
        lines.append(f"    <host {' '.join(host)}/>")
    if guest:
        lines.append(f"    <guest {' '.join(guest)}/>")
    lines += ["  </driver>", "</interface>"]
    if rest:
        lines += ["<!-- and, in <domain>, for what <driver> has no attribute for (libvirt >= 8.2,",
                  "     xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'; alias of the interface: net0) -->",
                  "<qemu:override>", "  <qemu:device alias='net0'>", "    <qemu:frontend>"]
        lines += [f"      <qemu:property name='{prop}' type='bool' value='false'/>" for prop in rest]
        lines += ["    </qemu:frontend>", "  </qemu:device>", "</qemu:override>"]
    return "\n".join(lines)


def features_without_property(mode: Mode) -> list[str]:
    """Features the mode lacks that no frontend property can switch off (the relay
    masks those)."""
    present = set(mode.abi.virtio_features)
    return [f.name for f in catalog.FEATURES if f.mask == "virtio" and f.name not in present
            and f.name not in QEMU_PROPERTIES and f.guest_abi]
