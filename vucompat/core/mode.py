"""Values of the core: the guest-visible ABI of a port (Abi), a named compat mode
(Mode), and what a host's backend offers (Capabilities).

All are frozen dataclasses. Masks are ints; names are derived on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from functools import cached_property
from typing import Any, Mapping, Sequence

from vucompat.core import catalog
from vucompat.core.versions import NATURAL, sort_key
from vucompat.core.versions import natural_key as natural_key  # (where it was defined before versions.py)

#: the limits of an ABI, in display order
LIMITS: tuple[str, ...] = ("max_queue_pairs", "max_rx_queue_size", "max_tx_queue_size")
#: the largest ring a mode may allow (table files: a power of two, 1..32768)
MAX_QUEUE_SIZE = 32768
#: the most queue pairs a mode may allow: virtio-net's VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX
#: (0x8000), which DPDK 16.07 and 16.11.0 answer to GET_QUEUE_NUM
MAX_QUEUE_PAIRS = 0x8000

#: the suffix of a mode derived from another without its deprecated features
RECOMMENDED_SUFFIX = "+recommended"

_DIGEST_FORMAT = "vucompat-abi-1"


@dataclass(frozen=True)
class Abi:
    """The guest-visible vhost-user ABI: what a mode fixes or a host offers."""

    #: virtio feature mask (GET_FEATURES)
    virtio: int
    #: vhost-user protocol feature mask (GET_PROTOCOL_FEATURES)
    protocol: int
    max_queue_pairs: int
    max_rx_queue_size: int
    max_tx_queue_size: int

    @cached_property
    def digest(self) -> str:
        """A hash of the guest-ABI parameters in canonical form ("sha256:<hex>").

        Bits that are not guest ABI (VHOST_F_LOG_ALL) are left out, so they never
        make two modes differ.
        """
        import hashlib  # lazy: loading OpenSSL costs ~5 ms, and cached tables carry their digests

        canonical = ";".join(
            [
                _DIGEST_FORMAT,
                f"virtio={self.virtio & ~catalog.NON_ABI_VIRTIO_MASK:016x}",
                f"protocol={self.protocol:016x}",
                f"max_queue_pairs={self.max_queue_pairs}",
                f"max_rx_queue_size={self.max_rx_queue_size}",
                f"max_tx_queue_size={self.max_tx_queue_size}",
            ]
        )
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def virtio_features(self) -> list[str]:
        return catalog.mask_to_names(self.virtio, "virtio")

    @property
    def protocol_features(self) -> list[str]:
        return catalog.mask_to_names(self.protocol, "protocol")

    @cached_property
    def required_protocol(self) -> int:
        """The protocol features a backend must offer to run this ABI (catalog.PROTOCOL_NEEDS);
        the others of `protocol` are optional: offered to the frontend when the backend has them."""
        return catalog.required_protocol(self.virtio, self.protocol, self.max_queue_pairs)

    def mask(self, kind: str) -> int:
        """Return the virtio or protocol mask."""
        return self.virtio if kind == "virtio" else self.protocol

    def limit(self, name: str) -> int:
        """Return one of LIMITS."""
        return int(getattr(self, name))

    @property
    def deprecated_features(self) -> list[str]:
        return catalog.mask_to_names(self.virtio & catalog.DEPRECATED_MASK["virtio"], "virtio") + \
            catalog.mask_to_names(self.protocol & catalog.DEPRECATED_MASK["protocol"], "protocol")

    @property
    def host_dependent_features(self) -> list[str]:
        return [n for n in self.virtio_features + self.protocol_features
                if (f := catalog.find(n)) and f.host_dependent]

    def without_deprecated(self) -> "Abi":
        """Return this ABI without deprecated features (and without what needed them
        to keep a guest working)."""
        virtio, protocol = catalog.drop_guest_breaking(
            self.virtio & ~catalog.DEPRECATED_MASK["virtio"],
            self.protocol & ~catalog.DEPRECATED_MASK["protocol"],
        )
        return replace(self, virtio=virtio, protocol=protocol)

    def abi_dict(self) -> dict[str, Any]:
        """Return the ABI as JSON-ready data, features by name."""
        return {
            "virtio_features": self.virtio_features,
            "protocol_features": self.protocol_features,
            **{name: self.limit(name) for name in LIMITS},
        }


@dataclass(frozen=True)
class Mode:
    """A named compat mode, fully expanded."""

    #: <lineage>.v<version> (without a Debian or RPM epoch: versions.name_part)
    name: str
    #: <vendor>.<product>
    lineage: str
    #: as the table writes it (with its epoch, if any)
    version: str
    #: orders modes: newest = latest date, then name; None for custom modes
    released: date | None
    abi: Abi
    #: what the mode was built from, e.g. {"ovs": "2.13.0", "dpdk": "19.11.0"}
    provenance: Mapping[str, str] = field(default_factory=dict)
    note: str = ""
    #: the table file that defined it ("" for derived and custom modes)
    source: str = ""
    #: the mode this one was derived from (recommended, baseline inputs), if any
    derived_from: tuple[str, ...] = ()
    #: in a registry: the corrected digest, when an erratum corrected this definition
    #: but ports still use it (`vucompat load` keeps it for them)
    superseded_by: str = ""
    #: the digests of the definitions of this name that errata corrected to this one
    supersedes: tuple[str, ...] = ()
    #: how the versions of its lineage are ordered (versions.SCHEMES): its table's version_scheme
    version_scheme: str = NATURAL

    @property
    def digest(self) -> str:
        return self.abi.digest

    @cached_property
    def order_key(self) -> tuple[Any, ...]:
        """Sort key: newer modes sort later: by released date, then by name in natural
        order; within a lineage of the debian or rpm scheme, by version as dpkg or rpm
        order them."""
        released = self.released or date.min
        if self.version_scheme == NATURAL:
            return (released, natural_key(self.name))
        # (no natural mode's second item equals natural_key("<lineage>.v"), so its third item,
        # of another shape, is only ever compared with the third item of a mode of a scheme)
        return (released, natural_key(f"{self.lineage}.v"), (self.version_scheme, sort_key(self.version,
                                                                                           self.version_scheme)))

    def as_dict(self) -> dict[str, Any]:
        """Return the mode as JSON-ready data (the `show` contract of docs/cli.md)."""
        return {
            "name": self.name,
            "lineage": self.lineage,
            "version": self.version,
            "released": self.released.isoformat() if self.released else None,
            "digest": self.digest,
            **self.abi.abi_dict(),
            "required_protocol_features": catalog.mask_to_names(self.abi.required_protocol, "protocol"),
            "deprecated_features": self.abi.deprecated_features,
            "host_dependent_features": self.abi.host_dependent_features,
            "provenance": dict(self.provenance),
            "note": self.note,
            "source": self.source,
            "derived_from": list(self.derived_from),
            **({"superseded_by": self.superseded_by} if self.superseded_by else {}),
            **({"supersedes": list(self.supersedes)} if self.supersedes else {}),
            **({"version_scheme": self.version_scheme} if self.version_scheme != NATURAL else {}),
        }


#: the vhost-user port types of OVS: OVS serves the socket, or connects to QEMU's
SERVER_TYPE, CLIENT_TYPE = "dpdkvhostuser", "dpdkvhostuserclient"
PORT_TYPES: tuple[str, ...] = (SERVER_TYPE, CLIENT_TYPE)
#: the Interface external_ids key that marks vucompat's own probe ports (the agent leaves them alone)
PROBE_MARK = "vucompat-probe"


@dataclass(frozen=True)
class Capabilities:
    """What a host's backend offers; a mode is runnable when the host offers all of
    its features and limits.

    From OVS 3.2 the two port types offer different masks: `by_type` holds each
    type's offer when known, and `abi` what every type offers (their intersection),
    the answer for a port whose type is not known."""

    abi: Abi
    #: where the capabilities came from (a file, later a probe)
    source: str = ""
    #: port type -> its offer (empty: every type offers `abi`)
    by_type: Mapping[str, Abi] = field(default_factory=dict)

    def offer(self, port_type: str | None = None) -> Abi:
        """Return what a port of `port_type` is offered (None: any type, `abi`)."""
        return self.by_type.get(port_type, self.abi) if port_type else self.abi

    @property
    def types_differ(self) -> bool:
        return len({a.digest for a in self.by_type.values()} | {self.abi.digest}) > 1

    @classmethod
    def of_types(cls, by_type: Mapping[str, Abi], source: str = "") -> "Capabilities":
        """Return the capabilities of per-type offers; `abi` is their intersection."""
        return cls(abi=common_offer(list(by_type.values())), source=source, by_type=dict(by_type))


def common_offer(abis: Sequence[Abi]) -> Abi:
    """Return what every one of `abis` offers: the intersection of their masks, the
    smallest of each limit. `abis` must not be empty."""
    virtio = protocol = (1 << 64) - 1
    for abi in abis:
        virtio &= abi.virtio
        protocol &= abi.protocol
    return Abi(virtio=virtio, protocol=protocol, **{name: min(abi.limit(name) for abi in abis) for name in LIMITS})


def recommended(mode: Mode) -> Mode:
    """Return `mode` minus its deprecated features, named <mode>+recommended."""
    return Mode(
        name=mode.name + RECOMMENDED_SUFFIX,
        lineage=mode.lineage,
        version=mode.version + RECOMMENDED_SUFFIX,
        released=mode.released,
        abi=mode.abi.without_deprecated(),
        provenance=mode.provenance,
        note=f"{mode.name} without deprecated features",
        derived_from=(mode.name,),
        version_scheme=mode.version_scheme,
    )
