"""What a process holds, read from /proc, for the benchmarks and the tests: which
process listens on a unix socket (found by the socket's inode, so it does not matter
whether the agent or a process of its own serves the relays), its open fds, its
resident memory and its command line; and the open-file limit a shipped systemd
unit gives it."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

#: systemd's default RLIMIT_NOFILE for services (soft, hard) when a unit sets no LimitNOFILE
SYSTEMD_DEFAULT_NOFILE = (1024, 524288)
_ACCEPTCON = 0x10000


def listening_inodes(path: Path | str) -> set[int]:
    """The inodes of the listening unix sockets bound to `path` (/proc/net/unix, this
    network namespace)."""
    found = set()
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == str(path) and int(fields[3], 16) & _ACCEPTCON:
                found.add(int(fields[6]))
    return found


def socket_owners(path: Path | str) -> list[int]:
    """The pids of the processes that hold a listening unix socket bound to `path`
    (scanning /proc/*/fd for the socket's inode); empty when nobody listens there."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(path)}
    if not wanted:
        return []
    owners = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in wanted:
                        owners.append(int(entry.name))
                        break
                except OSError:
                    continue
    return sorted(owners)


def open_fds(pid: int) -> int:
    """How many file descriptors `pid` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    """The resident memory of `pid` in KiB (VmRSS)."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def cmdline(pid: int) -> list[str]:
    """The arguments `pid` was started with."""
    return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]


def describe(pid: int) -> str:
    """'pid N (vucompat relay)': the program's name and the first word after it
    (python's own arguments skipped: `python .../vucompat agent`, `python -m vucompat relay`)."""
    args = cmdline(pid)
    if args and os.path.basename(args[0]).startswith("python"):
        args = args[2:] if args[1:2] == ["-m"] else args[1:]
    words = [os.path.basename(a) for a in args[:2] if not a.startswith("-")][:2] or ["?"]
    return f"pid {pid} ({' '.join(words)})"


def _limit(text: str) -> int:
    return resource.RLIM_INFINITY if text == "infinity" else int(text)


def unit_nofile(units: Path, pid: int) -> tuple[tuple[int, int], str]:
    """The (soft, hard) open-file limit the shipped unit in `units` (*.service) that
    runs `pid`'s vucompat command (the first word after `vucompat` in its ExecStart,
    e.g. agent or relay) would give it: its LimitNOFILE, else systemd's default.
    Returns the limit and where it comes from."""
    args = cmdline(pid)
    names = [os.path.basename(a) for a in args]
    command = names[names.index("vucompat") + 1] if "vucompat" in names[:-1] else None
    for unit in sorted(units.glob("*.service")):
        text = unit.read_text()
        execs = re.findall(r"^ExecStart=\S*vucompat\s+(\S+)", text, re.M)
        if command is None or command not in execs:
            continue
        match = re.search(r"^LimitNOFILE=(\S+)", text, re.M)
        if match is None:
            return SYSTEMD_DEFAULT_NOFILE, f"{unit.name} sets no LimitNOFILE: systemd's default"
        soft, _, hard = match.group(1).partition(":")
        value = (_limit(soft), _limit(hard or soft))
        return value, f"{unit.name}: LimitNOFILE={match.group(1)}"
    return SYSTEMD_DEFAULT_NOFILE, f"no unit in {units} runs `vucompat {command}`: systemd's default"


def apply_nofile(pid: int, limit: tuple[int, int]) -> tuple[int, int]:
    """Give `pid` the open-file limit `limit` (soft, hard), the hard one capped at what
    it has now (raising it needs CAP_SYS_RESOURCE, which a container may not have);
    return what it got."""
    _soft, current_hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)

    def lower(a: int, b: int) -> int:
        return b if a == resource.RLIM_INFINITY else a if b == resource.RLIM_INFINITY else min(a, b)

    hard = lower(limit[1], current_hard)
    soft = lower(limit[0], hard)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard
