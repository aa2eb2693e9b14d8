"""The feature catalog: every virtio-net/transport feature bit and every vhost-user
protocol feature vucompat knows, by spec name.

Sources: the virtio spec 1.2/1.3 ("Feature bit requirements"), Linux
include/uapi/linux/virtio_net.h and drivers/net/virtio_net.c
(virtnet_validate_features), QEMU docs/interop/vhost-user.rst.

Masks are Python ints; the catalog converts between names, bit numbers and hex.
Invariants (checked by the tests): names are unique across both masks, bit numbers
are unique within a mask, and every requirement names a feature of the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Literal

from vucompat.core.errors import UnknownFeatureError

MaskKind = Literal["virtio", "protocol"]
MASK_KINDS: tuple[MaskKind, ...] = ("virtio", "protocol")


@dataclass(frozen=True)
class Feature:
    """One feature bit."""

    #: spec name, e.g. VIRTIO_RING_F_INDIRECT_DESC
    name: str
    #: bit number within its mask
    bit: int
    #: "virtio" (GET_FEATURES mask) or "protocol" (GET_PROTOCOL_FEATURES mask)
    mask: MaskKind
    #: one-line description
    summary: str
    #: requirements: every group must be satisfied by at least one of its names
    requires: tuple[tuple[str, ...], ...] = ()
    #: True when a missing requirement makes a guest refuse the device (an error
    #: in tables); False when the spec is merely bent (a lint warning)
    requirement_breaks_guest: bool = False
    #: why availability depends on the host (kernel, settings), or None
    host_dependent: str | None = None
    #: why the feature is deprecated, or None
    deprecated: str | None = None
    #: False for migration machinery that is not guest ABI (VHOST_F_LOG_ALL)
    guest_abi: bool = True
    #: older spec names accepted as input
    aliases: tuple[str, ...] = ()

    @property
    def value(self) -> int:
        """The feature as a one-bit mask."""
        return 1 << self.bit


def _v(bit: int, name: str, summary: str, **kw: object) -> Feature:
    return Feature(name=name, bit=bit, mask="virtio", summary=summary, **kw)  # type: ignore[arg-type]


def _p(bit: int, name: str, summary: str, **kw: object) -> Feature:
    return Feature(
        name="VHOST_USER_PROTOCOL_F_" + name,
        bit=bit,
        mask="protocol",
        summary=summary,
        requires=(("VHOST_USER_F_PROTOCOL_FEATURES",),) + tuple(kw.pop("requires", ())),  # type: ignore[arg-type]
        requirement_breaks_guest=True,
        **kw,  # type: ignore[arg-type]
    )


_CTRL_VQ = (("VIRTIO_NET_F_CTRL_VQ",),)
_LINUX_REFUSES = dict(requires=_CTRL_VQ, requirement_breaks_guest=True)
_UFO_GONE = "UFO was removed from Linux 4.14; guests no longer use it"
_USO_KERNEL = "USO needs host kernel support (Linux 6.2 or newer tap/vhost)"

FEATURES: tuple[Feature, ...] = (
    _v(0, "VIRTIO_NET_F_CSUM", "device handles packets with partial checksum"),
    _v(1, "VIRTIO_NET_F_GUEST_CSUM", "driver handles packets with partial checksum"),
    _v(2, "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS", "control channel offloads reconfiguration",
       requires=_CTRL_VQ),
    _v(3, "VIRTIO_NET_F_MTU", "device reports its maximum MTU"),
    _v(5, "VIRTIO_NET_F_MAC", "device has a given MAC address"),
    _v(6, "VIRTIO_NET_F_GSO", "device handles packets with any GSO type",
       deprecated="legacy-interface only; replaced by the per-type offload bits"),
    _v(7, "VIRTIO_NET_F_GUEST_TSO4", "driver can receive TSOv4",
       requires=(("VIRTIO_NET_F_GUEST_CSUM",),)),
    _v(8, "VIRTIO_NET_F_GUEST_TSO6", "driver can receive TSOv6",
       requires=(("VIRTIO_NET_F_GUEST_CSUM",),)),
    _v(9, "VIRTIO_NET_F_GUEST_ECN", "driver can receive TSO with ECN",
       requires=(("VIRTIO_NET_F_GUEST_TSO4", "VIRTIO_NET_F_GUEST_TSO6"),)),
    _v(10, "VIRTIO_NET_F_GUEST_UFO", "driver can receive UFO",
       requires=(("VIRTIO_NET_F_GUEST_CSUM",),), deprecated=_UFO_GONE),
    _v(11, "VIRTIO_NET_F_HOST_TSO4", "device can receive TSOv4",
       requires=(("VIRTIO_NET_F_CSUM",),)),
    _v(12, "VIRTIO_NET_F_HOST_TSO6", "device can receive TSOv6",
       requires=(("VIRTIO_NET_F_CSUM",),)),
    _v(13, "VIRTIO_NET_F_HOST_ECN", "device can receive TSO with ECN",
       requires=(("VIRTIO_NET_F_HOST_TSO4", "VIRTIO_NET_F_HOST_TSO6"),)),
    _v(14, "VIRTIO_NET_F_HOST_UFO", "device can receive UFO",
       requires=(("VIRTIO_NET_F_CSUM",),), deprecated=_UFO_GONE),
    _v(15, "VIRTIO_NET_F_MRG_RXBUF", "driver can merge receive buffers"),
    _v(16, "VIRTIO_NET_F_STATUS", "configuration status field is available"),
    _v(17, "VIRTIO_NET_F_CTRL_VQ", "control channel is available"),
    _v(18, "VIRTIO_NET_F_CTRL_RX", "control channel RX mode support", **_LINUX_REFUSES),
    _v(19, "VIRTIO_NET_F_CTRL_VLAN", "control channel VLAN filtering", **_LINUX_REFUSES),
    _v(20, "VIRTIO_NET_F_CTRL_RX_EXTRA", "extra RX mode control support",
       requires=(("VIRTIO_NET_F_CTRL_RX",),)),
    _v(21, "VIRTIO_NET_F_GUEST_ANNOUNCE", "driver can send gratuitous packets",
       **_LINUX_REFUSES),
    _v(22, "VIRTIO_NET_F_MQ", "multiqueue with automatic receive steering",
       **_LINUX_REFUSES),
    _v(23, "VIRTIO_NET_F_CTRL_MAC_ADDR", "set MAC address through control channel",
       **_LINUX_REFUSES),
    _v(26, "VHOST_F_LOG_ALL", "dirty-page logging, switched on during live migration",
       guest_abi=False),
    _v(27, "VIRTIO_F_ANY_LAYOUT", "device accepts arbitrary descriptor layouts",
       deprecated="legacy-interface only; implied by VIRTIO_F_VERSION_1"),
    _v(28, "VIRTIO_RING_F_INDIRECT_DESC", "indirect descriptors"),
    _v(29, "VIRTIO_RING_F_EVENT_IDX", "used/avail event index suppression"),
    _v(30, "VHOST_USER_F_PROTOCOL_FEATURES", "vhost-user protocol features are negotiated"),
    _v(32, "VIRTIO_F_VERSION_1", "compliance with virtio 1.0 or later"),
    _v(33, "VIRTIO_F_ACCESS_PLATFORM", "device is behind an IOMMU",
       host_dependent="needs vIOMMU support (OVS other_config:vhost-iommu-support)",
       aliases=("VIRTIO_F_IOMMU_PLATFORM",)),
    _v(34, "VIRTIO_F_RING_PACKED", "packed virtqueue layout"),
    _v(35, "VIRTIO_F_IN_ORDER", "buffers are used in the order they are made available"),
    _v(36, "VIRTIO_F_ORDER_PLATFORM", "platform memory ordering"),
    _v(37, "VIRTIO_F_SR_IOV", "single root I/O virtualization"),
    _v(38, "VIRTIO_F_NOTIFICATION_DATA", "driver passes extra data in notifications"),
    _v(40, "VIRTIO_F_RING_RESET", "individual virtqueue reset"),
    _v(53, "VIRTIO_NET_F_NOTF_COAL", "notification coalescing", requires=_CTRL_VQ),
    _v(54, "VIRTIO_NET_F_GUEST_USO4", "driver can receive USOv4",
       requires=(("VIRTIO_NET_F_GUEST_CSUM",),), host_dependent=_USO_KERNEL),
    _v(55, "VIRTIO_NET_F_GUEST_USO6", "driver can receive USOv6",
       requires=(("VIRTIO_NET_F_GUEST_CSUM",),), host_dependent=_USO_KERNEL),
    _v(56, "VIRTIO_NET_F_HOST_USO", "device can receive USO",
       requires=(("VIRTIO_NET_F_CSUM",),), host_dependent=_USO_KERNEL),
    _v(57, "VIRTIO_NET_F_HASH_REPORT", "device reports packet hashes", **_LINUX_REFUSES),
    _v(59, "VIRTIO_NET_F_GUEST_HDRLEN", "driver provides the exact header length"),
    _v(60, "VIRTIO_NET_F_RSS", "receive-side scaling", **_LINUX_REFUSES),
    _v(61, "VIRTIO_NET_F_RSC_EXT", "extended receive segment coalescing info",
       requires=(("VIRTIO_NET_F_HOST_TSO4", "VIRTIO_NET_F_HOST_TSO6"),)),
    _v(62, "VIRTIO_NET_F_STANDBY", "acts as standby for a primary device"),
    _v(63, "VIRTIO_NET_F_SPEED_DUPLEX", "device reports link speed and duplex"),
    _p(0, "MQ", "backend reports its number of queues (GET_QUEUE_NUM)"),
    _p(1, "LOG_SHMFD", "dirty log in shared memory"),
    _p(2, "RARP", "backend sends RARP after migration"),
    _p(3, "REPLY_ACK", "backend acknowledges requests on demand"),
    _p(4, "MTU", "frontend sets the MTU"),
    _p(5, "BACKEND_REQ", "backend-initiated request channel",
       aliases=("VHOST_USER_PROTOCOL_F_SLAVE_REQ",)),
    _p(6, "CROSS_ENDIAN", "cross-endian vrings"),
    _p(7, "CRYPTO_SESSION", "crypto session messages"),
    _p(8, "PAGEFAULT", "postcopy live migration (userfaultfd)"),
    _p(9, "CONFIG", "device configuration space messages"),
    _p(10, "BACKEND_SEND_FD", "file descriptors on the backend channel",
       requires=(("VHOST_USER_PROTOCOL_F_BACKEND_REQ",),),
       aliases=("VHOST_USER_PROTOCOL_F_SLAVE_SEND_FD",)),
    _p(11, "HOST_NOTIFIER", "host notifier areas",
       requires=(("VHOST_USER_PROTOCOL_F_BACKEND_REQ",),
                 ("VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD",))),
    _p(12, "INFLIGHT_SHMFD", "inflight I/O tracking in shared memory"),
    _p(13, "RESET_DEVICE", "device reset message"),
    _p(14, "INBAND_NOTIFICATIONS", "notifications over the backend channel"),
    _p(15, "CONFIGURE_MEM_SLOTS", "incremental memory table updates"),
    _p(16, "STATUS", "device status messages"),
    _p(17, "XEN_MMAP", "Xen memory mapping"),
    _p(18, "SHARED_OBJECT", "shared virtio objects"),
    _p(19, "DEVICE_STATE", "device state transfer for migration"),
)

@dataclass(frozen=True)
class ProtocolNeed:
    """A vhost-user protocol feature that something a mode promises depends on.

    Protocol features are negotiated again on every connection (QEMU asks
    GET_PROTOCOL_FEATURES each time it connects) and are not guest state: a backend
    needs only the ones the mode's promises depend on. The others a mode lists are
    optional: the relay offers the frontend the mode's list less what the backend
    lacks, and QEMU works without them.
    """

    #: the protocol feature
    feature: str
    #: when the mode needs it: "always", "max_queue_pairs>1", or "virtio:<NAME>" (the
    #: mode offers that virtio feature)
    when: str
    #: what QEMU does without it (the rule's evidence)
    why: str


#: the rule: which protocol features a mode requires of a backend (docs/tables.md).
#: Checked against QEMU v10.0.13 (hw/virtio/vhost-user.c, hw/net/virtio-net.c) and 7.2.
PROTOCOL_NEEDS: tuple[ProtocolNeed, ...] = (
    ProtocolNeed("VHOST_USER_PROTOCOL_F_LOG_SHMFD", "always",
                 "QEMU blocks live migration without it: 'Migration disabled: vhost-user backend lacks "
                 "VHOST_USER_PROTOCOL_F_LOG_SHMFD feature.' (hw/virtio/vhost-user.c:2267-2273 at v10.0.13)"),
    ProtocolNeed("VHOST_USER_PROTOCOL_F_MQ", "max_queue_pairs>1",
                 "without it QEMU takes one queue pair and drops a netdev with queues > 1: 'you are asking more "
                 "queues than supported' (hw/virtio/vhost-user.c:2217-2226, net/vhost-user.c:105-111)"),
    ProtocolNeed("VHOST_USER_PROTOCOL_F_BACKEND_REQ", "virtio:VIRTIO_F_ACCESS_PLATFORM",
                 "QEMU refuses a backend that offers IOMMU_PLATFORM without it: 'IOMMU support requires reply-ack "
                 "and backend-req protocol features.' (hw/virtio/vhost-user.c:2234-2242)"),
    ProtocolNeed("VHOST_USER_PROTOCOL_F_REPLY_ACK", "virtio:VIRTIO_F_ACCESS_PLATFORM",
                 "the same check (hw/virtio/vhost-user.c:2234-2242)"),
    ProtocolNeed("VHOST_USER_PROTOCOL_F_DEVICE_STATE", "always",
                 "when a source backend has it, QEMU 10.0+ sends the backend's state in the migration stream "
                 "(hw/net/virtio-net.c:3454-3482) and a destination without it fails the load: 'Back-end does "
                 "not support migration state transfer' (hw/virtio/vhost-user.c:2870-2874)"),
)


_BY_NAME: dict[str, Feature] = {}
for _f in FEATURES:
    _BY_NAME[_f.name] = _f
    for _alias in _f.aliases:
        _BY_NAME[_alias] = _f
_BY_BIT: dict[tuple[str, int], Feature] = {(f.mask, f.bit): f for f in FEATURES}
_NAME_AT_BIT: dict[str, list[str]] = {
    kind: [_BY_BIT[(kind, b)].name if (kind, b) in _BY_BIT else f"{kind.upper()}_BIT_{b}" for b in range(64)]
    for kind in MASK_KINDS
}

#: virtio bits that are not guest ABI: ignored by digest, compare and runnable
NON_ABI_VIRTIO_MASK: int = sum(f.value for f in FEATURES if f.mask == "virtio" and not f.guest_abi)
#: deprecated features, per mask
DEPRECATED_MASK: dict[str, int] = {
    kind: sum(f.value for f in FEATURES if f.mask == kind and f.deprecated) for kind in MASK_KINDS
}


def lookup(name: str) -> Feature:
    """Return the feature called `name` (spec name or a known older alias).

    Raises UnknownFeatureError with the closest known names.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownFeatureError(name=name, suggestions=suggest(name)) from None


def find(name: str) -> Feature | None:
    """Return the feature called `name`, or None."""
    return _BY_NAME.get(name)


def suggest(name: str, limit: int = 3) -> list[str]:
    """Return up to `limit` catalog names close to `name` (for 'did you mean')."""
    upper = name.upper()
    names = [f.name for f in FEATURES]
    from difflib import get_close_matches  # lazy: only a misspelt name needs it

    close = get_close_matches(upper, names, n=limit, cutoff=0.6)
    if not close:
        # a short form such as "MRG_RXBUF" or "INDIRECT_DESC"
        close = [n for n in names if n.endswith("_" + upper)][:limit]
    return close


def bits_of(value: int) -> list[int]:
    """Return the set bit numbers of `value`, lowest first."""
    return list(_bits(value))


@lru_cache(maxsize=4096)
def _bits(value: int) -> tuple[int, ...]:
    # masks repeat across the modes of a lineage: cache them
    out = []
    while value:
        low = value & -value
        out.append(low.bit_length() - 1)
        value ^= low
    return tuple(out)


def bit_name(mask: MaskKind, bit: int) -> str:
    """Return the name of `bit` of `mask` (`<MASK>_BIT_<n>` when the catalog has none)."""
    return _NAME_AT_BIT[mask][bit]


def names_to_mask(names: Iterable[str], mask: MaskKind) -> int:
    """Return the mask of `names`; raise UnknownFeatureError for a name that is
    unknown or belongs to the other mask."""
    value = 0
    for name in names:
        feature = lookup(name)
        if feature.mask != mask:
            raise UnknownFeatureError(name=name, suggestions=[], wrong_mask=feature.mask)
        value |= feature.value
    return value


def mask_to_names(value: int, mask: MaskKind) -> list[str]:
    """Return the names of the bits of `value`, lowest bit first; a bit the catalog
    does not name is shown as `<MASK>_BIT_<n>`."""
    return list(_names(value, mask))


@lru_cache(maxsize=4096)
def _names(value: int, mask: MaskKind) -> tuple[str, ...]:
    names = _NAME_AT_BIT[mask]
    return tuple(names[bit] for bit in _bits(value))


def to_hex(value: int) -> str:
    """Return `value` as a 0x-prefixed, 16-digit hex string (as OVS prints masks)."""
    return f"0x{value:016x}"


def parse_hex(text: str) -> int:
    """Parse a mask written in hex, with or without 0x (as OVS prints it).

    Raises ValueError with a readable message.
    """
    raw = text.strip().lower().removeprefix("0x")
    try:
        value = int(raw, 16)
    except ValueError:
        raise ValueError(f"{text!r} is not a mask: write it as hex, e.g. 0xd7c66a7ca") from None
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"{text!r} does not fit in 64 bits")
    return value


def unmet_requirements(virtio: int, protocol: int) -> list[tuple[Feature, tuple[str, ...]]]:
    """Return (feature, unmet requirement group) for every present feature whose
    requirement group has none of its names present."""
    present = {"virtio": virtio, "protocol": protocol}
    unmet = []
    for feature in FEATURES:
        if not present[feature.mask] & feature.value:
            continue
        for group in feature.requires:
            if not any(present[_BY_NAME[n].mask] & _BY_NAME[n].value for n in group):
                unmet.append((feature, group))
    return unmet


def drop_guest_breaking(virtio: int, protocol: int) -> tuple[int, int]:
    """Return the masks with every feature removed whose missing requirement would
    make a guest refuse the device, repeated until nothing more changes."""
    while True:
        broken = [f for f, _ in unmet_requirements(virtio, protocol) if f.requirement_breaks_guest]
        if not broken:
            return virtio, protocol
        for feature in broken:
            if feature.mask == "virtio":
                virtio &= ~feature.value
            else:
                protocol &= ~feature.value


def required_protocol(virtio: int, protocol: int, max_queue_pairs: int) -> int:
    """Return the protocol features of `protocol` that a mode with these virtio
    features and queue pairs requires of a backend (PROTOCOL_NEEDS); the rest of
    `protocol` is optional."""
    needed = 0
    for need in PROTOCOL_NEEDS:
        if need.when == "always" or (need.when == "max_queue_pairs>1" and max_queue_pairs > 1) or \
                (need.when.startswith("virtio:") and virtio & lookup(need.when[len("virtio:"):]).value):
            needed |= lookup(need.feature).value
    return protocol & needed
