"""Commands for orchestrators: check-migration, select-mode."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import click

from vucompat.cli import _FORMAT, _conn, _connection_options, _emit, main

if TYPE_CHECKING:
    from vucompat.core.migration import Verdict


def check_options(where: str, metavar: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--port, --source, --dest (`metavar`s: `where` says what they name) and
    --allow-outside-contract, for both check-migration commands."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed([
            click.option("--port", "interface", required=True, help="The port's Interface name on the source host."),
            click.option("--source", required=True, metavar=metavar, help=f"The source host's {where}."),
            click.option("--dest", required=True, metavar=metavar, help=f"The destination host's {where}."),
            click.option("--dest-port-type", type=click.Choice(["dpdkvhostuser", "dpdkvhostuserclient"]),
                         help="The type of the port on the destination (default: the same as on the source); "
                              "from OVS 3.2 the types offer different features."),
            click.option("--allow-outside-contract", is_flag=True,
                         help="Accept a port whose mode the destination cannot honour, when the features its "
                              "guest really negotiated are all offered there."),
        ]):
            f = option(f)
        return f
    return decorate


@main.command("check-migration")
@check_options("registry (OVSDB remote)", "REMOTE")
@_connection_options
@_FORMAT
def check_migration(interface: str, source: str, dest: str, allow_outside_contract: bool,
                    dest_port_type: str | None, fmt: str, **kw: Any) -> None:
    """May this port live-migrate from source to destination? Exit 0 allowed,
    1 refused (the reasons say why, by feature name), 2 error."""
    from vucompat.api import Client

    with Client(**_conn(kw)) as client:
        verdict = client.check_migration(interface, source, dest, allow_outside_contract, dest_port_type)
    print_verdict(verdict, fmt)


def print_verdict(verdict: Verdict, fmt: str, extra: dict[str, Any] | None = None,
                  notes: Sequence[str] = ()) -> None:
    """Print a migration verdict (and `extra` fields in JSON, `notes` in text);
    exit 1 when refused."""
    def text() -> str:
        head = click.style("ALLOWED" if verdict.allowed else "REFUSED", fg="green" if verdict.allowed else "red",
                           bold=True)
        lines = [f"{head} ({verdict.level}): {verdict.sentence}", *notes]
        lines += [f"  {r.kind}: {r.name} (source {r.source}, destination {r.destination})" for r in verdict.reasons]
        return "\n".join(lines)

    _emit(fmt, {**verdict.as_dict(), **(extra or {})}, text)
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
    from vucompat.api import Client
    from vucompat.core.errors import UsageError

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


@main.command()
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True, help="The host's registry.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "labels"]), default="text", show_default=True,
              help="text/json: Placement custom traits; labels: Kubernetes node labels.")
@_connection_options
def traits(db: str, fmt: str, **kw: Any) -> None:
    """The Placement custom traits (or node labels) of the modes this host can run,
    so a scheduler can filter hosts before it asks any of them."""
    import json

    from vucompat.api import Client
    from vucompat.core.contracts import stamp
    from vucompat.core.names import node_label, placement_trait

    with Client(**_conn(kw)) as client:
        runnable = [m.name for m in client.modes(db) if m.runnable]
    if fmt == "labels":
        click.echo("\n".join(f"{node_label(name)}=true" for name in runnable))
    elif fmt == "json":
        click.echo(json.dumps(stamp("vucompat.traits", {"traits": [placement_trait(n) for n in runnable],
                                                        "labels": {node_label(n): "true" for n in runnable}}),
                              indent=2))
    else:
        click.echo("\n".join(placement_trait(name) for name in runnable))


@main.command("plan-upgrade")
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True, help="The host's registry.")
@click.option("--tables", "new_tables", required=True, type=click.Path(path_type=Path),
              help="The tables the host would have after the upgrade (a directory).")
@click.option("--capabilities", type=click.Path(path_type=Path),
              help="What the upgraded backend would offer (default: what the host's backend offers now).")
@_connection_options
@_FORMAT
def plan_upgrade(db: str, new_tables: Path, capabilities: Path | None, fmt: str, **kw: Any) -> None:
    """What-if: which ports would lose their mode, see it change meaning, or become
    unrunnable if this host were upgraded. Exit 1 when any port would."""
    from vucompat.core.contracts import stamp
    from vucompat.cli.hosts import load_host, open_host
    from vucompat.core.migration import plan_upgrade as plan
    from vucompat.ovsdb.ports import read_registry_ports
    from vucompat.core.modeset import Host
    from vucompat.core.tables import read_capabilities

    conn = _conn(kw)
    current = open_host(db, **conn)
    new = load_host(new_tables)
    caps = read_capabilities(capabilities) if capabilities else current.capabilities
    impacts = plan(list(read_registry_ports(db, **conn).values()), Host(f"{db} upgraded", new.modeset, caps))
    bad = [i for i in impacts if i.outcome not in ("keeps", "unaffected")]

    def text() -> str:
        lines = [f"{i.port:12} {i.mode or '-':28} {i.outcome}" + (f": {i.detail}" if i.detail else "") for i in impacts]
        lines.append(f"{len(bad)} of {len(impacts)} port(s) affected by the upgrade")
        return "\n".join(lines)

    _emit(fmt, stamp("vucompat.upgrade-plan", {"ports": [i.as_dict() for i in impacts], "affected": len(bad)}), text)
    if bad:
        raise SystemExit(1)
