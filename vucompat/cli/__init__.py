"""The `vucompat` command line: a thin shell around the core.

Exit codes: 0 success or a positive verdict; 1 a negative verdict (incompatible,
no common mode, lint findings); 2 bad input or usage; 3 a fleet query answered from
a copy that may be stale (docs/fleet.md, "Honest reads"). Errors a user can cause are
printed as one message on stderr, never as a traceback.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

import click

from vucompat.core.errors import UsageError, VucompatError

_FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                       show_default=True, help="text for people, json for programs (docs/cli.md).")
_TABLES = click.option("--tables", "tables", multiple=True, type=click.Path(path_type=Path),
                       help="A directory of table files, searched first (repeatable); then "
                            "$VUCOMPAT_TABLES, /etc/vucompat/compat_tables.d/, the shipped tables.")


#: each top-level command's module under vucompat.cli, imported only when the command
#: is looked up (it runs, or --help lists it): a start-up pays for one module, not all
#: (tests/test_cli.py checks this table against what the modules register)
COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(["features", "list", "show", "compare", "baseline", "negotiate", "lint", "frontend-args"],
                    "cmd_modes"),
    **dict.fromkeys(["check-migration", "select-mode", "traits", "plan-upgrade"], "cmd_migration"),
    **dict.fromkeys(["agent", "relay", "port", "probe", "dump"], "cmd_ports"),
    **dict.fromkeys(["load", "db", "policy"], "cmd_registry"),
    "fleet": "cmd_fleet",
    "contracts": "cmd_contracts",
}


def load_all_commands() -> None:
    """Import every command module, so that `main.commands` holds every command."""
    for module in sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"vucompat.cli.{module}")


class _Group(click.Group):
    """The top-level group: commands are imported lazily (COMMAND_MODULES), and a
    VucompatError becomes one message on stderr and exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            if cmd_name in COMMAND_MODULES:
                importlib.import_module(f"vucompat.cli.{COMMAND_MODULES[cmd_name]}")
            else:
                load_all_commands()  # an unknown name: click suggests close names from self.commands
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VucompatError as err:
            click.secho(f"error: {err}", err=True, fg="red")
            ctx.exit(2)


def _emit(fmt: str, data: Any, text: Callable[[], str]) -> None:
    if fmt == "json":
        import json  # lazy: text output, the usual case at a terminal, does not need it

        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(text())


_DB = click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB",
                   help="Read the modes from this registry database (unix:PATH, tcp:IP:PORT, ssl:IP:PORT) "
                        "instead of table files. Env: VUCOMPAT_DB.")


def _connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--timeout and the SSL files, for every command that may talk to ovsdb-server."""
    for option in reversed([
        click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
                     help="Seconds to wait for an ovsdb-server before giving up (exit 2)."),
        click.option("--ssl-key", type=click.Path(exists=True), help="Private key for ssl: remotes."),
        click.option("--ssl-cert", type=click.Path(exists=True), help="Certificate for ssl: remotes."),
        click.option("--ssl-ca", type=click.Path(exists=True), help="CA certificate for ssl: remotes."),
    ]):
        f = option(f)
    return f


def _conn(kw: dict[str, Any]) -> dict[str, Any]:
    """{timeout, ssl} from the connection options; removes them from `kw`."""
    key, cert, ca = kw.pop("ssl_key"), kw.pop("ssl_cert"), kw.pop("ssl_ca")
    ssl = None
    if key or cert or ca:
        if not (key and cert and ca):
            raise UsageError(message="ssl: remotes need all of --ssl-key, --ssl-cert and --ssl-ca")
        from vucompat.ovsdb.tls import SslOptions

        ssl = SslOptions(key, cert, ca)
    return {"timeout": kw.pop("timeout"), "ssl": ssl}


def _modeset(tables: tuple[Path, ...], db: str | None = None, conn: dict[str, Any] | None = None):  # -> ModeSet
    if db:
        from vucompat.cli.hosts import REMOTE_PREFIXES, open_host

        if not db.startswith(REMOTE_PREFIXES):
            raise UsageError(message=f"--db {db}: give an OVSDB remote, e.g. unix:/run/vucompat/db.sock")
        return open_host(db, **(conn or {})).modeset
    from vucompat.core.tables import load_modeset, search_path

    return load_modeset(search_path(tables, os.environ))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vucompat")
def main() -> None:
    """vhost-user compatibility modes for Open vSwitch ports: compat tables,
    compare, baseline and negotiation between hosts."""
