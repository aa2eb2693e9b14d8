"""File permissions the agent's enforcement depends on (docs/agent.md, "Permissions").

Two sides:
- OVS's own dpdkvhostuser sockets (`<OVS_RUNDIR>/<vhost-sock-dir>/<iface>`): DPDK
  binds them with no chmod (0777 & ~umask of ovs-vswitchd) and OVS has no option for
  their permissions, so a frontend that ignores the relay's path could reach OVS
  unmasked. connect() on a unix socket needs search permission on every directory of
  its path, so the agent guards the directory: `SockDirGuard` takes permission bits
  away from it (never adds any), and says what the operator must do when it cannot.
- the relays' sockets, which the frontends (QEMU, often another user) and, for
  dpdkvhostuserclient ports, ovs-vswitchd connect to: `RelayAccess` says their mode
  and group, set by the relay after bind and before listen (so the agent's umask
  does not decide), and how the relay directory is created and checked.

Everything here is a stat, a chmod or a chown; it logs what it did once per change.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("vucompat.agent")

#: what the agent leaves of the mode of OVS's dpdkvhostuser socket directory: nothing for "other"
DEFAULT_OVS_SOCK_DIR_MODE = 0o750
#: relay sockets: anyone may connect (the relay is the point of control), unless a group is given
DEFAULT_RELAY_SOCKET_MODE = 0o666
DEFAULT_RELAY_SOCKET_MODE_WITH_GROUP = 0o660


def parse_mode(text: str) -> int:
    """An octal permission mode (`0750`, `750`, `0o750`). Raises ValueError."""
    try:
        value = int(text.strip().removeprefix("0o"), 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise ValueError(f"{text}: not a permission mode (octal, 0000 to 0777)")
    return value


def parse_group(text: str) -> int:
    """A group name or gid. Raises ValueError when no such group exists."""
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"no group named {text!r}") from None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _inside(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents


@dataclass
class SockDirGuard:
    """Keeps "other" (or what `mode` leaves out) from searching the directory where
    ovs-vswitchd serves dpdkvhostuser sockets. `mode` None: leave it alone.
    check() is cheap (a stat) and is called on every reconcile: a directory that
    appears late, or is re-created open by a restart of OVS, is guarded then."""

    mode: int | None = DEFAULT_OVS_SOCK_DIR_MODE
    #: the relays' directory: never locked out by the guard
    relay_dir: Path | None = None
    #: (path, outcome) last logged: each outcome is logged once
    _said: tuple[str, str] | None = field(default=None, init=False)

    def check(self, directory: Path | None) -> str:
        """Guard `directory`; return the outcome: "off", "absent", "refused",
        "guarded" (already, or now), "failed"."""
        if self.mode is None or directory is None:
            return "off"
        directory = Path(directory)
        try:
            st = directory.stat()
        except FileNotFoundError:
            return self._say(directory, "absent", logging.DEBUG,
                             f"OVS's dpdkvhostuser socket directory {directory} does not exist yet: "
                             "it is guarded once it does")
        except OSError as err:
            return self._say(directory, "failed", logging.WARNING,
                             f"cannot look at OVS's dpdkvhostuser socket directory {directory}: {err.strerror}")
        if not stat.S_ISDIR(st.st_mode):
            return self._say(directory, "failed", logging.WARNING,
                             f"OVS's dpdkvhostuser socket directory {directory} is not a directory")
        if self.relay_dir is not None and _inside(self.relay_dir, directory):
            return self._say(directory, "refused", logging.WARNING,
                             f"not guarding OVS's dpdkvhostuser socket directory {directory}: the relays' directory "
                             f"{self.relay_dir} is inside it, and frontends would be locked out of the relays too. "
                             "Give the agent a --relay-dir outside it; until then a frontend can bypass its relay")
        current = stat.S_IMODE(st.st_mode)
        wanted = current & ~(0o777 & ~self.mode)  # take bits away, never add any
        who = f"owner {_user(st.st_uid)}, group {_group(st.st_gid)}"
        if wanted == current:
            return self._say(directory, "guarded", logging.INFO,
                             f"OVS's dpdkvhostuser socket directory {directory} is guarded: mode {current:04o} "
                             f"({who}); other users reach OVS's sockets only through the relays")
        try:
            os.chmod(directory, wanted)
        except OSError as err:
            return self._say(directory, "failed", logging.WARNING, (
                f"cannot guard OVS's dpdkvhostuser socket directory {directory} (mode {current:04o}, {who}): "
                f"{err.strerror}. Frontends that ignore their relay's path can reach OVS's sockets unmasked. "
                f"Run the agent as root or as {_user(st.st_uid)}, or have the directory created mode "
                f"{wanted:04o} (e.g. `chmod {wanted:04o} {directory}`, with its group the agent's "
                f"({_group(os.getegid())}) if the agent runs as neither root nor {_user(st.st_uid)}); "
                "docs/agent.md, Permissions"))
        self._said = None
        return self._say(directory, "guarded", logging.INFO,
                         f"guarded OVS's dpdkvhostuser socket directory {directory}: mode {current:04o} -> "
                         f"{wanted:04o} ({who}); other users reach OVS's sockets only through the relays")

    def _say(self, directory: Path, outcome: str, level: int, message: str) -> str:
        if self._said != (str(directory), outcome):
            log.log(level, "%s", message)
            self._said = (str(directory), outcome)
        return outcome


@dataclass(frozen=True)
class RelayAccess:
    """Who may connect to the relays' sockets: frontends (server ports) and
    ovs-vswitchd (client ports). `socket_mode` is set on each socket after bind,
    before listen; `group` (a gid), when given, owns the sockets and a relay
    directory the agent creates."""

    group: int | None = None
    socket_mode: int | None = None

    @property
    def mode(self) -> int:
        if self.socket_mode is not None:
            return self.socket_mode
        return DEFAULT_RELAY_SOCKET_MODE_WITH_GROUP if self.group is not None else DEFAULT_RELAY_SOCKET_MODE

    @property
    def dir_mode(self) -> int:
        """The mode of a relay directory the agent creates: searchable by whom the sockets admit."""
        mode = self.mode
        return 0o700 | (0o050 if mode & 0o060 else 0) | (0o005 if mode & 0o006 else 0)

    def apply(self, path: Path) -> None:
        """Set a relay socket's (or directory's) group and mode. Raises OSError."""
        if self.group is not None:
            os.chown(path, -1, self.group)
        os.chmod(path, self.dir_mode if path.is_dir() else self.mode)

    def prepare(self, relay_dir: Path) -> None:
        """Create the relay directory (mode dir_mode, with the group) when it does
        not exist; otherwise leave it as the operator made it. Then log a warning
        naming the first directory of its path that keeps whom the sockets admit out."""
        if not relay_dir.exists():
            try:
                relay_dir.mkdir(parents=True)
                self.apply(relay_dir)
                log.info("created the relay directory %s, mode %04o%s", relay_dir, self.dir_mode,
                         f", group {_group(self.group)}" if self.group is not None else "")
            except OSError as err:
                log.error("cannot create the relay directory %s: %s", relay_dir, err.strerror)
                return
        if blocker := self.blocking_directory(relay_dir):
            log.warning("%s: frontends of other users cannot reach the relays' sockets (mode %04o%s) in %s: "
                        "they need search permission on every directory of the path (docs/agent.md, Permissions)",
                        blocker, self.mode, f", group {_group(self.group)}" if self.group is not None else "",
                        relay_dir)

    def blocking_directory(self, relay_dir: Path) -> str | None:
        """The first directory of `relay_dir`'s path (itself included) that users
        the sockets admit (others, or the group's members) cannot search, with its
        mode; None when all can."""
        mode = self.mode
        if not mode & 0o066:
            return None  # only the agent's user: nothing to check
        path = relay_dir.resolve()
        for directory in [*reversed(path.parents), path]:
            try:
                st = directory.stat()
            except OSError:
                return None
            bits = stat.S_IMODE(st.st_mode)
            if mode & 0o006:
                ok = bool(bits & 0o001)
            else:
                ok = bool(bits & 0o001) or bool(bits & 0o010 and self.group is not None and st.st_gid == self.group)
            if not ok:
                return f"{directory} (mode {bits:04o}, {_user(st.st_uid)}:{_group(st.st_gid)})"
        return None
