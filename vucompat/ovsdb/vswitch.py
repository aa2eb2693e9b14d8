"""Reads of the Open_vSwitch database: the OVS and DPDK versions, the settings
(other_config) and the netdev bridges, with one `select` (no monitor). The agent's
own monitored reads of Interfaces are in ports.py."""

from __future__ import annotations

from vucompat.ovsdb import rpc
from vucompat.ovsdb.codec import decode_row
from vucompat.ovsdb.schema import OPEN_VSWITCH_COLUMNS

def read_ovs_versions(remote: str, timeout: float) -> dict[str, str]:
    """Return the OVS and DPDK versions the Open_vSwitch database at `remote`
    records ({} when it serves none, or they are not set)."""
    return read_switch(remote, timeout)[0]


def read_switch(remote: str, timeout: float) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Return (versions, other_config, netdev bridges) of the Open_vSwitch database
    at `remote`; empty when it serves none. Columns an older schema lacks are skipped."""
    try:
        schema = rpc.get_schema(remote, "Open_vSwitch", timeout)
    except rpc.OvsdbError as err:
        if "does not serve" in err.reason:
            return {}, {}, []
        raise
    have = schema["tables"]["Open_vSwitch"]["columns"]
    columns = [c for c in OPEN_VSWITCH_COLUMNS if c in have]
    switch, bridges = rpc.transact(remote, "Open_vSwitch", [
        {"op": "select", "table": "Open_vSwitch", "where": [], "columns": [*columns, "other_config"]},
        {"op": "select", "table": "Bridge", "where": [], "columns": ["name", "datapath_type"]},
    ], timeout)
    rows = [decode_row(row, "Open_vSwitch", schema) for row in switch.get("rows", [])]
    versions: dict[str, str] = {}
    other_config: dict[str, str] = {}
    if rows:
        for column in columns:
            value = getattr(rows[0], column)
            if isinstance(value, list):  # optional columns (both, in the schemas OVS ships)
                value = value[0] if value else None
            if value:
                versions[column] = value
        other_config = rows[0].other_config
    netdev = sorted(b["name"] for b in bridges.get("rows", []) if b["datapath_type"] == "netdev")
    return versions, other_config, netdev
