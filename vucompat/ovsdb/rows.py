"""Rows <-> core values. Masks are stored as sets of bit numbers (0..63): OVSDB
integers are signed 64-bit and virtio uses bit 63."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Any

from types import SimpleNamespace

from vucompat.core import catalog
from vucompat.core.errors import VucompatError
from vucompat.core.mode import LIMITS, Abi, Capabilities, Mode


class CorruptRowError(VucompatError):
    """A row whose stored digest does not match its contents."""

    template = ("{remote}: Compat_Mode {name} holds a digest that does not match its features "
                "(stored {stored}, contents give {computed}): it was written outside vucompat; "
                "delete the row and load the tables again")


#: Compat_Mode external_ids: the corrected digest of a definition an erratum corrected
#: but ports still use; the erratum's reason; the digests a corrected definition supersedes
SUPERSEDED_BY, ERRATUM_REASON, SUPERSEDES = "vucompat-superseded-by", "vucompat-erratum", "vucompat-supersedes"


def bits_to_mask(bits: Any) -> int:
    return sum(1 << int(b) for b in bits)


def optional(value: Any) -> Any:
    """The value of an optional column (min 0, max 1), which the IDL shows as a list; None when empty."""
    return value[0] if value else None


def mode_row(mode: Mode) -> dict[str, Any]:
    """Return `mode` as a Compat_Mode row in OVSDB JSON (sets as ["set", [...]],
    maps as ["map", [[k, v], ...]]), ready for an insert operation."""
    abi = mode.abi
    return {
        "name": mode.name,
        "lineage": mode.lineage,
        "version": mode.version,
        "released": ["set", [mode.released.isoformat()] if mode.released else []],
        "digest": mode.digest,
        "virtio_features": ["set", catalog.bits_of(abi.virtio)],
        "protocol_features": ["set", catalog.bits_of(abi.protocol)],
        "max_queue_pairs": abi.max_queue_pairs,
        "max_rx_queue_size": abi.max_rx_queue_size,
        "max_tx_queue_size": abi.max_tx_queue_size,
        "deprecated_features": ["set", abi.deprecated_features],
        "derived_from": ["set", list(mode.derived_from)],
        "provenance": ["map", [[k, v] for k, v in mode.provenance.items()]],
        "note": mode.note,
        "external_ids": ["map", [[SUPERSEDES, ",".join(mode.supersedes)]] if mode.supersedes else []],
    }


def idl_values(json_row: dict[str, Any]) -> dict[str, Any]:
    """Return an OVSDB JSON row (mode_row) as the IDL takes values: lists for sets,
    dicts for maps."""
    def value(atom: Any) -> Any:
        if isinstance(atom, list) and atom and atom[0] == "set":
            return list(atom[1])
        if isinstance(atom, list) and atom and atom[0] == "map":
            return dict(atom[1])
        return atom

    return {column: value(atom) for column, atom in json_row.items()}


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
                supersedes=tuple(d for d in ids.get(SUPERSEDES, "").split(",") if d))


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


def json_row(row: dict[str, Any], table: str, schema: str = "registry") -> SimpleNamespace:
    """Return a row from a raw `select` reply with values shaped as the IDL shows
    them (sets and optional columns as lists, maps as dicts, uuids as strings), so
    row_to_mode and host_capabilities read both alike. `schema`: registry | fleet."""
    kinds = _column_kinds(schema)[table]
    out = {}
    for column, value in row.items():
        if isinstance(value, list) and value and value[0] in ("set", "map", "uuid"):
            tag, payload = value
            value = {"set": lambda p: list(p), "map": lambda p: dict(p), "uuid": lambda p: p}[tag](payload)
        if kinds.get(column) == "set" and not isinstance(value, list):
            value = [value]  # a one-element set is sent bare
        out[column] = value
    return SimpleNamespace(**out)


@lru_cache(maxsize=2)
def _column_kinds(schema: str) -> dict[str, dict[str, str]]:
    """table -> column -> "set" (a set or optional column) or "scalar", from a shipped schema."""
    from vucompat.ovsdb.schema import shipped_schema

    kinds: dict[str, dict[str, str]] = {}
    for table, spec in shipped_schema(schema)["tables"].items():
        for column, col in spec["columns"].items():
            ctype = col["type"]
            is_set = isinstance(ctype, dict) and (ctype.get("min", 1) != 1 or ctype.get("max", 1) != 1) \
                and "value" not in ctype
            kinds.setdefault(table, {})[column] = "set" if is_set else "scalar"
    return kinds
