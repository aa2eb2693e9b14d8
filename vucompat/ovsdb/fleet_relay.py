"""Read relays of the fleet database: ovsdb-server with a `relay:VuCompat_Fleet:REMOTES`
database (OVSDB's relay service model, as OVN runs relays for its Southbound
database). A relay keeps an in-memory copy of the fleet, fed by one monitor on any
member of the cluster, and answers reads and monitors itself: schedulers and their
warm replicas read from relays, agents write to the members (docs/fleet.md,
"Read relays").

A relay's listeners cannot come from the fleet database (`db:VuCompat_Fleet,...`, as
the cluster-wide ones of `fleet configure` do): every relay and every member would
bind all of them. Nor from its command line: `--remote=pssl:...` has no RBAC role and
is not read-only. So a relay serves the small standalone database each fleet server
may have for its own listeners (fleet_listeners: VuCompat_Fleet_Server), written
from start-relay's command line at every start: its Connection rows carry the reader
role (vucompat-reader, no permission) and read_only, as the members' reader listener
does; the relay enforces them on its copy, whose RBAC tables are the cluster's, and
ovsdb-server writes each listener's bound port there. The relay's own source is the
members' read-only reader listener, so not even its admin socket can write into the
fleet.
"""

from __future__ import annotations

import errno
import fcntl
import re
import time
from pathlib import Path
from typing import Any, Sequence

from vucompat.core.errors import UsageError
from vucompat.ovsdb import rpc
from vucompat.ovsdb.admin import _tool
from vucompat.ovsdb.fleet_config import READER_PROBE_MS
from vucompat.ovsdb.fleet_listeners import SERVER, SERVER_DB, SERVER_REMOTES, listeners, write_server_db
from vucompat.ovsdb.freshness import SERVER_STATUS_DB, status_operations
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.ovsdb.tls import SslOptions

STEM = "relay"


def relay_file(rundir: Path, suffix: str) -> Path:
    """<rundir>/relay<suffix>: .sock (admin socket), .ctl, .pid, .log, -listeners.db."""
    return rundir / f"{STEM}{suffix}"


def check_relay_options(cluster: Sequence[str], targets: Sequence[str], ssl: SslOptions | None) -> None:
    """Raise UsageError for a relay source that is not a client remote, a listener
    that is not a passive one, or ssl: / pssl: without the SSL files."""
    if not cluster:
        raise UsageError(message="a relay needs the cluster's remotes (--cluster): the members' reader "
                         "listener, e.g. ssl:10.0.0.1:6651,ssl:10.0.0.2:6651,ssl:10.0.0.3:6651")
    if not targets:
        raise UsageError(message="a relay needs at least one --reader-listener, e.g. pssl:6651")
    for remote in cluster:
        if not re.fullmatch(r"(ssl|tcp):[^:,]+:\d+|unix:[^,]+", remote):
            raise UsageError(message=f"--cluster {remote!r} is not a client remote: write ssl:IP:PORT,... (the "
                             "members' reader listener)")
    for target in targets:
        if not target.startswith(("pssl:", "ptcp:", "punix:")):
            raise UsageError(message=f"listener {target!r} is not a passive remote: write pssl:PORT[:IP] "
                             "(ptcp: only for tests; RBAC needs SSL to know who connects)")
    if ssl is None and (any(r.startswith("ssl:") for r in cluster) or any(t.startswith("pssl:") for t in targets)):
        raise UsageError(message="ssl: and pssl: need the relay's --ssl-key, --ssl-cert and --ssl-ca")


def write_listeners(rundir: Path, cluster: Sequence[str], targets: Sequence[str]) -> Path:
    """(Re)write the relay's listener database in `rundir` (<rundir>/relay-listeners.db,
    a VuCompat_Fleet_Server database; ovsdb-tool, while the relay is stopped): each
    of `targets` with the reader role, read-only; its Server row records the relay's
    source (`cluster`) in external_ids:source, for relay-status. Raises UsageError."""
    path = relay_file(rundir, "-listeners.db")
    write_server_db(path, [], targets, {"source": ",".join(cluster)})
    return path


def relay_command(rundir: Path, cluster: Sequence[str], ssl: SslOptions | None,
                  log_file: Path | None = None) -> list[str]:
    """The ovsdb-server command line of a relay run from `rundir`: the relay
    database, its listener database (write_listeners) read with a db: remote, an
    admin unix socket (<rundir>/relay.sock: no role, local only; its writes are
    forwarded to the read-only source and refused) and the SSL files of both its
    listeners and its connection to the cluster."""
    command = ["ovsdb-server", str(relay_file(rundir, "-listeners.db")), f"relay:{FLEET_DB}:{','.join(cluster)}",
               f"--remote=punix:{relay_file(rundir, '.sock')}", f"--remote={SERVER_REMOTES}",
               f"--unixctl={relay_file(rundir, '.ctl')}", f"--pidfile={relay_file(rundir, '.pid')}",
               f"--log-file={log_file or relay_file(rundir, '.log')}", "--detach", "--no-chdir"]
    if ssl is not None:
        command += [f"--private-key={ssl.private_key}", f"--certificate={ssl.certificate}", f"--ca-cert={ssl.ca_cert}"]
    return command


def set_source_probe(rundir: Path, probe_ms: int = READER_PROBE_MS, timeout: float = 5) -> bool:
    """Give the relay running from `rundir` an inactivity probe of `probe_ms` on its
    connection to its source, as the members' reader listener has on theirs
    (READER_PROBE_MS): a relay's first copy of a large fleet comes after its member
    has composed it, silent meanwhile (21 s at 30,000 hosts on bench/README.md's VM).
    Returns False when the relay's ovsdb-server has no such command: before OVS 3.2
    (`ovsdb-server/set-relay-source-probe-interval`, OVS commit 5392f89fe, v3.2.0) the
    probe is fixed at 5 s, so over ssl:/tcp: a member silent for more than twice that
    is dropped, and the relay starts again, for ever (docs/fleet.md, "Read relays").
    Raises UsageError when the relay does not answer."""
    try:
        _tool("ovs-appctl", "-t", str(relay_file(rundir, ".ctl")), "ovsdb-server/set-relay-source-probe-interval",
              str(probe_ms), timeout=timeout)
    except UsageError as err:
        if "is not a valid command" in str(err):
            return False
        raise
    return True


#: what start-relay says when the relay's source probe stays at OVS 3.1's fixed 5 s
OLD_OVS_NOTE = ("note: this ovsdb-server (before OVS 3.2) cannot lengthen a relay's probe of its source (5 s), so a "
                "relay of ssl:/tcp: sources syncs only a fleet whose member composes the whole copy in under ~10 s "
                "(about 10,000 hosts on a 2-core VM). Larger: a unix: source on a member's machine (no probes), and the "
                "election timer above that time (vucompat fleet election-timer): docs/fleet.md, \"Read relays\"")


def running_pid(rundir: Path) -> int | None:
    """The pid of the relay running from `rundir` (its pid file is locked while it
    runs, as every OVS daemon's), or None."""
    pidfile = relay_file(rundir, ".pid")
    try:
        with pidfile.open("r+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EACCES, errno.EAGAIN):
                    return int(pidfile.read_text().strip() or 0) or None
                raise
            fcntl.lockf(handle, fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None


#: a write the relay must forward to its source (it cannot commit one itself), which
#: changes nothing wherever it lands: the members' reader listener refuses it (read-only,
#: no permission), and any other source garbage-collects the row (Connection is not a
#: root table and nothing refers to it)
_PROBE = [{"op": "insert", "table": "Connection", "row": {"target": "vucompat-relay-probe"}}]
#: how long relay_status waits for the probe's answer (seconds)
PROBE_TIMEOUT = 2.0


def source_answers(remote: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the relay at `remote` (its admin socket: its listeners are read-only
    and would refuse the probe themselves) reaches a source that answers now: it
    forwards _PROBE, and any reply of the source within `timeout` says yes. A relay
    keeps saying it is connected for 30 s after it lost its source (OVS's
    RELAY_MAX_RECONNECTION_MS); this says so at once."""
    try:
        rpc.call(remote, "transact", [FLEET_DB, *_PROBE], time.monotonic() + timeout, timeout)
    except OvsdbError:  # no answer in time, or "canceled": the relay lost its source meanwhile
        return False
    return True  # the source's refusal (or its no-op commit) is an answer


def relay_status(rundir: Path, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """What the relay running from `rundir` says, through its admin socket and
    control socket: {"database", "connected" (to its source, as its _Server says),
    "source_answers" (source_answers()), "source", "listeners": [{"target", "role",
    "read_only", "bound_port", "connections"}], "pid"}. Raises OvsdbError (or
    UsageError) when it does not answer."""
    remote = f"unix:{relay_file(rundir, '.sock')}"
    (server,) = rpc.transact(remote, SERVER_STATUS_DB, status_operations(FLEET_DB), timeout)
    if not server["rows"] or server["rows"][0].get("model") != "relay":
        raise OvsdbError(remote=remote, reason=f"this server has no relay of {FLEET_DB}: is it a relay started by "
                         "`vucompat fleet start-relay`?")
    (rows,) = rpc.transact(remote, SERVER_DB, [{"op": "select", "table": "Server", "where": [],
                                                "columns": ["external_ids"]}], timeout)
    source = dict(rows["rows"][0]["external_ids"][1]).get("source") if rows["rows"] else None
    found = [{"target": listener["target"], "role": listener.get("role", ""),
              "read_only": bool(listener.get("read_only")), "bound_port": listener.get("bound_port"),
              "connections": listener.get("connections")}
             for listener in listeners(relay_file(rundir, ".ctl"), timeout) if listener["configured"] == SERVER]
    return {"database": FLEET_DB, "connected": bool(server["rows"][0]["connected"]),
            "source_answers": source_answers(remote, min(timeout, PROBE_TIMEOUT)), "source": source,
            "listeners": found, "pid": running_pid(rundir)}
