"""The `vucompat` command line: a thin shell around the core.

Exit codes: 0 success or a positive verdict; 1 a negative verdict (incompatible,
no common mode, lint findings); 2 bad input or usage. Errors a user can cause are
printed as one message on stderr, never as a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import click

from .errors import UsageError, VucompatError

_FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                       show_default=True, help="text for people, json for programs (docs/cli.md).")
_TABLES = click.option("--tables", "tables", multiple=True, type=click.Path(path_type=Path),
                       help="A directory of table files, searched first (repeatable); then "
                            "$VUCOMPAT_TABLES, /etc/vucompat/compat_tables.d/, the shipped tables.")


class _Group(click.Group):
    """Turns a VucompatError into one message on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VucompatError as err:
            click.secho(f"error: {err}", err=True, fg="red")
            ctx.exit(2)


def _emit(fmt: str, data: Any, text: Callable[[], str]) -> None:
    if fmt == "json":
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
        from .ovsdb.rpc import SslOptions

        ssl = SslOptions(key, cert, ca)
    return {"timeout": kw.pop("timeout"), "ssl": ssl}


def _registry(tables: tuple[Path, ...], db: str | None = None, conn: dict[str, Any] | None = None):  # -> Registry
    if db:
        from .hosts import REMOTE_PREFIXES, open_host

        if not db.startswith(REMOTE_PREFIXES):
            raise UsageError(message=f"--db {db}: give an OVSDB remote, e.g. unix:/run/vucompat/db.sock")
        return open_host(db, **(conn or {})).registry
    from .tables import load_registry, search_path

    return load_registry(search_path(tables, os.environ))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vucompat")
def main() -> None:
    """vhost-user compatibility modes for Open vSwitch ports: compat tables,
    compare, baseline and negotiation between hosts."""


@main.command()
@click.option("--decode", metavar="HEX", help="Print the feature names of a mask, e.g. 0xd7c66a7ca.")
@click.option("--mask", type=click.Choice(["virtio", "protocol"]), default="virtio", show_default=True,
              help="Which mask --decode reads.")
@_FORMAT
def features(decode: str | None, mask: str, fmt: str) -> None:
    """List the feature catalog (or decode a mask into names)."""
    from . import catalog, render

    if decode is not None:
        try:
            value = catalog.parse_hex(decode)
        except ValueError as err:
            raise UsageError(message=f"--decode: {err}") from None
        names = catalog.mask_to_names(value, mask)  # type: ignore[arg-type]
        _emit(fmt, {"mask": mask, "hex": catalog.to_hex(value), "features": names}, lambda: "\n".join(names))
        return
    data = [{"name": f.name, "bit": f.bit, "mask": f.mask, "summary": f.summary,
             "requires": [list(g) for g in f.requires], "requirement_breaks_guest": f.requirement_breaks_guest,
             "host_dependent": f.host_dependent, "deprecated": f.deprecated, "guest_abi": f.guest_abi,
             "aliases": list(f.aliases)} for f in catalog.FEATURES]
    _emit(fmt, data, render.feature_table)


@main.command("list")
@_TABLES
@_DB
@click.option("--host", metavar="HOST",
              help="List this host's modes, with whether its backend can run each: a host directory "
                   "or the OVSDB remote of its registry.")
@_connection_options
@_FORMAT
def list_(tables: tuple[Path, ...], db: str | None, host: str | None, fmt: str, **kw: Any) -> None:
    """List the modes, newest first."""
    from . import render
    from .compare import runnable
    from .hosts import open_host

    conn = _conn(kw)
    loaded = open_host(host, **conn) if host else None
    registry = loaded.registry if loaded else _registry(tables, db, conn)
    caps = loaded.capabilities.abi if loaded and loaded.capabilities else None
    rows, data = [], []
    for mode in registry.newest_first:
        verdict = runnable(mode.abi, caps) if loaded else None
        item: dict[str, Any] = {"name": mode.name, "lineage": mode.lineage, "version": mode.version,
                                "released": mode.released.isoformat() if mode.released else None,
                                "digest": mode.digest}
        if verdict is not None:
            item.update(verdict.as_dict())
        data.append(item)
        rows.append([mode.name, item["released"] or "-", render.short_digest(mode.digest)]
                    + ([render.runnable_cell(verdict)] if loaded else []))
    header = ["NAME", "RELEASED", "DIGEST"] + (["RUNNABLE"] if loaded else [])
    _emit(fmt, data, lambda: render.table(rows, header))


@main.command()
@click.argument("mode")
@_TABLES
@_DB
@click.option("--hex", "hex_masks", is_flag=True, help="Also print the masks in hex.")
@_connection_options
@_FORMAT
def show(mode: str, tables: tuple[Path, ...], db: str | None, hex_masks: bool, fmt: str, **kw: Any) -> None:
    """Show one mode, expanded (MODE+recommended: without deprecated features)."""
    from . import catalog, render

    expanded = _registry(tables, db, _conn(kw)).expand(mode)
    data = expanded.as_dict()
    if hex_masks:
        data.update(virtio_mask=catalog.to_hex(expanded.abi.virtio), protocol_mask=catalog.to_hex(expanded.abi.protocol))
    _emit(fmt, data, lambda: render.mode_text(expanded, hex_masks))


@main.command()
@click.argument("a")
@click.argument("b")
@_TABLES
@_DB
@_connection_options
@_FORMAT
def compare(a: str, b: str, tables: tuple[Path, ...], db: str | None, fmt: str, **kw: Any) -> None:
    """Compare mode A with mode B: identical, superset, subset or incompatible.

    Exit 1 when incompatible."""
    from . import render
    from .compare import compare as compare_abis

    registry = _registry(tables, db, _conn(kw))
    result = compare_abis(registry.expand(a).abi, registry.expand(b).abi)
    _emit(fmt, {"a": a, "b": b, **result.as_dict()}, lambda: render.comparison_text(a, b, result))
    if result.result == "incompatible":
        raise SystemExit(1)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@_TABLES
@_DB
@_connection_options
@_FORMAT
def baseline(inputs: tuple[str, ...], tables: tuple[Path, ...], db: str | None, fmt: str, **kw: Any) -> None:
    """The greatest configuration that every input can run.

    Each input is a mode name or a capabilities file (a path ending in .toml).
    Deprecated features are left out."""
    from . import render
    from .compare import baseline as baseline_of
    from .tables import read_capabilities

    conn = _conn(kw)
    registry = None
    abis = []
    for item in inputs:
        if item.endswith(".toml"):
            abis.append(read_capabilities(Path(item)).abi)
        else:
            registry = registry or _registry(tables, db, conn)
            abis.append(registry.expand(item).abi)
    result = baseline_of(abis, inputs)
    _emit(fmt, result.as_dict(), lambda: render.mode_text(result))


@main.command()
@click.option("--source", required=True, metavar="HOST",
              help="The source host: the OVSDB remote of its registry, or a directory of table files "
                   "(+ optional capabilities.toml).")
@click.option("--dest", required=True, metavar="HOST", help="The destination host, likewise.")
@click.option("--policy", default="latest", show_default=True,
              help="latest, recommended (latest minus deprecated features) or a mode name.")
@_connection_options
@_FORMAT
def negotiate(source: str, dest: str, policy: str, fmt: str, **kw: Any) -> None:
    """The newest mode both hosts define with the same digest and can run.

    Exit 1 when there is none; the candidates say why."""
    from . import render
    from .hosts import open_host
    from .negotiate import negotiate as negotiate_hosts

    conn = _conn(kw)
    result = negotiate_hosts(open_host(source, **conn), open_host(dest, **conn), policy)
    _emit(fmt, result.as_dict(), lambda: render.negotiation_text(result))
    if result.mode is None:
        raise SystemExit(1)


@main.command()
@click.argument("dirs", nargs=-1, type=click.Path(path_type=Path))
@_TABLES
@click.option("--strict", is_flag=True, help="Warnings fail the lint too.")
@click.option("--update-lock", is_flag=True,
              help="Release: add the modes not yet in each DIR's released.lock (never changes an entry).")
@_FORMAT
def lint(dirs: tuple[Path, ...], tables: tuple[Path, ...], strict: bool, update_lock: bool, fmt: str) -> None:
    """Check table directories (default: the search path) and their released.lock.

    Exit 1 on errors (and on warnings with --strict)."""
    from . import render
    from .lint import lint as lint_dirs, update_lock as add_to_lock
    from .tables import search_path

    for directory in dirs:
        if not directory.is_dir():
            raise UsageError(message=f"{directory} is not a directory of table files")
    targets = list(dirs) or search_path(tables, os.environ)
    if update_lock:
        if not dirs:
            raise UsageError(message="--update-lock needs the directory to release, e.g. compat_tables/")
        added = {str(d): add_to_lock(d) for d in targets}
        _emit(fmt, {"added": added}, lambda: "\n".join(
            f"{d}: added {', '.join(names) or 'nothing'} to released.lock" for d, names in added.items()))
        return
    report = lint_dirs(targets)
    _emit(fmt, {"ok": not report.failed(strict), **report.as_dict()}, lambda: render.lint_text(report, strict))
    if report.failed(strict):
        raise SystemExit(1)


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
    from .ovsdb.connection import Connection
    from .ovsdb.load import LOAD_COLUMNS, load as load_tables
    from .tables import read_capabilities

    registry = _registry(tables)
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

    _emit(fmt, result.as_dict(), text)


@main.group()
def db() -> None:
    """Create, attach and upgrade the registry database."""


@db.command("create")
@click.argument("file", type=click.Path(path_type=Path))
def db_create(file: Path) -> None:
    """Create an empty registry database FILE (ovsdb-tool create)."""
    from .ovsdb.admin import create

    click.echo(f"created {file} (schema {create(file)})")


@db.command("attach")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--ctl", required=True, type=click.Path(path_type=Path),
              help="The control socket of the running ovsdb-server (its --unixctl).")
def db_attach(file: Path, ctl: Path) -> None:
    """Serve FILE from a running ovsdb-server, next to Open_vSwitch (ovsdb-server/add-db)."""
    from .ovsdb.admin import attach

    attach(file, ctl)
    click.echo(f"{ctl}: now serving {file}")


@db.command("upgrade")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--db", "remote", metavar="REMOTE", help="Convert the database a running server holds, online.")
@_connection_options
def db_upgrade(file: Path | None, remote: str | None, **kw: Any) -> None:
    """Convert a registry database to this vucompat's schema, keeping its rows.

    Give FILE for a database no server holds, or --db REMOTE for a served one."""
    from .ovsdb.admin import upgrade

    conn = _conn(kw)
    if conn["ssl"] is not None:
        from .ovsdb.rpc import configure_ssl

        configure_ssl(conn["ssl"])
    click.echo(upgrade(file=file, remote=remote, timeout=conn["timeout"]).summary())


@main.command()
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True,
              help="The registry database (usually the same server as Open_vSwitch).")
@click.option("--ovs-db", metavar="REMOTE", help="Where the Open_vSwitch database is served (default: --db).")
@click.option("--log-file", type=click.Path(path_type=Path), help="Log here instead of to stderr.")
@click.option("-v", "--verbose", count=True, help="More detail in the log (-v: each mirror write).")
@click.option("--enforcement", type=click.Choice(["relay", "off"]), default="relay", show_default=True,
              envvar="VUCOMPAT_ENFORCEMENT",
              help="relay: a masking relay on each port's vhost-user socket; off: record and verify only "
                   "(for a backend that masks natively). Env: VUCOMPAT_ENFORCEMENT.")
@click.option("--relay-dir", type=click.Path(path_type=Path), default="/var/run/vucompat", show_default=True,
              help="Where the relays' sockets live.")
@click.option("--ovs-rundir", type=click.Path(path_type=Path), envvar="OVS_RUNDIR", default="/var/run/openvswitch",
              show_default=True, help="ovs-vswitchd's run directory (dpdkvhostuser sockets are under it).")
@_connection_options
def agent(db: str, ovs_db: str | None, log_file: Path | None, verbose: int, enforcement: str, relay_dir: Path,
          ovs_rundir: Path, **kw: Any) -> None:
    """Run the port agent in the foreground: resolve each vhost-user port's
    options:vhost-compat once, record it (Port row, Interface external_ids) and
    verify what its frontend negotiated. Stops on SIGTERM or SIGINT."""
    import logging

    from .agent import Agent

    logging.basicConfig(filename=str(log_file) if log_file else None,
                        level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Agent(db=db, ovs_db=ovs_db, enforce=enforcement == "relay", relay_dir=relay_dir, ovs_rundir=ovs_rundir,
          **_conn(kw)).run()


@main.group()
def port() -> None:
    """The ports the agent has resolved."""


def _port_data(view: Any) -> dict[str, Any]:
    from .reconcile import describe_negotiated
    from .resolve import parse_status, verify

    negotiated = parse_status(view.negotiated) if view.negotiated else None
    verdict = verify(view.mode, negotiated) if negotiated and view.mode else None
    return {"interface": view.name, "requested": view.requested, "resolved": view.resolved,
            "digest": view.mode.digest if view.mode else None, "state": view.state, "error": view.error,
            "negotiated_features": describe_negotiated(view.negotiated_features),
            "negotiated": dict(view.negotiated), "verification": view.verification,
            "offending": verdict.as_dict()["offending"] if verdict else [],
            "relay_socket": view.relay_socket, "frontend_socket": view.frontend_socket, "violation": view.violation}


@port.command("list")
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True, help="The registry database.")
@_connection_options
@_FORMAT
def port_list(db: str, fmt: str, **kw: Any) -> None:
    """Every port with a mode: requested, resolved, state."""
    from . import render
    from .ovsdb.ports import load_ports

    ports = load_ports(db, **_conn(kw))
    data = [_port_data(view) for _name, view in sorted(ports.items())]
    rows = [[d["interface"], d["requested"], d["resolved"] or "-", render.state_cell(d["state"]),
             (d["error"] or "")[:100]] for d in data]
    _emit(fmt, data, lambda: render.table(rows, ["INTERFACE", "REQUESTED", "RESOLVED", "STATE", "ERROR"]))


@port.command("show")
@click.argument("interface")
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True, help="The registry database.")
@_connection_options
@_FORMAT
def port_show(interface: str, db: str, fmt: str, **kw: Any) -> None:
    """One port: request, resolved mode, state, error, negotiated features and the
    verdict of the last verification."""
    from . import render
    from .ovsdb.ports import load_ports

    ports = load_ports(db, **_conn(kw))
    if interface not in ports:
        raise UsageError(message=f"no port {interface} in the registry at {db}: `vucompat port list` shows "
                         f"the {len(ports)} there are (is the agent running?)")
    data = _port_data(ports[interface])
    _emit(fmt, data, lambda: render.port_text(data))


def _probe_offer(db: str, bridge: str | None, socket_path: Path | None, timeout: float):  # -> (Offer, info)
    from .ovsdb.load import read_switch
    from .probe import SETTINGS, probe_bridge, probe_socket, settings_fingerprint

    versions, other_config, netdev = read_switch(db, timeout)
    if socket_path is not None:
        offer = probe_socket(socket_path, timeout)
    else:
        bridge = bridge or (netdev[0] if netdev else None)
        if bridge is None:
            raise UsageError(message=f"{db} has no netdev bridge to add a probe port to: give --bridge, or "
                             "--socket PATH of a dpdkvhostuser port")
        offer = probe_bridge(db, bridge, timeout=max(timeout, 10.0))
    info = {f"probe-{k}": other_config.get(k, "") for k in SETTINGS}
    info["probe-fingerprint"] = settings_fingerprint(versions.get("ovs_version"), versions.get("dpdk_version"),
                                                     other_config)
    return offer, info, versions


_PROBE_TARGET = [
    click.option("--bridge", help="Add the short-lived probe port to this bridge (default: the first netdev bridge)."),
    click.option("--socket", "socket_path", type=click.Path(path_type=Path),
                 help="Probe this backend socket instead (a dpdkvhostuser port's socket)."),
]


def _probe_target(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_PROBE_TARGET):
        f = option(f)
    return f


@main.command()
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True,
              help="The server of the registry and of Open_vSwitch.")
@_probe_target
@_connection_options
@_FORMAT
def probe(db: str, bridge: str | None, socket_path: Path | None, fmt: str, **kw: Any) -> None:
    """Ask the live backend what it offers (GET_FEATURES, GET_PROTOCOL_FEATURES,
    GET_QUEUE_NUM) and record it in the Host row: every mode is then runnable or not."""
    from . import catalog
    from .mode import Capabilities
    from .ovsdb.connection import Connection
    from .ovsdb.load import record_probe

    conn = _conn(kw)
    offer, info, versions = _probe_offer(db, bridge, socket_path, conn["timeout"])
    with Connection(db, **conn) as registry:
        record_probe(registry, Capabilities(offer.abi(), source="probe"), info, versions=versions)
    data = {"virtio_features": catalog.mask_to_names(offer.virtio, "virtio"), "virtio_mask": catalog.to_hex(offer.virtio),
            "protocol_features": catalog.mask_to_names(offer.protocol, "protocol"),
            "protocol_mask": catalog.to_hex(offer.protocol), "max_queue_pairs": offer.queue_pairs, **versions, **info}
    _emit(fmt, data, lambda: "\n".join([f"probed {db}: virtio {data['virtio_mask']}, protocol {data['protocol_mask']}, "
                                         f"{offer.queue_pairs} queue pairs; recorded in the Host row",
                                         "`vucompat list --host " + db + "` shows which modes it can run"]))


@main.command()
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True,
              help="The server of the Open_vSwitch database.")
@_probe_target
@click.option("--version", "version", default="NEW", show_default=True, help="The version to write in the entry.")
@_connection_options
def dump(db: str, bridge: str | None, socket_path: Path | None, version: str, **kw: Any) -> None:
    """Print what the live backend offers as a ready-to-paste [[mode]] table entry."""
    from .probe import dump_entry

    conn = _conn(kw)
    offer, _info, versions = _probe_offer(db, bridge, socket_path, conn["timeout"])
    provenance = {"ovs": versions.get("ovs_version", "unknown")}
    if versions.get("dpdk_version"):
        provenance["dpdk"] = versions["dpdk_version"].removeprefix("DPDK ")
    click.echo(dump_entry(offer, version, provenance), nl=False)
