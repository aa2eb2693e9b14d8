"""Commands on the registry database: load, policy, db create/attach/upgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vucompat.cli import _FORMAT, _TABLES, _conn, _connection_options, _emit, _modeset, main


@main.command()
@_TABLES
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True,
              help="The registry database to load into (unix:PATH, tcp:IP:PORT, ssl:IP:PORT).")
@click.option("--prune", is_flag=True, help="Remove modes the tables no longer define, unless a port uses them.")
@click.option("--capabilities", type=click.Path(path_type=Path),
              help="Declare what this host's backend offers (a capabilities file) in the Host row.")
@click.option("--host-name", help="Name of the Host row (default: this machine's hostname).")
@click.option("--ovs-db", metavar="REMOTE",
              help="Where the Open_vSwitch database is served, for the OVS/DPDK versions (default: --db).")
@_connection_options
@_FORMAT
def load(tables: tuple[Path, ...], db: str, prune: bool, capabilities: Path | None, host_name: str | None,
         ovs_db: str | None, fmt: str, **kw: Any) -> None:
    """Validate the tables, then load them into a registry database in one transaction.

    New modes are added, identical ones left alone; a loaded name whose contents
    differ is refused and nothing is written."""
    from vucompat.core.contracts import stamp
    from vucompat.ovsdb.connection import Connection
    from vucompat.ovsdb.load import LOAD_COLUMNS, load as load_tables
    from vucompat.core.tables import read_capabilities

    registry = _modeset(tables)
    caps = read_capabilities(capabilities) if capabilities else None
    conn = _conn(kw)
    with Connection(db, tables=LOAD_COLUMNS, **conn) as connection:
        result = load_tables(connection, registry, prune=prune, capabilities=caps, host_name=host_name,
                             ovs_remote=ovs_db or db)
    def text() -> str:
        lines = [result.summary()]
        lines += [f"kept {name}: still used by port(s) {', '.join(ports)}"
                  for name, ports in result.plan.kept_in_use.items()]
        return "\n".join(lines)

    _emit(fmt, stamp("vucompat.load", result.as_dict()), text)


@main.command()
@click.argument("new_policy", metavar="[POLICY]", required=False)
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True, help="The host's registry database.")
@_connection_options
def policy(new_policy: str | None, db: str, **kw: Any) -> None:
    """Show or set the host's default policy: the mode of a port plugged with no
    options:vhost-compat whose iface-id has no mode on another host.

    POLICY: latest (the newest mode the host runs), recommended (latest without
    deprecated features), passthrough (no mode), pool (the newest mode every live
    host of the agent's --pool runs, from the fleet), or a mode name (pinned; it must
    be defined and runnable here). A refused policy changes nothing."""
    from vucompat.api import Client
    from vucompat.ovsdb.registry import read_default_policy

    conn = _conn(kw)
    with Client(**conn) as client:
        if new_policy is not None:
            client.set_default_policy(db, new_policy)
        name = client.host(db).name
    click.echo(f"{name}: default policy {read_default_policy(db, **conn) or 'latest (no Host row yet)'}")


@main.group()
def db() -> None:
    """Create, attach and upgrade the registry database."""


@db.command("create")
@click.argument("file", type=click.Path(path_type=Path))
def db_create(file: Path) -> None:
    """Create an empty registry database FILE (ovsdb-tool create)."""
    from vucompat.ovsdb.admin import create

    click.echo(f"created {file} (schema {create(file)})")


@db.command("attach")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--ctl", required=True, type=click.Path(path_type=Path),
              help="The control socket of the running ovsdb-server (its --unixctl).")
def db_attach(file: Path, ctl: Path) -> None:
    """Serve FILE from a running ovsdb-server, next to Open_vSwitch (ovsdb-server/add-db)."""
    from vucompat.ovsdb.admin import attach

    attach(file, ctl)
    click.echo(f"{ctl}: now serving {file}")


@db.command("upgrade")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--db", "remote", metavar="REMOTE", help="Convert the database a running server holds, online.")
@_connection_options
def db_upgrade(file: Path | None, remote: str | None, **kw: Any) -> None:
    """Convert a registry database to this vucompat's schema, keeping its rows.

    Give FILE for a database no server holds, or --db REMOTE for a served one."""
    from vucompat.ovsdb.admin import upgrade

    conn = _conn(kw)
    if conn["ssl"] is not None:
        from vucompat.ovsdb.tls import configure_ssl

        configure_ssl(conn["ssl"])
    click.echo(upgrade(file=file, remote=remote, timeout=conn["timeout"]).summary())
