"""The OVSDB JSON codec: what the server sends and what vucompat writes, by column type."""

from __future__ import annotations

import uuid

from hypothesis import given, strategies as st

from vucompat.ovsdb.codec import (canonical, decode_row, encode_row, named_ref, optional, shipped_types, to_json,
                                  to_python, uuid_of, uuid_ref)

U1, U2 = "6f1a3e5c-6d8e-4d5b-9c1e-0a4b8e1d2c3f", "0b9d7c1e-2f3a-4b5c-8d6e-7f8091a2b3c4"
STRINGS = {"key": "string", "min": 0, "max": "unlimited"}
OPTIONAL = {"key": "string", "min": 0, "max": 1}
REFS = {"key": {"type": "uuid", "refTable": "Compat_Mode"}, "min": 0, "max": "unlimited"}
REF_MAP = {"key": "string", "value": {"type": "uuid", "refTable": "RBAC_Permission"}, "min": 0, "max": "unlimited"}


def test_sets_decode_to_lists_whether_the_server_sends_them_bare_or_tagged():
    assert to_python(["set", ["a", "b"]], STRINGS) == ["a", "b"]
    assert to_python("a", STRINGS) == ["a"]  # a one-element set is sent bare
    assert to_python(["set", []], OPTIONAL) == [] and optional(to_python(["set", []], OPTIONAL)) is None
    assert to_python("3.1.0", OPTIONAL) == ["3.1.0"] and optional(["3.1.0"]) == "3.1.0"
    # references are uuids (str), bare or in a set, one or several
    assert to_python(["uuid", U1], REFS) == [U1]
    assert to_python(["set", [["uuid", U1], ["uuid", U2]]], REFS) == [U1, U2]
    assert to_python(["uuid", U1], "uuid") == U1


def test_maps_decode_to_dicts_with_their_references_as_uuids():
    assert to_python(["map", [["a", "1"], ["b", "2"]]], {"key": "string", "value": "string"}) == {"a": "1", "b": "2"}
    assert to_python(["map", [["Host", ["uuid", U1]]]], REF_MAP) == {"Host": U1}


def test_encoding_takes_the_python_shape_and_a_few_conveniences():
    assert to_json(["a"], STRINGS) == ["set", ["a"]]
    assert to_json(None, OPTIONAL) == ["set", []] and to_json("x", OPTIONAL) == ["set", ["x"]]
    assert to_json({"k": "v"}, {"key": "string", "value": "string"}) == ["map", [["k", "v"]]]
    assert to_json([("b", "2"), ("a", "1")], {"key": "string", "value": "string"}) == ["map", [["b", "2"], ["a", "1"]]]
    # uuids from a str, an IDL value (uuid.UUID) or a reference already in OVSDB JSON
    assert to_json([U1, uuid.UUID(U2), named_ref("m0")], REFS) == \
        ["set", [["uuid", U1], ["uuid", U2], ["named-uuid", "m0"]]]
    assert to_json(uuid_ref(U1), REFS) == ["set", [["uuid", U1]]]  # one reference, not a set of two strings
    assert to_json({"Host": named_ref("p")}, REF_MAP) == ["map", [["Host", ["named-uuid", "p"]]]]
    assert to_json(7, "integer") == 7


def test_uuid_of_reads_every_shape_a_reference_comes_in():
    class Row:  # an IDL Row has a uuid attribute
        uuid = uuid.UUID(U1)

    assert uuid_of(["uuid", U1]) == uuid_of(U1) == uuid_of(uuid.UUID(U1)) == uuid_of(Row()) == U1


def test_a_select_row_reads_like_an_idl_row():
    raw = {"_uuid": ["uuid", U1], "interface_name": "vhu0", "interface_uuid": ["uuid", U2], "mode": ["set", []],
           "resolved": "upstream.ovs-dpdk.v2.13", "negotiated_features": 32, "negotiated": ["map", [["a", "b"]]],
           "unknown_column": ["set", [["uuid", U2]]]}
    row = decode_row(raw, "Port")
    assert row._uuid == U1 and row.interface_uuid == U2 and row.mode == []
    assert row.resolved == ["upstream.ovs-dpdk.v2.13"] and row.negotiated_features == [32]
    assert row.negotiated == {"a": "b"} and row.unknown_column == [U2]  # a column the schema lacks: by its tag
    fleet = decode_row({"modes": ["uuid", U1], "runnable": ["set", []], "pool": "pool-1"}, "Host", "fleet")
    assert fleet.modes == [U1] and fleet.runnable == [] and fleet.pool == ["pool-1"]


def test_canonical_values_compare_whatever_the_server_order():
    assert canonical(["set", [3, 1, 2]]) == canonical(["set", [1, 2, 3]])
    assert canonical(["map", [["b", "1"], ["a", "2"]]]) == canonical(["map", [["a", "2"], ["b", "1"]]])
    assert canonical(["set", []]) != canonical(["set", [0]])


atoms = {"string": st.text(max_size=8), "integer": st.integers(0, 63),
         "uuid": st.uuids().map(str)}


@given(st.data())
def test_every_shipped_column_round_trips(data):
    """Python shape -> OVSDB JSON -> Python shape, for every column of both shipped schemas,
    however the server shortens a one-element set."""
    for schema in ("registry", "fleet"):
        for table in ("Compat_Mode", "Host", "Port"):
            types = shipped_types(table, schema)
            values = {}
            for column, ctype in types.items():
                key = ctype if isinstance(ctype, str) else ctype["key"]
                atom = atoms[key if isinstance(key, str) else key["type"]]
                if isinstance(ctype, dict) and "value" in ctype:
                    values[column] = data.draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
                elif isinstance(ctype, dict) and (ctype.get("min", 1), ctype.get("max", 1)) != (1, 1):
                    values[column] = data.draw(st.lists(atom, max_size=1 if ctype["max"] == 1 else 4, unique=True))
                else:
                    values[column] = data.draw(atom)
            sent = encode_row(values, table, schema)
            shortened = {c: v[1][0] if isinstance(v, list) and v[0] == "set" and len(v[1]) == 1 else v
                         for c, v in sent.items()}
            for wire in (sent, shortened):
                assert vars(decode_row(wire, table, schema)) == values
