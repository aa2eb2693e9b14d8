"""OVSDB JSON values <-> Python values, in one place (RFC 7047, section 5.1).

On the wire a set is ["set", [atoms]] (or one bare atom), a map is ["map", [[key,
value], ...]], a reference is ["uuid", U] or, inside one transaction, ["named-uuid",
NAME]. On the Python side values are shaped as the ovs IDL shows them, so code that
reads rows reads an IDL row and a decoded `select` row alike: a set or an optional
column (min 0, max 1) is a list, a map is a dict; a uuid (a reference too) is a str
where the IDL has a uuid.UUID or a Row (uuid_of reads them all).

The column's type in the schema decides: `to_python(value, column_type)` and
`to_json(value, column_type)` for one value, `decode_row`/`encode_row` for a row of a
table of a schema (the registry's or the fleet's as shipped, or a schema document a
server sent). `uuid_ref`, `named_ref`, `set_of` and `uuid_of` are for operations
written by hand (where clauses, mutations, references between inserts).
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping

#: a column's "type" in an OVSDB schema: an atomic type name, or {"key", "value"?, "min"?, "max"?}
ColumnType = Any
#: one value of a column from one shape to the other
_Convert = Callable[[Any], Any]


def uuid_ref(uuid: str) -> list[str]:
    """A reference to the row `uuid`: ["uuid", uuid]."""
    return ["uuid", uuid]


def named_ref(name: str) -> list[str]:
    """A reference to the row an insert of the same transaction names `name` (its uuid-name)."""
    return ["named-uuid", name]


def set_of(atoms: Iterable[Any]) -> list[Any]:
    """["set", [atoms]]: a set of atoms already in OVSDB JSON (e.g. a mutation's keys)."""
    return ["set", list(atoms)]


def uuid_of(ref: Any) -> str:
    """The uuid a reference names, as a str: from OVSDB JSON (["uuid", U]), a decoded
    value (U itself), or an IDL value (a Row, a uuid.UUID)."""
    if isinstance(ref, list):
        return ref[1]
    if isinstance(ref, str):
        return ref
    return str(getattr(ref, "uuid", ref))


def optional(value: Any) -> Any:
    """The value of an optional column (min 0, max 1) in its Python shape (a list of
    at most one), or None when empty."""
    return value[0] if value else None


def canonical(value: Any) -> Any:
    """An OVSDB JSON value in one comparable form: sets and maps as frozensets,
    references as (tag, uuid) pairs. (A one-element set the server sends bare is
    the bare atom here: compare with the column's type in mind.)"""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("set", "map", "uuid", "named-uuid"):
        tag, payload = value
        if tag == "set":
            return frozenset(canonical(v) for v in payload)
        if tag == "map":
            return frozenset((canonical(k), canonical(v)) for k, v in payload)
        return (tag, payload)
    return value


# ---- by column type -----------------------------------------------------------------------------


def _atomic(base: Any) -> str:
    """The atomic type name of a key or value type ("uuid", "string", ...)."""
    return base if isinstance(base, str) else base["type"]


def _kind(column_type: ColumnType) -> tuple[str, bool, bool]:
    """(scalar | set | map, whether the keys are uuids, whether the values are uuids)."""
    if isinstance(column_type, str):
        return "scalar", column_type == "uuid", False
    key_uuid = _atomic(column_type["key"]) == "uuid"
    if "value" in column_type:
        return "map", key_uuid, _atomic(column_type["value"]) == "uuid"
    if column_type.get("min", 1) == 1 and column_type.get("max", 1) == 1:
        return "scalar", key_uuid, False
    return "set", key_uuid, False


def column_kind(column_type: ColumnType) -> str:
    """"scalar", "set" or "map": how a column's values are shaped."""
    return _kind(column_type)[0]


_ATOM_DEFAULTS = {"integer": 0, "real": 0.0, "boolean": False, "string": "",
                  "uuid": ["uuid", "00000000-0000-0000-0000-000000000000"]}


def default_json(column_type: ColumnType) -> Any:
    """A column's default value in OVSDB JSON (what a monitor leaves out of a row)."""
    kind = column_kind(column_type)
    if kind == "map":
        return ["map", []]
    if kind == "set":
        return ["set", []]
    base = column_type if isinstance(column_type, str) else column_type["key"]
    return _ATOM_DEFAULTS[_atomic(base)]


def _atom_to_python(atom: Any) -> Any:
    return atom[1] if isinstance(atom, list) else atom  # the only list atoms are references


@lru_cache(maxsize=256)
def _decoder_of(kind: str, key_uuid: bool, value_uuid: bool) -> _Convert | None:
    """The decoder of one kind of column (None: the value is its own Python shape)."""
    if kind == "map":
        if not (key_uuid or value_uuid):
            return lambda value: dict(value[1])
        return lambda value: {_atom_to_python(k): _atom_to_python(v) for k, v in value[1]}
    if kind == "set":
        if key_uuid:  # a bare atom is itself a list: ["uuid", U]
            return lambda value: [a[1] for a in value[1]] if value[0] == "set" else [value[1]]
        return lambda value: list(value[1]) if isinstance(value, list) else [value]
    return _atom_to_python if key_uuid else None


def to_python(value: Any, column_type: ColumnType) -> Any:
    """A value of a column of type `column_type`, from OVSDB JSON to its Python shape."""
    decode = _decoder_of(*_kind(column_type))
    return value if decode is None else decode(value)


def _atom_to_json(atom: Any) -> Any:
    """A uuid atom in OVSDB JSON; a reference already in OVSDB JSON (e.g. a named_ref) stays as it is."""
    return atom if isinstance(atom, list) else uuid_ref(uuid_of(atom))


_COLLECTIONS = (list, tuple, set, frozenset)


def _set_atoms(value: Any, is_uuid: bool) -> Any:
    """The atoms of a set column's value: a collection, None (empty) or one bare atom."""
    if value is None:
        return ()
    if isinstance(value, _COLLECTIONS) and not (is_uuid and _is_ref(value)):
        return value
    return (value,)


def _pairs(value: Any) -> Iterable[Any]:
    """The (key, value) pairs of a map column's value: a mapping, or pairs."""
    return value.items() if hasattr(value, "items") else value


def _is_ref(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and value[0] in ("uuid", "named-uuid")


@lru_cache(maxsize=256)
def _encoder_of(kind: str, key_uuid: bool, value_uuid: bool) -> _Convert | None:
    """The encoder of one kind of column (None: the Python value is its own OVSDB JSON)."""
    if kind == "map":
        if not (key_uuid or value_uuid):
            return lambda value: ["map", [[k, v] for k, v in _pairs(value)]]
        key = _atom_to_json if key_uuid else (lambda atom: atom)
        val = _atom_to_json if value_uuid else (lambda atom: atom)
        return lambda value: ["map", [[key(k), val(v)] for k, v in _pairs(value)]]
    if kind == "set":
        if key_uuid:
            return lambda value: ["set", [_atom_to_json(a) for a in _set_atoms(value, True)]]
        return lambda value: ["set", value if type(value) is list else list(_set_atoms(value, False))]
    return _atom_to_json if key_uuid else None


def to_json(value: Any, column_type: ColumnType) -> Any:
    """A value of a column of type `column_type`, from Python to OVSDB JSON. A set or
    optional column also takes None (empty) or one bare atom; a map takes a dict or
    (key, value) pairs, kept in their order; a uuid atom takes a str, an IDL Row or
    uuid.UUID, or a reference already in OVSDB JSON (named_ref)."""
    encode = _encoder_of(*_kind(column_type))
    return value if encode is None else encode(value)


# ---- rows ----------------------------------------------------------------------------------------

#: columns every table has (not listed in schemas)
_UUID_COLUMNS = ("_uuid", "_version")


def table_types(schema: Mapping[str, Any], table: str) -> dict[str, ColumnType]:
    """column -> type of `table` in a schema document (as get_schema returns it)."""
    return {column: spec["type"] for column, spec in schema["tables"][table]["columns"].items()}


@lru_cache(maxsize=16)
def shipped_types(table: str, schema: str = "registry") -> dict[str, ColumnType]:
    """column -> type of `table` in a schema shipped with vucompat: registry | fleet."""
    from vucompat.ovsdb.schema import shipped_schema

    return table_types(shipped_schema(schema), table)


def _decoders(types: Mapping[str, ColumnType]) -> dict[str, _Convert | None]:
    decoders = {column: _decoder_of(*_kind(t)) for column, t in types.items()}
    decoders.update({column: _atom_to_python for column in _UUID_COLUMNS})
    return decoders


@lru_cache(maxsize=16)
def _shipped_decoders(table: str, schema: str) -> dict[str, _Convert | None]:
    return _decoders(shipped_types(table, schema))


def _generic(value: Any) -> Any:
    """A value of a column the schema does not describe: by its tag alone."""
    if isinstance(value, list) and len(value) == 2:
        tag, payload = value
        if tag == "set":
            return [_atom_to_python(a) for a in payload]
        if tag == "map":
            return {_atom_to_python(k): _atom_to_python(v) for k, v in payload}
        if tag in ("uuid", "named-uuid"):
            return payload
    return value


def decode_row(row: Mapping[str, Any], table: str, schema: str | Mapping[str, Any] = "registry") -> SimpleNamespace:
    """A row of a `select` reply (OVSDB JSON) with its values in their Python shape,
    as attributes (`_uuid` too, as a str): read like an IDL row. `schema`: registry or
    fleet (as shipped), or the schema document a server sent."""
    decoders = _shipped_decoders(table, schema) if isinstance(schema, str) else _decoders(table_types(schema, table))
    out = {}
    for column, value in row.items():
        decode = decoders.get(column, _generic)
        out[column] = value if decode is None else decode(value)
    return SimpleNamespace(**out)


_PLAIN, _SET, _MAP, _OTHER = range(4)


def _encoders(types: Mapping[str, ColumnType]) -> tuple[dict[str, int], dict[str, _Convert | None]]:
    """(column -> how to encode it, column -> its encoder): plain atoms, and sets and
    maps of plain atoms given as a list and a dict, take a fast path (a load writes
    1,000 rows)."""
    how, encoders = {}, {}
    for column, ctype in types.items():
        kind, key_uuid, value_uuid = _kind(ctype)
        plain = not (key_uuid or value_uuid)
        how[column] = {"scalar": _PLAIN, "set": _SET, "map": _MAP}[kind] if plain else _OTHER
        encoders[column] = _encoder_of(kind, key_uuid, value_uuid)
    return how, encoders


@lru_cache(maxsize=16)
def _shipped_encoders(table: str, schema: str) -> tuple[dict[str, int], dict[str, _Convert | None]]:
    return _encoders(shipped_types(table, schema))


def encode_row(values: Mapping[str, Any], table: str, schema: str | Mapping[str, Any] = "registry"
               ) -> dict[str, Any]:
    """A row (column -> Python value, see to_json) in OVSDB JSON, for an insert or
    an update. `schema` as for decode_row. Raises KeyError for a column the table lacks."""
    how, encoders = _shipped_encoders(table, schema) if isinstance(schema, str) else \
        _encoders(table_types(schema, table))
    out: dict[str, Any] = {}
    for column, value in values.items():
        fast = how[column]
        if fast == _PLAIN:
            out[column] = value
        elif fast == _SET and type(value) is list:
            out[column] = ["set", value]
        elif fast == _MAP and type(value) is dict:
            out[column] = ["map", [[k, v] for k, v in value.items()]]
        else:
            out[column] = encoders[column](value)  # type: ignore[misc]
    return out
