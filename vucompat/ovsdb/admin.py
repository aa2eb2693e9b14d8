"""Creating, attaching and upgrading the registry database, with Debian's
ovsdb-tool, ovsdb-client and ovs-appctl."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vucompat.core.errors import UsageError
from vucompat.ovsdb import rpc
from vucompat.ovsdb.rpc import DEFAULT_TIMEOUT, OvsdbError
from vucompat.ovsdb.schema import DB_NAME, SCHEMA_FILE, version_tuple


def _tool(*args: str, timeout: float = 60) -> str:
    if shutil.which(args[0]) is None:
        raise UsageError(message=f"{args[0]} is not installed: install Debian's openvswitch-switch "
                         "(make setup does)")
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise UsageError(message=f"{' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()


def create(path: Path, schema: Path = SCHEMA_FILE) -> str:
    """Create an empty registry database file; return its schema version.

    Raises UsageError when the file exists (nothing is touched)."""
    if path.exists():
        raise UsageError(message=f"{path} already exists; to bring it to this vucompat's schema use "
                         f"`vucompat db upgrade {path}`")
    _tool("ovsdb-tool", "create", str(path), str(schema))
    return _tool("ovsdb-tool", "db-version", str(path))


def attach(path: Path, ctl: Path) -> None:
    """Add the database file to the running ovsdb-server whose control socket is
    `ctl` (ovsdb-server/add-db). Raises UsageError."""
    if not path.exists():
        raise UsageError(message=f"{path} does not exist: create it with `vucompat db create {path}`")
    if not ctl.exists():
        raise UsageError(message=f"{ctl} is not an ovsdb-server control socket: give --ctl, e.g. "
                         "/var/run/openvswitch/ovsdb-server.<pid>.ctl")
    _tool("ovs-appctl", "-t", str(ctl), "ovsdb-server/add-db", str(path.resolve()))


@dataclass(frozen=True)
class Upgrade:
    target: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def summary(self) -> str:
        if not self.changed:
            return f"{self.target}: already at schema {self.after}; nothing to do"
        return f"{self.target}: converted from schema {self.before} to {self.after}, rows kept"


def upgrade(file: Path | None = None, remote: str | None = None, schema: Path = SCHEMA_FILE,
            timeout: float = DEFAULT_TIMEOUT, database: str = DB_NAME) -> Upgrade:
    """Convert a database file (offline, ovsdb-tool convert) or a served database
    `database` (online, ovsdb-client convert: a clustered one too) to `schema`,
    keeping its rows.

    Refuses a downgrade. Raises UsageError or OvsdbError; nothing changes then."""
    target_version = json.loads(schema.read_text())["version"]
    if remote is not None:
        before = rpc.get_schema(remote, database, timeout).get("version", "0")
        _refuse_downgrade(remote, before, target_version)
        if before != target_version:
            _tool("ovsdb-client", f"--timeout={max(1, int(timeout))}", "convert", remote, str(schema),
                  timeout=timeout + 5)
        after = rpc.get_schema(remote, database, timeout).get("version", "0")
        return Upgrade(remote, before, after)
    if file is None:
        raise UsageError(message="give the database FILE, or --db REMOTE for a database a server holds")
    if not file.exists():
        raise UsageError(message=f"{file} does not exist")
    before = _tool("ovsdb-tool", "db-version", str(file))
    _refuse_downgrade(str(file), before, target_version)
    if before != target_version:
        _tool("ovsdb-tool", "convert", str(file), str(schema))
    return Upgrade(str(file), before, _tool("ovsdb-tool", "db-version", str(file)))


def _refuse_downgrade(target: str, current: str, wanted: str) -> None:
    if version_tuple(current) > version_tuple(wanted):
        raise OvsdbError(remote=target, reason=f"the database has schema {current}, newer than this "
                         f"vucompat's {wanted}: refusing to downgrade; upgrade vucompat instead")
