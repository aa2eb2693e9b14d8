"""Commands on ports and the backend: agent, port list/show, probe, dump."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from vucompat.core.errors import UsageError
from vucompat.cli import _FORMAT, _conn, _connection_options, _emit, main


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
@click.option("--ovs-sock-dir-mode", metavar="MODE|keep", default="0750", show_default=True,
              help="With enforcement: the permission bits the agent leaves on the directory where "
                   "ovs-vswitchd serves dpdkvhostuser sockets (<ovs-rundir>/<vhost-sock-dir>), so that "
                   "frontends reach them only through their relays; it only takes bits away. keep: leave it.")
@click.option("--relay-group", metavar="GROUP",
              help="The group of the relays' sockets (and of a relay directory the agent creates): e.g. QEMU's "
                   "group. Default: the agent's group.")
@click.option("--relay-socket-mode", metavar="MODE",
              help="The mode of the relays' sockets, whatever the agent's umask. Default: 0666 (any frontend "
                   "user), or 0660 with --relay-group.")
@click.option("--relay-process", type=click.Choice(["spawn", "external"]), default="spawn", show_default=True,
              envvar="VUCOMPAT_RELAY_PROCESS",
              help="Where the relays run: a `vucompat relay serve` process on <relay-dir>/relayd.ctl, which "
                   "outlives the agent (VMs keep their links while it restarts). spawn: the agent starts it when "
                   "none answers (and again if it dies); external: a service manager runs it "
                   "(contrib/vucompat-relay.service). Env: VUCOMPAT_RELAY_PROCESS.")
@click.option("--fleet", metavar="REMOTES", envvar="VUCOMPAT_FLEET",
              help="Publish this host into the fleet cluster (comma-separated ssl: remotes of its agent "
                   "listener; the --ssl-* files are this host's identity: its certificate's CN must be the "
                   "host's name). Env: VUCOMPAT_FLEET.")
@click.option("--fleet-name", metavar="NAME", help="This host's name in the fleet (default: its Host row's name).")
@click.option("--pool", help="The host's pool (an aggregate, a rack, a cell) in the fleet.")
@click.option("--heartbeat", type=click.IntRange(min=1, max=86400), default=60, show_default=True,
              help="Seconds between the fleet's last_seen refreshes; stale after 3 missed.")
@click.option("--incoming-ttl", type=click.FloatRange(min=1), default=86400, show_default=True,
              help="Seconds an expected port (`vucompat port expect`) waits to be plugged; then its record is "
                   "dropped, so that a migration that never came decides nothing later.")
@_connection_options
def agent(db: str, ovs_db: str | None, log_file: Path | None, verbose: int, enforcement: str, relay_dir: Path,
          ovs_rundir: Path, ovs_sock_dir_mode: str, relay_group: str | None, relay_socket_mode: str | None,
          relay_process: str, fleet: str | None, fleet_name: str | None, pool: str | None, heartbeat: int,
          incoming_ttl: float, **kw: Any) -> None:
    """Run the port agent in the foreground: resolve each vhost-user port's
    options:vhost-compat once, record it (Port row, Interface external_ids) and
    verify what its frontend negotiated. Stops on SIGTERM or SIGINT."""
    import logging

    from vucompat.agent.loop import Agent
    from vucompat.agent.relayd import spawn_command

    try:
        sock_dir_mode = None if ovs_sock_dir_mode == "keep" else parse_mode(ovs_sock_dir_mode)
        access = _relay_access(relay_group, relay_socket_mode)
    except ValueError as err:
        raise UsageError(message=str(err)) from None
    if sock_dir_mode is not None and sock_dir_mode & 0o700 != 0o700:
        raise UsageError(message=f"--ovs-sock-dir-mode {ovs_sock_dir_mode}: ovs-vswitchd, the directory's owner, "
                                 "needs rwx on it to create its sockets (e.g. 0750 or 0700)")
    logging.basicConfig(filename=str(log_file) if log_file else None,
                        level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    relay_log = log_file.with_name("vucompat-relay.log") if log_file else None
    Agent(db=db, ovs_db=ovs_db, enforce=enforcement == "relay", relay_dir=relay_dir, ovs_rundir=ovs_rundir,
          ovs_sock_dir_mode=sock_dir_mode, relay_access=access,
          relay_process=relay_process, relay_spawn=spawn_command(relay_dir, access, relay_log),
          fleet=fleet, fleet_name=fleet_name, pool=pool, heartbeat=heartbeat, incoming_ttl=incoming_ttl,
          **_conn(kw)).run()


def parse_mode(text: str) -> int:
    from vucompat.agent.guard import parse_mode as parse

    return parse(text)


def _relay_access(group: str | None, socket_mode: str | None) -> Any:
    """The RelayAccess of --relay-group and --relay-socket-mode. Raises ValueError."""
    from vucompat.agent.guard import RelayAccess, parse_group

    return RelayAccess(parse_group(group) if group else None, parse_mode(socket_mode) if socket_mode else None)


_RELAY_DIR = click.option("--relay-dir", type=click.Path(path_type=Path), default="/var/run/vucompat",
                          show_default=True, help="Where the relays' sockets live (and relayd.ctl, the relay "
                                                  "process's control socket).")


@main.group()
def relay() -> None:
    """The relay process: the masking relays, in a process that outlives the agent."""


@relay.command("serve")
@_RELAY_DIR
@click.option("--relay-group", metavar="GROUP", help="The group of the relays' sockets (see `vucompat agent`).")
@click.option("--relay-socket-mode", metavar="MODE", help="The mode of the relays' sockets (see `vucompat agent`).")
@click.option("--max-per-port", type=click.IntRange(min=1, max=1024), default=4, show_default=True,
              help="Connections at once on one port's relay; more are accepted and closed at once.")
@click.option("--log-file", type=click.Path(path_type=Path), help="Log here instead of to stderr.")
@click.option("-v", "--verbose", count=True, help="More detail in the log.")
@click.option("--resume-fd", type=int, hidden=True, help="(internal) the state an in-place upgrade hands over.")
def relay_serve(relay_dir: Path, relay_group: str | None, relay_socket_mode: str | None, max_per_port: int,
                log_file: Path | None, verbose: int, resume_fd: int | None) -> None:
    """Serve the relays the agent names, until SIGTERM (which closes them). SIGHUP, or
    `vucompat relay upgrade`, re-executes the installed program in place, handing
    every connection over: no frontend or OVS sees a disconnect. After a crash it
    serves the relays it saved at once; their connections reconnect."""
    import logging
    import sys

    from vucompat.agent.relayd import RelayDaemon, RelayDaemonError

    try:
        access = _relay_access(relay_group, relay_socket_mode)
    except ValueError as err:
        raise UsageError(message=str(err)) from None
    logging.basicConfig(filename=str(log_file) if log_file else None,
                        level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    argv = list(sys.argv[1:])
    if "--resume-fd" in argv:  # (an upgraded process: the next upgrade gives its own)
        at = argv.index("--resume-fd")
        del argv[at:at + 2]
    try:
        RelayDaemon(relay_dir, access, max_per_port, argv=argv, resume_fd=resume_fd).run()
    except RelayDaemonError as err:
        raise UsageError(message=str(err)) from None


def _relay_request(relay_dir: Path, op: str) -> dict[str, Any]:
    from vucompat.agent.relayd import CONTROL_NAME, request

    control = relay_dir / CONTROL_NAME
    try:
        return request(control, op)
    except (OSError, ValueError) as err:
        raise UsageError(message=f"no relay process answers on {control} ({err}): is `vucompat relay serve` "
                                 "(or the agent, which starts it) running with this --relay-dir?") from None


@relay.command("status")
@_RELAY_DIR
@_FORMAT
def relay_status(relay_dir: Path, fmt: str) -> None:
    """The relay process: pid, version, upgrades in place, relays, connections, open files."""
    from vucompat.core.contracts import stamp

    data = _relay_request(relay_dir, "status")
    data.pop("ok", None)
    _emit(fmt, stamp("vucompat.relay-status", data),
          lambda: "\n".join(f"{key}: {value}" for key, value in data.items()))


@relay.command("upgrade")
@_RELAY_DIR
def relay_upgrade(relay_dir: Path) -> None:
    """Re-execute the relay process's program in place (after a package upgrade),
    keeping every connection. Returns once the new program answers."""
    import time

    before = _relay_request(relay_dir, "status")
    _relay_request(relay_dir, "upgrade")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            after = _relay_request(relay_dir, "status")
        except UsageError:
            continue
        if after["generation"] > before["generation"]:
            click.echo(f"relay process {after['pid']} upgraded in place: version {before['version']} -> "
                       f"{after['version']}, {after['ports']} relay(s), {after['connections']} connection(s) kept")
            return
    raise UsageError(message="the relay process did not come back upgraded within 30 s: see its log")


@main.group()
def port() -> None:
    """The ports the agent has resolved."""


def _port_data(view: Any) -> dict[str, Any]:
    from vucompat.agent.plan import describe_negotiated
    from vucompat.core.resolve import parse_status, verify

    negotiated = parse_status(view.negotiated) if view.negotiated else None
    verdict = verify(view.mode, negotiated) if negotiated and view.mode else None
    return {"interface": view.name, "requested": view.requested, "rule": view.rule, "rule_detail": view.rule_detail,
            "iface_id": view.iface_id, "resolved": view.resolved,
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
    from vucompat.cli import render
    from vucompat.ovsdb.ports import read_registry_ports

    ports = read_registry_ports(db, **_conn(kw))
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
    from vucompat.core.contracts import stamp
    from vucompat.cli import render
    from vucompat.ovsdb.ports import read_registry_ports

    ports = read_registry_ports(db, **_conn(kw))
    if interface not in ports:
        raise UsageError(message=f"no port {interface} in the registry at {db}: `vucompat port list` shows "
                         f"the {len(ports)} there are (is the agent running?)")
    data = stamp("vucompat.port", _port_data(ports[interface]))
    _emit(fmt, data, lambda: render.port_text(data))


@port.command("expect")
@click.argument("iface_id")
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True,
              help="The destination's registry: where the port will be plugged.")
@click.option("--source", metavar="REMOTE", help="The source's registry, where the port of IFACE_ID is live.")
@click.option("--cancel", is_flag=True, help="Forget the expectation (an aborted migration).")
@_connection_options
def port_expect(iface_id: str, db: str, source: str | None, cancel: bool, **kw: Any) -> None:
    """Before a live migration: tell the destination (--db) that the port of Neutron
    port IFACE_ID, live on --source, will be plugged there; its agent gives that port
    the source port's mode, however it is plugged (unmodified os-vif included).
    Refused, recording nothing, when the destination cannot run that mode. Not needed
    when the agents publish to a fleet: they find the source there."""
    from vucompat.api import Client

    with Client(**_conn(kw)) as client:
        if cancel:
            found = client.cancel_expected_port(iface_id, db)
            click.echo(f"{iface_id}: " + ("expectation forgotten" if found else "nothing was expected"))
            return
        if source is None:
            raise UsageError(message="give --source REMOTE (the registry of the host the port moves from), or --cancel")
        expected = client.expect_port(iface_id, source, db)
    click.echo(f"{iface_id}: the port plugged at {db} will take {expected.mode} from {expected.where}")


def _probe_offers(db: str, bridge: str | None, socket_path: Path | None, ovs_rundir: Path | None,
                  timeout: float):  # -> ({port type: Offer}, info, versions)
    from vucompat.core.mode import SERVER_TYPE
    from vucompat.ovsdb.vswitch import read_switch
    from vucompat.ovsdb.ports import sock_dir_of
    from vucompat.vhostuser.probe import probe_record, probe_socket, probe_types

    versions, other_config, netdev = read_switch(db, timeout)
    if socket_path is not None:
        offers = {SERVER_TYPE: probe_socket(socket_path, timeout)}
    else:
        bridge = bridge or (netdev[0] if netdev else None)
        if bridge is None:
            raise UsageError(message=f"{db} has no netdev bridge to add a probe port to: give --bridge, or "
                             "--socket PATH of a dpdkvhostuser port")
        sock_dir = sock_dir_of(ovs_rundir, other_config) if ovs_rundir else None
        offers = probe_types(db, bridge, sock_dir if sock_dir and sock_dir.is_dir() else None,
                             timeout=max(timeout, 10.0))
    return offers, probe_record(versions, other_config), versions


_PROBE_TARGET = [
    click.option("--bridge", help="Add the short-lived probe ports to this bridge (default: the first netdev bridge)."),
    click.option("--socket", "socket_path", type=click.Path(path_type=Path),
                 help="Probe this backend socket instead (a dpdkvhostuser port's socket)."),
    click.option("--ovs-rundir", type=click.Path(path_type=Path), envvar="OVS_RUNDIR",
                 default="/var/run/openvswitch", show_default=True,
                 help="ovs-vswitchd's run directory: with it, a short-lived dpdkvhostuser port is probed too "
                      "(from OVS 3.2 the port types offer different features)."),
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
def probe(db: str, bridge: str | None, socket_path: Path | None, ovs_rundir: Path | None, fmt: str,
          **kw: Any) -> None:
    """Ask the live backend what it offers (GET_FEATURES, GET_PROTOCOL_FEATURES,
    GET_QUEUE_NUM), on a client and a server port, and record it in the Host row:
    every mode is then runnable or not, per port type."""
    from vucompat.core.contracts import stamp
    from vucompat.core import catalog
    from vucompat.ovsdb.connection import Connection
    from vucompat.ovsdb.registry import record_probe
    from vucompat.vhostuser.probe import capabilities_of

    conn = _conn(kw)
    offers, info, versions = _probe_offers(db, bridge, socket_path, ovs_rundir, conn["timeout"])
    capabilities = capabilities_of(offers)
    with Connection(db, **conn) as registry:
        record_probe(registry, capabilities, info, versions=versions)
    abi = capabilities.abi

    def masks(virtio: int, protocol: int, pairs: int) -> dict[str, Any]:
        return {"virtio_features": catalog.mask_to_names(virtio, "virtio"), "virtio_mask": catalog.to_hex(virtio),
                "protocol_features": catalog.mask_to_names(protocol, "protocol"),
                "protocol_mask": catalog.to_hex(protocol), "max_queue_pairs": pairs}

    data = stamp("vucompat.probe", {
        **masks(abi.virtio, abi.protocol, abi.max_queue_pairs),
        "by_type": {t: masks(o.virtio, o.protocol, o.queue_pairs) for t, o in offers.items()}, **versions, **info})
    lines = [f"probed {db}: " + "; ".join(f"{t} ports virtio {catalog.to_hex(o.virtio)}, protocol "
                                          f"{catalog.to_hex(o.protocol)}, {o.queue_pairs} queue pairs"
                                          for t, o in offers.items()) + "; recorded in the Host row",
             "`vucompat list --host " + db + "` shows which modes it can run"]
    _emit(fmt, data, lambda: "\n".join(lines))


@main.command()
@click.option("--db", metavar="REMOTE", envvar="VUCOMPAT_DB", required=True,
              help="The server of the Open_vSwitch database.")
@_probe_target
@click.option("--version", "version", default="NEW", show_default=True, help="The version to write in the entry.")
@_connection_options
@click.option("--port-type", type=click.Choice(["dpdkvhostuser", "dpdkvhostuserclient"]),
              help="Dump this port type's offer (default: a client port's; with --socket, the server port's).")
def dump(db: str, bridge: str | None, socket_path: Path | None, ovs_rundir: Path | None, version: str,
         port_type: str | None, **kw: Any) -> None:
    """Print what the live backend offers as a ready-to-paste [[mode]] table entry."""
    from vucompat.vhostuser.probe import dump_entry

    conn = _conn(kw)
    offers, _info, versions = _probe_offers(db, bridge, socket_path, ovs_rundir if port_type != "dpdkvhostuserclient"
                                            else None, conn["timeout"])
    chosen = port_type or next(iter(offers))
    if chosen not in offers:
        raise UsageError(message=f"no {chosen} port could be probed: give --ovs-rundir (where ovs-vswitchd "
                         "serves its vhost-user sockets)")
    offer = offers[chosen]
    provenance = {"ovs": versions.get("ovs_version", "unknown")}
    if versions.get("dpdk_version"):
        provenance["dpdk"] = versions["dpdk_version"].removeprefix("DPDK ")
    if len(offers) > 1 or port_type:
        provenance["port_type"] = chosen
    click.echo(dump_entry(offer, version, provenance), nl=False)
