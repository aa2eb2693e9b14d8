"""`vucompat contracts`: the versioned JSON contracts of this vucompat (docs/cli.md)."""

from __future__ import annotations

from vucompat.cli import _FORMAT, _emit, main


@main.command()
@_FORMAT
def contracts(fmt: str) -> None:
    """The JSON contracts of this vucompat: each output's contract, its version and
    its JSON Schema file. Object outputs name theirs in their `schema` key; list
    outputs (features, list, port list) are JSON arrays: their version is here."""
    from vucompat.cli import render
    from vucompat.core.contracts import CONTRACTS, stamp

    data = stamp("vucompat.contracts", {"contracts": [
        {"name": c.name, "version": c.version, "id": c.id, "summary": c.summary, "object": c.stamped,
         "file": str(c.path), "outputs": list(c.outputs)} for c in CONTRACTS.values()]})
    rows = [[c.name, c.version, c.path.name, "; ".join(c.outputs)] for c in CONTRACTS.values()]
    _emit(fmt, data, lambda: render.table(rows, ["CONTRACT", "VERSION", "SCHEMA", "OUTPUTS"]) +
          f"\n\nschemas: {next(iter(CONTRACTS.values())).path.parent}")
