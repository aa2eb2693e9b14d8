"""Commands for orchestrators: check-migration, select-mode."""

from __future__ import annotations

from typing import Any

import click

from . import _FORMAT, _conn, _connection_options, _emit, main


@main.command("check-migration")
@click.option("--port", "interface", required=True, help="The port's Interface name on the source host.")
@click.option("--source", required=True, metavar="REMOTE", help="The source host's registry (OVSDB remote).")
@click.option("--dest", required=True, metavar="REMOTE", help="The destination host's registry (OVSDB remote).")
@click.option("--allow-outside-contract", is_flag=True,
              help="Accept a port whose mode the destination cannot honour, when the features its guest "
                   "really negotiated are all offered there.")
@_connection_options
@_FORMAT
def check_migration(interface: str, source: str, dest: str, allow_outside_contract: bool, fmt: str,
                    **kw: Any) -> None:
    """May this port live-migrate from source to destination? Exit 0 allowed,
    1 refused (the reasons say why, by feature name), 2 error."""
    from ..api import Client

    with Client(**_conn(kw)) as client:
        verdict = client.check_migration(interface, source, dest, allow_outside_contract)

    def text() -> str:
        head = click.style("ALLOWED" if verdict.allowed else "REFUSED", fg="green" if verdict.allowed else "red",
                           bold=True)
        lines = [f"{head} ({verdict.level}): {verdict.sentence}"]
        lines += [f"  {r.kind}: {r.name} (source {r.source}, destination {r.destination})" for r in verdict.reasons]
        return "\n".join(lines)

    _emit(fmt, verdict.as_dict(), text)
    if not verdict.allowed:
        raise SystemExit(1)


@main.command("select-mode")
@click.option("--scope", required=True,
              help="everywhere (all the hosts given), hosts (the hosts given), lineage=NAME, or none.")
@click.option("--host", "hosts", multiple=True, metavar="REMOTE", help="A host of the scope (repeatable).")
@_connection_options
@_FORMAT
def select_mode(scope: str, hosts: tuple[str, ...], fmt: str, **kw: Any) -> None:
    """The mode to give a new port so it can move within its migration scope.
    Exit 1 when no mode qualifies."""
    from ..api import Client
    from ..errors import UsageError

    if scope != "none" and not hosts:
        raise UsageError(message="give the scope's hosts with --host REMOTE (repeatable)")
    with Client(**_conn(kw)) as client:
        selection = client.select_mode(scope, hosts)

    def text() -> str:
        lines = [selection.sentence()]
        for name, problems in selection.refused.items():
            lines.append(f"  {name}: refused: " + "; ".join(problems))
        return "\n".join(lines)

    _emit(fmt, selection.as_dict(), text)
    if selection.mode is None and not selection.passthrough:
        raise SystemExit(1)
