"""The registry database: its name, its schema file, and the columns vucompat uses
(registered in one place; optional columns are probed, not version-compared)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DB_NAME = "VuCompat"
SCHEMA_FILE = (Path(__file__).parent.parent / "ovsdb_schema" / "vucompat.ovsschema").resolve()
FLEET_DB = "VuCompat_Fleet"
FLEET_SCHEMA_FILE = SCHEMA_FILE.with_name("vucompat-fleet.ovsschema")

#: table -> columns vucompat reads and writes; all must exist in the server's schema
COLUMNS: dict[str, tuple[str, ...]] = {
    "Compat_Mode": ("name", "lineage", "version", "released", "digest", "virtio_features", "protocol_features",
                    "max_queue_pairs", "max_rx_queue_size", "max_tx_queue_size", "deprecated_features",
                    "derived_from", "provenance", "note", "external_ids"),
    "Host": ("name", "capabilities_source", "virtio_features", "protocol_features", "max_queue_pairs",
             "max_rx_queue_size", "max_tx_queue_size", "type_offers", "ovs_version", "dpdk_version", "default_policy",
             "other_config", "external_ids"),
    "Port": ("interface_name", "interface_uuid", "interface_type", "iface_id", "requested", "rule", "rule_detail",
             "resolved", "mode", "state", "error", "negotiated_features", "negotiated", "verification",
             "frontend_socket", "relay_socket", "violation", "external_ids"),
    "Incoming_Port": ("iface_id", "mode", "digest", "source", "created", "external_ids"),
}
#: Open_vSwitch columns read for the Host row, each used only when the server's
#: schema has it (dpdk_version appeared in OVS 2.10)
OPEN_VSWITCH_COLUMNS: tuple[str, ...] = ("ovs_version", "dpdk_version")


@lru_cache(maxsize=2)
def shipped_schema(which: str = "registry") -> dict[str, Any]:
    """Return a schema shipped with this vucompat: the registry's or the fleet's."""
    return json.loads((SCHEMA_FILE if which == "registry" else FLEET_SCHEMA_FILE).read_text())


def version_tuple(version: str) -> tuple[int, ...]:
    """'1.2.0' -> (1, 2, 0)."""
    return tuple(int(part) for part in version.split("."))
