"""Registry rows <-> core values: Compat_Mode rows and Modes, Host rows and
Capabilities (the fleet's rows of those tables have the same columns). Masks are
stored as sets of bit numbers (0..63): OVSDB integers are signed 64-bit and virtio
uses bit 63. Rows are read in their Python shape (an IDL row, or a `select` row
through codec.decode_row)."""

from __future__ import annotations

from datetime import date
from typing import Any

from vucompat.core import catalog
from vucompat.core.errors import VucompatError
from vucompat.core.mode import LIMITS, Abi, Capabilities, Mode
from vucompat.core.versions import NATURAL
from vucompat.ovsdb.codec import encode_row, optional


class CorruptRowError(VucompatError):
    """A row whose stored digest does not match its contents."""

    template = ("{remote}: Compat_Mode {name} holds a digest that does not match its features "
                "(stored {stored}, contents give {computed}): it was written outside vucompat; "
                "delete the row and load the tables again")


#: Compat_Mode external_ids: the corrected digest of a definition an erratum corrected
#: but ports still use; the erratum's reason; the digests a corrected definition supersedes
SUPERSEDED_BY, ERRATUM_REASON, SUPERSEDES = "vucompat-superseded-by", "vucompat-erratum", "vucompat-supersedes"
#: Compat_Mode external_ids: the version scheme of the mode's table when not natural (it orders the modes)
VERSION_SCHEME = "vucompat-version-scheme"


def bits_to_mask(bits: Any) -> int:
    """A mask from a column of bit numbers."""
    return sum(1 << int(b) for b in bits)


def mode_values(mode: Mode) -> dict[str, Any]:
    """Return `mode` as the columns of a Compat_Mode row, in their Python shape (as
    the IDL takes them: lists for sets and optional columns, dicts for maps)."""
    abi = mode.abi
    return {
        "name": mode.name,
        "lineage": mode.lineage,
        "version": mode.version,
        "released": [mode.released.isoformat()] if mode.released else [],
        "digest": mode.digest,
        "virtio_features": catalog.bits_of(abi.virtio),
        "protocol_features": catalog.bits_of(abi.protocol),
        "max_queue_pairs": abi.max_queue_pairs,
        "max_rx_queue_size": abi.max_rx_queue_size,
        "max_tx_queue_size": abi.max_tx_queue_size,
        "deprecated_features": abi.deprecated_features,
        "derived_from": list(mode.derived_from),
        "provenance": mode.provenance,
        "note": mode.note,
        "external_ids": {**({SUPERSEDES: ",".join(mode.supersedes)} if mode.supersedes else {}),
                         **({VERSION_SCHEME: mode.version_scheme} if mode.version_scheme != NATURAL else {})},
    }


def mode_row(mode: Mode) -> dict[str, Any]:
    """Return `mode` as a Compat_Mode row in OVSDB JSON, ready for an insert
    operation (the registry's and the fleet's Compat_Mode columns are the same)."""
    return encode_row(mode_values(mode), "Compat_Mode")


def row_to_mode(row: Any, remote: str) -> Mode:
    """Return the Mode a Compat_Mode row holds; raise CorruptRowError when its
    digest does not match its contents."""
    abi = Abi(virtio=bits_to_mask(row.virtio_features), protocol=bits_to_mask(row.protocol_features),
              **{name: int(getattr(row, name)) for name in LIMITS})
    if abi.digest != row.digest:
        raise CorruptRowError(remote=remote, name=row.name, stored=row.digest, computed=abi.digest)
    released = optional(row.released)
    ids = dict(getattr(row, "external_ids", {}))
    return Mode(name=row.name, lineage=row.lineage, version=row.version,
                released=date.fromisoformat(released) if released else None, abi=abi,
                provenance=dict(row.provenance), note=row.note, source=remote,
                derived_from=tuple(row.derived_from),
                superseded_by=ids.get(SUPERSEDED_BY, ""),
                supersedes=tuple(d for d in ids.get(SUPERSEDES, "").split(",") if d),
                version_scheme=ids.get(VERSION_SCHEME, NATURAL))


def host_capabilities(row: Any, remote: str) -> Capabilities | None:
    """Return what a Host row says its backend offers, per port type where it knows
    (type_offers); None when nothing is declared (the host then runs every mode it
    defines)."""
    if row is None or row.capabilities_source == "none":
        return None
    limits = {name: optional(getattr(row, name)) for name in LIMITS}
    if any(v is None for v in limits.values()):
        return None
    abi = Abi(virtio=bits_to_mask(row.virtio_features), protocol=bits_to_mask(row.protocol_features),
              **{k: int(v) for k, v in limits.items()})
    by_type = {port_type: parse_offer(text) for port_type, text in dict(getattr(row, "type_offers", {})).items()}
    return Capabilities(abi=abi, source=f"{remote} Host {row.name} ({row.capabilities_source})", by_type=by_type)


def capabilities_columns(capabilities: Capabilities | None, source: str) -> dict[str, Any]:
    """Return the Host columns that declare `capabilities` (None: clear them): the
    offer of every port type in the mask columns, each type's own in type_offers."""
    if capabilities is None:
        return {"capabilities_source": "none", "virtio_features": [], "protocol_features": [],
                **{name: [] for name in LIMITS}, "type_offers": {}}
    abi = capabilities.abi
    return {"capabilities_source": source, "virtio_features": catalog.bits_of(abi.virtio),
            "protocol_features": catalog.bits_of(abi.protocol), **{name: [abi.limit(name)] for name in LIMITS},
            "type_offers": {t: offer_text(a) for t, a in sorted(capabilities.by_type.items())}}


def offer_text(abi: Abi) -> str:
    """One port type's offer as a type_offers value: masks in hex, then the limits."""
    return ",".join([f"virtio={catalog.to_hex(abi.virtio)}", f"protocol={catalog.to_hex(abi.protocol)}"]
                    + [f"{name}={abi.limit(name)}" for name in LIMITS])


def parse_offer(text: str) -> Abi:
    """The inverse of offer_text; raise ValueError for a value it did not write."""
    fields = dict(item.split("=", 1) for item in text.split(","))
    return Abi(virtio=catalog.parse_hex(fields["virtio"]), protocol=catalog.parse_hex(fields["protocol"]),
               **{name: int(fields[name]) for name in LIMITS})
