"""`vucompat fleet ...`: the clustered fleet database of all hosts, for schedulers
(docs/fleet.md)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import click

from vucompat.cli import _FORMAT, _conn, _connection_options, main
from vucompat.cli import _emit as _emit_plain
from vucompat.cli.cmd_migration import check_options, print_verdict
from vucompat.core.errors import UsageError

#: the exit code of a query whose answer may be stale (docs/fleet.md, "Honest reads")
EXIT_STALE = 3
#: where a query's freshness waits for its output (the click context's meta)
_FRESHNESS = "vucompat.fleet.freshness"


def _FLEET(command: Callable[..., Any]) -> Callable[..., Any]:
    """--fleet and --allow-stale, for a query. Its answer says how fresh it is
    ("freshness" in JSON); one that may be stale (its server is not connected to its
    cluster, or is a relay not connected to its source, and no remote had better)
    also gets a warning on stderr, and exit code 3 unless --allow-stale."""
    @functools.wraps(command)
    def query(*args: Any, allow_stale: bool, **kw: Any) -> None:
        code: Any = 0
        stale = None
        try:
            command(*args, **kw)
        except SystemExit as done:
            code = done.code
        finally:  # also when it fails after reading: say that what it read may be stale
            freshness = click.get_current_context().meta.get(_FRESHNESS)
            if freshness is not None and freshness.stale_source:
                stale = freshness
                click.echo(freshness.warning() + ("" if allow_stale else " (exit 3; --allow-stale accepts it)"),
                           err=True)
        if stale is not None and not allow_stale and code in (0, 1, None):
            code = EXIT_STALE
        if code:
            raise SystemExit(code)

    query = click.option("--allow-stale", is_flag=True,
                         help="Exit as usual with an answer that may be stale (it is marked all the same).")(query)
    return click.option("--fleet", "remotes", metavar="REMOTES", envvar="VUCOMPAT_FLEET", required=True,
                        help="The fleet: comma-separated remotes of its relays or its servers' reader listener "
                             "(ssl:IP:PORT,...); any one answers. Env: VUCOMPAT_FLEET.")(query)


def _emit(fmt: str, data: Any, text: Callable[[], str]) -> None:
    """Print an answer; a query's JSON gets its `freshness`."""
    _emit_plain(fmt, {**data, **_freshness()} if isinstance(data, dict) else data, text)


def _freshness() -> dict[str, Any]:
    """{"freshness": ...} of this command's reads, or {} when it read nothing."""
    freshness = click.get_current_context().meta.get(_FRESHNESS)
    return {"freshness": freshness.as_dict()} if freshness is not None else {}


@main.group()
def fleet() -> None:
    """The fleet database: every host's modes and ports, on a 3- or 5-server OVSDB
    cluster, for schedulers (docs/fleet.md)."""


def _session(remotes: str, kw: dict[str, Any], reads: bool = True):  # -> Session
    from vucompat.ovsdb.session import Session
    from vucompat.ovsdb.schema import FLEET_DB

    return Session(remotes, FLEET_DB, **_conn(kw), check_source=reads)


def _with_session(remotes: str, kw: dict[str, Any], work: Callable[[Any], Any], reads: bool = True) -> Any:
    """work(a session); with `reads`, the session says how fresh its answers are
    (kept for _emit and _FLEET)."""
    session = _session(remotes, kw, reads)
    try:
        return work(session)
    finally:
        if session.freshness is not None:
            click.get_current_context().meta[_FRESHNESS] = session.freshness
        session.close()


# ---- the cluster ---------------------------------------------------------------------------------


@fleet.command("create-cluster")
@click.option("--db-file", required=True, type=click.Path(path_type=Path), help="The new database file.")
@click.option("--local", required=True, metavar="ADDR", help="This server's raft address: ssl:IP:PORT (e.g. 6644).")
def create_cluster(db_file: Path, local: str) -> None:
    """Create the first server of a new fleet cluster (ovsdb-tool create-cluster)."""
    from vucompat.ovsdb.cluster import create_cluster as create

    create(db_file, local)
    click.echo(f"created {db_file}: start it (vucompat fleet start), then join the others to {local}")


@fleet.command("join-cluster")
@click.option("--db-file", required=True, type=click.Path(path_type=Path), help="The new database file.")
@click.option("--local", required=True, metavar="ADDR", help="This server's raft address: ssl:IP:PORT.")
@click.option("--remote", "remotes", required=True, multiple=True, metavar="ADDR",
              help="The raft address of a member (repeatable).")
def join_cluster(db_file: Path, local: str, remotes: tuple[str, ...]) -> None:
    """Create a server's database file that joins the cluster at its first start
    (ovsdb-tool join-cluster)."""
    from vucompat.ovsdb.cluster import join_cluster as join

    join(db_file, local, remotes)
    click.echo(f"created {db_file}: it joins the cluster when started")


@fleet.command()
@click.option("--db-file", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--rundir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Where the admin socket (fleet.sock), control socket, pid and log go.")
@click.option("--ssl-key", type=click.Path(exists=True), help="The server's private key (listeners and raft).")
@click.option("--ssl-cert", type=click.Path(exists=True), help="The server's certificate.")
@click.option("--ssl-ca", type=click.Path(exists=True), help="The CA that signed every certificate.")
@click.option("--host-listener", "host_targets", multiple=True, metavar="TARGET",
              help="This server's own listener for agents, e.g. pssl:6650[:IP] (role vucompat-host). Repeatable.")
@click.option("--reader-listener", "reader_targets", multiple=True, metavar="TARGET",
              help="This server's own read-only listener for schedulers, e.g. pssl:6651[:IP]. Repeatable.")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False),
              help="The server's log (default: <rundir>/fleet.log).")
@click.option("--dry-run", is_flag=True, help="Print the ovsdb-server command line only.")
def start(db_file: Path, rundir: Path, ssl_key: str | None, ssl_cert: str | None, ssl_ca: str | None,
          host_targets: tuple[str, ...], reader_targets: tuple[str, ...], log_file: Path | None,
          dry_run: bool) -> None:
    """Start one fleet server (ovsdb-server, detached) with its own listeners
    (--host-listener, --reader-listener) and those the database configures for
    every server (vucompat fleet configure)."""
    import shlex
    import subprocess

    from vucompat.ovsdb.cluster import server_command
    from vucompat.ovsdb.fleet_config import check_listeners
    from vucompat.ovsdb.fleet_listeners import SERVER_DB_FILE, write_server_db
    from vucompat.ovsdb.tls import SslOptions

    files = (ssl_key, ssl_cert, ssl_ca)
    if any(files) and not all(files):
        raise UsageError(message="give all of --ssl-key, --ssl-cert and --ssl-ca, or none")
    check_listeners([*host_targets, *reader_targets], "--host-listener/--reader-listener")
    own = rundir.resolve() / SERVER_DB_FILE if host_targets or reader_targets else None
    command = server_command(db_file.resolve(), rundir.resolve(), SslOptions(*files) if all(files) else None,  # type: ignore[arg-type]
                             own, log_file.resolve() if log_file else None)
    if dry_run:
        click.echo(shlex.join(command))
        return
    running = _running_pid(rundir / "fleet.pid")
    if running is not None:
        raise UsageError(message=f"a fleet server already runs from {rundir} (pid {running}): stop it first "
                         f"(ovs-appctl -t {rundir / 'fleet.ctl'} exit)")
    rundir.mkdir(parents=True, exist_ok=True)
    if own is not None:
        write_server_db(own, host_targets, reader_targets)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(message=f"ovsdb-server did not start: {done.stderr.strip()}")
    click.echo(f"started: pid {(rundir / 'fleet.pid').read_text().strip()}, admin socket unix:{rundir / 'fleet.sock'}"
               + (f"; its listeners and the ports they bound: vucompat fleet status --ctl {rundir / 'fleet.ctl'}"
                  if own is not None else ""))


def _running_pid(pidfile: Path) -> int | None:
    """The pid in `pidfile` when that process runs, else None."""
    import os

    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@fleet.command()
@click.option("--ctl", required=True, type=click.Path(path_type=Path),
              help="The server's control socket (<rundir>/fleet.ctl).")
@_FORMAT
def status(ctl: Path, fmt: str) -> None:
    """This server's view of the cluster: role, term, leader, members
    (ovs-appctl cluster/status), and its listeners with the ports they bound."""
    from vucompat.core.contracts import stamp
    from vucompat.ovsdb.cluster import cluster_status
    from vucompat.ovsdb.fleet_listeners import describe, listeners

    found = {**cluster_status(ctl), "listeners": listeners(ctl)}
    _emit(fmt, stamp("vucompat.cluster-status", found), lambda: "\n".join(
        [f"{k}: {v}" for k, v in found.items() if k not in ("servers", "listeners")] + ["servers:"] +
        [f"  {s}" for s in found["servers"]] + ["listeners:"] + [f"  {describe(one)}" for one in found["listeners"]]))


@fleet.command("election-timer")
@click.option("--ctl", required=True, type=click.Path(path_type=Path),
              help="The leader's control socket (<rundir>/fleet.ctl).")
@click.argument("milliseconds", type=click.IntRange(100, 600_000))
def election_timer(ctl: Path, milliseconds: int) -> None:
    """Set the cluster's raft election timer (OVS's default: 1,000 ms), in committed
    steps of at most x2. A server that stays busy longer than it (composing a large
    fleet's first copy for a relay: ~0.7 s per 1,000 hosts) loses its leadership or,
    a follower, starts an election: docs/fleet.md, "Growing"."""
    from vucompat.ovsdb.cluster import change_election_timer

    steps = change_election_timer(ctl, milliseconds)
    click.echo(f"election timer: {milliseconds} ms" + (f" (set in steps: {', '.join(map(str, steps))})"
                                                      if len(steps) > 1 else "" if steps else " already"))


@fleet.command()
@click.option("--db", "admin", required=True, metavar="REMOTE",
              help="An admin remote of any member: its unix socket (<rundir>/fleet.sock).")
@click.option("--host-listener", "host_targets", multiple=True, metavar="TARGET",
              help="Where agents connect on every server, e.g. pssl:6650 (role vucompat-host: own rows only). "
                   "Repeatable. (Several servers on one machine: give each its own with fleet start.)")
@click.option("--reader-listener", "reader_targets", multiple=True, metavar="TARGET",
              help="Where schedulers connect on every server, e.g. pssl:6651 (read-only). Repeatable.")
@_connection_options
def configure(admin: str, host_targets: tuple[str, ...], reader_targets: tuple[str, ...], **kw: Any) -> None:
    """Set the RBAC roles of agents and schedulers, and the listeners every
    server of the cluster opens (replaces the previous ones)."""
    from vucompat.ovsdb.fleet_config import configure as apply

    apply(admin, host_targets, reader_targets, **_conn(kw))
    click.echo(f"configured: roles vucompat-host and vucompat-reader; on every server, agents on "
               f"{', '.join(host_targets) or '(none)'}, schedulers on {', '.join(reader_targets) or '(none)'}")


@fleet.command()
@click.option("--db", "admin", required=True, metavar="REMOTE",
              help="An admin remote of any member: its unix socket (<rundir>/fleet.sock).")
@_connection_options
def upgrade(admin: str, **kw: Any) -> None:
    """Convert the fleet database to this vucompat's schema, online (every server
    follows), keeping its rows, and write the RBAC roles again for its columns,
    keeping the listeners. Run it before upgrading the agents."""
    from vucompat.ovsdb.admin import upgrade as convert
    from vucompat.ovsdb.fleet_config import configure as apply, listeners
    from vucompat.ovsdb.schema import FLEET_DB, FLEET_SCHEMA_FILE

    options = _conn(kw)
    done = convert(remote=admin, schema=FLEET_SCHEMA_FILE, timeout=options["timeout"], database=FLEET_DB)
    click.echo(done.summary())
    agents, readers = listeners(admin, **options)
    if agents:
        apply(admin, agents, readers, **options)
        click.echo(f"roles written again for schema {done.after}: agents on {', '.join(agents)}; schedulers on "
                   f"{', '.join(readers) or '(none)'}")


# ---- read relays ---------------------------------------------------------------------------------


@fleet.command("start-relay")
@click.option("--rundir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Where its admin socket (relay.sock), control socket, pid, log and listeners database go.")
@click.option("--cluster", "cluster", required=True, metavar="REMOTES",
              help="The members' reader listener: ssl:IP:6651,... (comma-separated; the relay picks one and "
                   "moves on when it fails or leaves its cluster).")
@click.option("--reader-listener", "targets", multiple=True, required=True, metavar="TARGET",
              help="Where schedulers connect, e.g. pssl:6651 (role vucompat-reader, read-only). Repeatable.")
@click.option("--ssl-key", type=click.Path(exists=True), help="The relay's private key (listeners and source).")
@click.option("--ssl-cert", type=click.Path(exists=True), help="The relay's certificate.")
@click.option("--ssl-ca", type=click.Path(exists=True), help="The CA that signed every certificate.")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), help="Default: <rundir>/relay.log.")
@click.option("--dry-run", is_flag=True, help="Print the ovsdb-server command line only.")
def start_relay(rundir: Path, cluster: str, targets: tuple[str, ...], ssl_key: str | None, ssl_cert: str | None,
                ssl_ca: str | None, log_file: Path | None, dry_run: bool) -> None:
    """Start a read relay of the fleet (ovsdb-server with a relay:VuCompat_Fleet
    database, detached): a copy of the fleet that follows the cluster and answers
    schedulers, read-only (docs/fleet.md, "Read relays")."""
    import shlex
    import subprocess

    from vucompat.ovsdb.fleet_relay import (OLD_OVS_NOTE, check_relay_options, relay_command, relay_file, running_pid,
                                            set_source_probe, write_listeners)
    from vucompat.ovsdb.tls import SslOptions

    files = (ssl_key, ssl_cert, ssl_ca)
    if any(files) and not all(files):
        raise UsageError(message="give all of --ssl-key, --ssl-cert and --ssl-ca, or none")
    ssl = SslOptions(*map(lambda f: str(Path(f).resolve()), files)) if all(files) else None  # type: ignore[arg-type]
    remotes = [r.strip() for r in cluster.split(",") if r.strip()]
    check_relay_options(remotes, targets, ssl)
    rundir = rundir.resolve()
    command = relay_command(rundir, remotes, ssl, log_file.resolve() if log_file else None)
    if dry_run:
        click.echo(shlex.join(command))
        return
    pid = running_pid(rundir)
    if pid is not None:
        raise UsageError(message=f"a relay runs from {rundir} already (pid {pid}): stop it first "
                         f"(ovs-appctl -t {relay_file(rundir, '.ctl')} exit)")
    rundir.mkdir(parents=True, exist_ok=True)
    write_listeners(rundir, remotes, targets)  # anew from this command line
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(message=f"ovsdb-server did not start: {(done.stderr or done.stdout).strip()}")
    if not set_source_probe(rundir) and any(r.startswith(("ssl:", "tcp:")) for r in remotes):
        click.echo(OLD_OVS_NOTE, err=True)
    click.echo(f"started relay: pid {relay_file(rundir, '.pid').read_text().strip()}, source {','.join(remotes)}; "
               f"check it: vucompat fleet relay-status --rundir {rundir}")


@fleet.command("relay-status")
@click.option("--rundir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The relay's run directory (as given to start-relay).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for the relay (exit 2).")
@_FORMAT
def relay_status(rundir: Path, timeout: float, fmt: str) -> None:
    """Is this relay connected to its source (as it says, and does its source answer
    a probe now), where does it listen (bound ports)? Exit 0 when both, 1 when not
    (its answers may be stale)."""
    from vucompat.core.contracts import stamp
    from vucompat.ovsdb.fleet_relay import relay_status as read_status

    found = read_status(rundir, timeout)
    live = found["connected"] and found["source_answers"]

    def text() -> str:
        state = "connected to its source" if live else (
            "says it is connected, but its source does not answer now (it says so 30 s after losing it)"
            if found["connected"] else "NOT connected to its source") + ": its answers may be stale"
        lines = [f"relay of {found['database']} (pid {found['pid'] or '?'}): {state}",
                 f"source: {found['source'] or '?'}", "listeners:"]
        lines += [f"  {listener['target']}: role {listener['role'] or '(none)'}"
                  f"{', read-only' if listener['read_only'] else ''}, bound port "
                  f"{listener['bound_port'] if listener['bound_port'] is not None else '?'}"
                  for listener in found["listeners"]]
        return "\n".join(lines)

    _emit(fmt, stamp("vucompat.fleet-relay-status", found), text)
    if not live:
        raise SystemExit(1)


# ---- scheduler queries ---------------------------------------------------------------------------


@fleet.command()
@_FLEET
@click.option("--can-run", "mode", metavar="MODE", help="Only hosts that can run MODE (NAME or NAME@sha256:...).")
@click.option("--pool", help="Only hosts of this pool.")
@click.option("--include-stale", is_flag=True, help="Count hosts that stopped publishing as if they were fresh.")
@_connection_options
@_FORMAT
def hosts(remotes: str, mode: str | None, pool: str | None, include_stale: bool, fmt: str, **kw: Any) -> None:
    """The fleet's hosts; with --can-run, those that can take a port in MODE (exit 1
    when none can)."""
    from vucompat.core.contracts import stamp
    from vucompat.core.fleet import hosts_that_can_run
    from vucompat.ovsdb.fleet_read import read_can_run, read_host_summaries
    from vucompat.ovsdb.fleet_rows import now_ms

    if mode is None:
        listed = sorted(_with_session(remotes, kw, lambda s: read_host_summaries(s, pool)), key=lambda h: h.name)
        now = now_ms()
        _emit(fmt, stamp("vucompat.fleet-hosts", {"hosts": [h.as_dict(now) for h in listed]}), lambda: "\n".join(
            f"{h.name:24} {h.pool or '-':12} ovs {h.ovs_version or '?':8} {h.runnable:3}/{h.modes:<3} modes runnable"
            + ("  STALE" if h.stale(now) else "") for h in listed) or "no hosts")
        return
    found = _with_session(remotes, kw, lambda s: read_can_run(s, mode))
    now = now_ms()
    answer = hosts_that_can_run(found, mode, now, include_stale, pool)

    def text() -> str:
        lines = [answer.sentence()]
        for digest, names in answer.hosts.items():
            lines.append(f"  {digest[:19]}: {', '.join(names)}")
        lines += [f"  cannot: {h}: lacks {why}" for h, why in answer.lacking.items()]
        lines += [f"  stale: {h}" for h in answer.stale]
        return "\n".join(lines)

    _emit(fmt, stamp("vucompat.can-run", answer.as_dict()), text)
    if not answer.all_hosts:
        raise SystemExit(1)


@fleet.command("select-mode")
@_FLEET
@click.option("--scope", required=True,
              help="everywhere (every fresh host), hosts=A,B,..., lineage=NAME (the fresh hosts that run that "
                   "platform), or none.")
@click.option("--pool", help="With everywhere or lineage: only the hosts of this pool.")
@_connection_options
@_FORMAT
def select_mode(remotes: str, scope: str, pool: str | None, fmt: str, **kw: Any) -> None:
    """The mode to give a new port so it can move anywhere in its scope, from the
    fleet database alone. Exit 1 when no mode qualifies."""
    from vucompat.core.fleet import select_fleet_mode
    from vucompat.core.migration import Scope
    from vucompat.ovsdb.fleet_read import read_fleet
    from vucompat.ovsdb.fleet_rows import now_ms

    kind, _, value = scope.partition("=")
    names = [n for n in value.split(",") if n] if kind == "hosts" else None
    if kind == "hosts" and not names:
        raise UsageError(message="scope hosts needs the host names: --scope hosts=A,B")
    try:
        parsed = Scope.parse("hosts" if kind == "hosts" else scope)
    except ValueError as err:
        raise UsageError(message=str(err)) from None
    found = _with_session(remotes, kw, lambda s: read_fleet(s, names=names, pool=None if names else pool)) \
        if parsed.kind != "none" else []
    now = now_ms()
    if names is None:  # of --pool already: the server filtered
        found = [h for h in found if not h.stale(now)]
        if not found and parsed.kind != "none":
            raise UsageError(message="no fresh host in the fleet database for this scope")
    try:
        selection = select_fleet_mode(parsed, found, names or ())
    except ValueError as err:
        raise UsageError(message=str(err)) from None
    stale = [h.name for h in found if h.stale(now)]

    def text() -> str:
        lines = [selection.sentence()] + [f"  WARNING: {n} is stale (no publish lately)" for n in stale]
        lines += [f"  {name}: refused: " + "; ".join(p) for name, p in selection.refused.items()]
        return "\n".join(lines)

    _emit(fmt, {**selection.as_dict(), "stale": stale}, text)
    if selection.mode is None and not selection.passthrough:
        raise SystemExit(1)


@fleet.command("check-migration")
@_FLEET
@check_options("name in the fleet", "HOST")
@_connection_options
@_FORMAT
def check_migration(remotes: str, interface: str, source: str, dest: str, allow_outside_contract: bool,
                    dest_port_type: str | None, fmt: str, **kw: Any) -> None:
    """May this port move from source to dest? The same verdict as the per-host
    check-migration, from the fleet database alone. Exit 0 allowed, 1 refused."""
    from vucompat.core.fleet import check_fleet_migration
    from vucompat.ovsdb.fleet_read import read_fleet, read_fleet_modes, read_fleet_ports
    from vucompat.ovsdb.fleet_rows import now_ms

    def read(session: Any) -> tuple[Any, Any]:
        modes = read_fleet_modes(session)
        return (read_fleet(session, names=[source, dest], modes=modes),
                read_fleet_ports(session, host=source, interface=interface, modes=modes))

    found, ports = _with_session(remotes, kw, read)
    by_name = {h.name: h for h in found}
    for name in (source, dest):
        if name not in by_name:
            raise UsageError(message=f"no host {name} in the fleet database (is its agent publishing?)")
    if not ports:
        raise UsageError(message=f"no port {interface} of {source} in the fleet database")
    verdict = check_fleet_migration(ports[0][1], by_name[source], by_name[dest], allow_outside_contract,
                                    dest_port_type)
    stale = [n for n in (source, dest) if by_name[n].stale(now_ms())]
    print_verdict(verdict, fmt, {"stale": stale, **_freshness()},
                  [f"  WARNING: {n} is stale: its data may be old" for n in stale])


@fleet.command()
@_FLEET
@click.option("--max-active", type=click.IntRange(min=1), default=3, show_default=True,
              help="Flag pools whose ports use more distinct modes than this.")
@click.option("--pool", help="Only this pool (the server filters).")
@_connection_options
@_FORMAT
def report(remotes: str, max_active: int, pool: str | None, fmt: str, **kw: Any) -> None:
    """The modes in use per pool; too many active modes (or one name with several
    meanings) is a risk. Exit 1 when a pool is flagged."""
    from vucompat.core.contracts import stamp
    from vucompat.core.fleet import active_modes_report
    from vucompat.ovsdb.fleet_read import read_pools, read_port_modes

    pools, port_modes = _with_session(remotes, kw, lambda s: (read_pools(s, pool), read_port_modes(s)))
    reports = active_modes_report(pools, port_modes, max_active)

    def text() -> str:
        lines = []
        for r in reports:
            flag = click.style("AT RISK", fg="red", bold=True) if r.at_risk else "ok"
            lines.append(f"{r.pool}: {r.hosts} host(s), {len(r.active)} active mode(s): {flag}"
                         + (f" ({r.why()})" if r.at_risk else ""))
            lines += [f"  {mode:48} {n} port(s)" for mode, n in r.active.items()]
        return "\n".join(lines) or "no hosts"

    _emit(fmt, stamp("vucompat.pool-report", {"pools": [r.as_dict() for r in reports]}), text)
    if any(r.at_risk for r in reports):
        raise SystemExit(1)


@fleet.command()
@click.option("--db", "admin", required=True, metavar="REMOTE", help="An admin remote (a server's unix socket).")
@click.argument("host")
@_connection_options
def forget(admin: str, host: str, **kw: Any) -> None:
    """Delete a host's rows (a decommissioned host; stale hosts are never deleted
    on their own)."""
    ops = [{"op": "delete", "table": "Port", "where": [["host", "==", host]]},
           {"op": "delete", "table": "Host", "where": [["name", "==", host]]}]
    results = _with_session(admin, kw, lambda s: s.transact(ops), reads=False)
    click.echo(f"forgot {host}: {results[1].get('count', 0)} host row, {results[0].get('count', 0)} port row(s)")
