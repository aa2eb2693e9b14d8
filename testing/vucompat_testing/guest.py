"""A real small Linux guest with a virtio-net NIC on a vhost-user backend, run by
QEMU (TCG) and live-migrated between two QEMU processes on this machine: for the
functional tests and the demo. See ../shared/reference/real-components.md.

The guest is built from Debian packages only, on demand, into a cache directory
(`ensure_guest`): the kernel from the current linux-image package (`apt-get
download`, never installed, so no hooks and no /boot changes), the modules
virtio_net needs where the kernel has them as modules, and a busybox initramfs
(from busybox-static) whose /init brings eth0 up, prints the negotiated virtio
features once, then sends one ARP request to its peer and prints a counter line
to the serial console about every 0.2 s:

    vucguest features 1100...      (bit 0 first, as /sys/class/net/eth0/device/features)
    vucguest queues rx=1 tx=1
    vucguest up ip=192.0.2.2/24 peer=192.0.2.1
    vucguest tick 17 rx=3 tx=18

The traffic never leaves the virtual wire: it goes to the vhost-user backend
(dpdk-testpmd or ovs-vswitchd-dpdk), not to any host interface.

`Guest` runs one qemu-system-x86_64 from a private directory (QMP socket, serial
log, pidfile, stderr log), as the vhost-user client (QEMU connects to a socket the
backend serves: testpmd's net_vhost with client=0, OVS's dpdkvhostuser) or server
(the backend connects: OVS's dpdkvhostuserclient), optionally as a migration
destination (`incoming=True`: `-incoming tcp:127.0.0.1:PORT`). It is stopped by
QMP `quit`, else by pid.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vucompat_testing.daemon import Daemon
from vucompat_testing.net import free_port

#: where the demo and the tests keep the guest (run/ is not tracked)
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "run" / "guest-cache"
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
#: the kernel options the guest needs -> the module that provides each when it is =m
KERNEL_OPTIONS = {"CONFIG_VIRTIO_PCI": "virtio_pci", "CONFIG_VIRTIO_NET": "virtio_net"}
#: options that must be built in (=y): the serial console, the initramfs, ARP via AF_PACKET
KERNEL_BUILTIN = ("CONFIG_SERIAL_8250_CONSOLE", "CONFIG_BLK_DEV_INITRD", "CONFIG_RD_GZIP", "CONFIG_DEVTMPFS",
                  "CONFIG_PACKET", "CONFIG_INET")
TICK = re.compile(r"vucguest tick (\d+) rx=(\d+) tx=(\d+)")

INIT_SCRIPT = r"""#!/bin/sh
# vucompat's test guest (vucompat/guest.py): eth0 up with the address given on the
# kernel command line (vuc.ip=ADDR/LEN vuc.peer=ADDR vuc.period=SECONDS), the
# negotiated virtio features printed once, then one ARP request to the peer and a
# counter line on the console every period, forever.
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in /lib/modules/*.ko; do
    [ -e "$m" ] || continue
    insmod "$m" || echo "vucguest error insmod ${m##*/}"
done
ip=192.0.2.2/24; peer=192.0.2.1; period=0.2
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vuc.ip=*) ip=${arg#vuc.ip=} ;;
        vuc.peer=*) peer=${arg#vuc.peer=} ;;
        vuc.period=*) period=${arg#vuc.period=} ;;
    esac
done
i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i+1))
    if [ $i -gt 300 ]; then echo "vucguest error no eth0"; break; fi
    sleep 0.1
done
ip link set lo up
ip addr add "$ip" dev eth0
ip link set eth0 up
echo "vucguest features $(cat /sys/class/net/eth0/device/features)"
q=/sys/class/net/eth0/queues
echo "vucguest queues rx=$(ls $q | grep -c '^rx-') tx=$(ls $q | grep -c '^tx-')"
echo "vucguest up ip=$ip peer=$peer"
s=/sys/class/net/eth0/statistics
n=0
while :; do
    n=$((n+1))
    # in the background: it waits up to 1 s for a reply that may never come
    arping -c 1 -w 1 -I eth0 "$peer" >/dev/null 2>&1 &
    echo "vucguest tick $n rx=$(cat $s/rx_packets) tx=$(cat $s/tx_packets)"
    sleep "$period"
done
"""
#: bump when the initramfs layout changes (the kernel .deb stays cached)
IMAGE_FORMAT = 1


class GuestError(RuntimeError):
    """The guest image cannot be built, or QEMU failed. `crash` names the signal
    that killed QEMU ("SIGSEGV") when it died of one, a QEMU bug rather than an
    outcome of what it was asked to do."""

    def __init__(self, message: str, crash: str | None = None) -> None:
        super().__init__(message)
        self.crash = crash


@dataclass(frozen=True)
class GuestImage:
    """A kernel and an initramfs ready for `-kernel`/`-initrd`."""

    kernel: Path
    initrd: Path
    #: the kernel package and release it came from, e.g. linux-image-6.1.0-57-amd64, 6.1.0-57-amd64
    package: str = ""
    release: str = ""
    #: the modules in the initramfs, in insmod order (empty when virtio_net is built in)
    modules: tuple[str, ...] = ()


# --- building the image --------------------------------------------------------

def _run(cmd: Sequence[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def kernel_package(flavour: str = "amd64") -> str:
    """The linux-image package the metapackage linux-image-`flavour` depends on now
    (e.g. linux-image-6.1.0-57-amd64), from `apt-cache depends`."""
    meta = f"linux-image-{flavour}"
    for attempt in range(2):
        done = _run(["apt-cache", "depends", meta], timeout=120)
        found = re.search(r"Depends:\s*(linux-image-\d\S*)", done.stdout)
        if found:
            return found.group(1)
        if attempt == 0:
            _apt_update()
    raise GuestError(f"apt-cache depends {meta} names no kernel package: {done.stderr.strip() or done.stdout.strip()}"
                     " (is Debian's package index there? scripts/setup.sh runs apt-get update)")


def _apt_update() -> None:
    if os.geteuid() == 0:
        _run(["apt-get", "update", "-qq"], timeout=600)


def _download(package: str, cache_dir: Path) -> Path:
    """`apt-get download` `package` into `cache_dir` (once); the .deb's path."""
    for attempt in range(2):
        debs = sorted(cache_dir.glob(f"{package}_*.deb"))
        if debs:
            return debs[-1]
        done = _run(["apt-get", "download", "-q", package], cwd=cache_dir)
        debs = sorted(cache_dir.glob(f"{package}_*.deb"))
        if debs:
            return debs[-1]
        if attempt == 0:
            _apt_update()
    raise GuestError(f"apt-get download {package} failed: {done.stderr.strip() or done.stdout.strip()}")


def _elf_sections(data: bytes) -> dict[str, bytes]:
    """The sections of a 64-bit little-endian ELF file, by name."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise GuestError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at, names_size = headers[shstrndx][4], headers[shstrndx][5]
    names = data[names_at:names_at + names_size]
    sections = {}
    for name_at, _type, _flags, _addr, offset, size in headers:
        name = names[name_at:names.index(b"\0", name_at)].decode()
        sections[name] = data[offset:offset + size]
    return sections


def modinfo(module: bytes) -> dict[str, str]:
    """A kernel module's .modinfo (name, depends, vermagic, ...); repeated keys keep the first."""
    info: dict[str, str] = {}
    for entry in _elf_sections(module).get(".modinfo", b"").split(b"\0"):
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, value)
    return info


def _read_module(path: Path) -> bytes:
    """A module file's bytes, decompressed (.ko, .ko.xz, .ko.gz; .ko.zst with the zstd tool)."""
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".ko.zst"):
        if shutil.which("zstd") is None:
            raise GuestError(f"{path.name} is zstd-compressed: install zstd")
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return path.read_bytes()


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base[:base.index(".ko")].replace("-", "_")


def _kernel_config(root: Path, release: str) -> dict[str, str]:
    config = {}
    for line in (root / "boot" / f"config-{release}").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            config[key] = value
    return config


def needed_modules(root: Path, release: str) -> list[tuple[str, bytes]]:
    """The modules virtio_net and virtio_pci need in an extracted kernel package at
    `root`, dependencies first: exactly the ones its config has as =m (built-in ones
    are skipped), ordered by each module's own `depends` (Debian's package ships no
    modules.dep: depmod makes it at install time)."""
    config = _kernel_config(root, release)
    for option in KERNEL_BUILTIN:
        if config.get(option) != "y":
            raise GuestError(f"kernel {release}: {option} is {config.get(option, 'not set')}, the guest needs it =y")
    roots = []
    for option, module in KERNEL_OPTIONS.items():
        value = config.get(option)
        if value == "m":
            roots.append(module)
        elif value != "y":
            raise GuestError(f"kernel {release}: {option} is {value or 'not set'}: no virtio-net guest possible")
    moddir = root / "lib" / "modules" / release
    files = {_module_name(str(p)): p for p in moddir.rglob("*.ko*") if re.search(r"\.ko(\.xz|\.gz|\.zst)?$", p.name)}
    builtin_list = moddir / "modules.builtin"
    builtin = {_module_name(line) for line in builtin_list.read_text().split()} if builtin_list.exists() else set()
    ordered: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen or name in builtin:
            return
        if name in chain:
            raise GuestError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        if name not in files:
            raise GuestError(f"kernel {release}: module {name} not found under {moddir}")
        data = _read_module(files[name])
        for dep in filter(None, modinfo(data).get("depends", "").split(",")):
            visit(dep.replace("-", "_"), (*chain, name))
        seen.add(name)
        ordered.append((name, data))

    for module in roots:
        visit(module, ())
    return ordered


def _is_static(executable: bytes) -> bool:
    """True if an ELF executable has no program interpreter (PT_INTERP)."""
    phoff, = struct.unpack_from("<Q", executable, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", executable, 0x36)
    return all(struct.unpack_from("<I", executable, phoff + i * phentsize)[0] != 3 for i in range(phnum))


class _Cpio:
    """A newc ("070701") cpio archive, written in memory, owned by root, mtime 0."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 2 if mode & 0o170000 == 0o040000 else 1, 0, len(data), 0, 0, rdev[0],
                  rdev[1], len(name) + 1, 0]
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0")
        self._pad()
        self.out.write(data)
        self._pad()

    def _pad(self) -> None:
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def directory(self, name: str) -> None:
        self.add(name, 0o040755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self.add(name, 0o100000 | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self.add(name, 0o120777, target.encode())

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.out.getvalue()


def build_initramfs(busybox: bytes, modules: Sequence[tuple[str, bytes]], init: str = INIT_SCRIPT) -> bytes:
    """A gzip-compressed newc initramfs: busybox, /init, /dev/console, and the
    modules as /lib/modules/NN-name.ko (the glob order is the insmod order)."""
    cpio = _Cpio()
    for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "lib",
                      "lib/modules"):
        cpio.directory(directory)
    cpio.add("dev/console", 0o020600, rdev=(5, 1))
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.symlink("bin/sh", "busybox")
    for index, (name, data) in enumerate(modules, 1):
        cpio.file(f"lib/modules/{index:02d}-{name}.ko", data)
    cpio.file("init", init.encode(), 0o755)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def _image_digest(flavour: str) -> str:
    return hashlib.sha256(f"{IMAGE_FORMAT}\0{flavour}\0{INIT_SCRIPT}".encode()).hexdigest()[:16]


def ensure_guest(cache_dir: Path = DEFAULT_CACHE, flavour: str = "amd64") -> GuestImage:
    """The guest's kernel and initramfs in `cache_dir`, built on first use and re-used
    after (the kernel version is the one current at that first build; remove the
    directory to take a newer one). Downloads linux-image-`flavour`'s kernel package
    with `apt-get download` (needs Debian's package index, and busybox-static installed:
    scripts/setup.sh sees to both). Safe to call from parallel processes."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / "guest.json"
    digest = _image_digest(flavour)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            manifest = json.loads(manifest_path.read_text())
            image = GuestImage(cache_dir / manifest["kernel"], cache_dir / manifest["initrd"], manifest["package"],
                               manifest["release"], tuple(manifest["modules"]))
            if manifest.get("digest") == digest and image.kernel.is_file() and image.initrd.is_file():
                return image
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if not BUSYBOX.is_file():
            raise GuestError(f"{BUSYBOX} is missing: install busybox-static (scripts/setup.sh does)")
        busybox = BUSYBOX.read_bytes()
        if not _is_static(busybox):
            raise GuestError(f"{BUSYBOX} is dynamically linked: install busybox-static (it replaces busybox)")
        package = kernel_package(flavour)
        deb = _download(package, cache_dir)
        release = package.removeprefix("linux-image-")
        with tempfile.TemporaryDirectory(prefix="extract-", dir=cache_dir) as tmp:
            root = Path(tmp)
            done = _run(["dpkg-deb", "-x", str(deb), str(root)])
            if done.returncode != 0:
                raise GuestError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()}")
            vmlinuz = root / "boot" / f"vmlinuz-{release}"
            if not vmlinuz.is_file():
                raise GuestError(f"{deb.name} has no boot/vmlinuz-{release}")
            modules = needed_modules(root, release)
            kernel = cache_dir / f"vmlinuz-{release}"
            shutil.copyfile(vmlinuz, kernel.with_suffix(".part"))
            os.replace(kernel.with_suffix(".part"), kernel)
        initrd = cache_dir / f"initrd-{release}-{digest}.img"
        part = initrd.with_suffix(".part")
        part.write_bytes(build_initramfs(busybox, modules))
        os.replace(part, initrd)
        for old in cache_dir.glob("initrd-*.img"):
            if old != initrd:
                old.unlink()
        image = GuestImage(kernel, initrd, package, release, tuple(name for name, _ in modules))
        manifest_path.write_text(json.dumps({"kernel": kernel.name, "initrd": initrd.name, "package": package,
                                             "release": release, "modules": list(image.modules),
                                             "digest": digest, "flavour": flavour}, indent=1) + "\n")
        return image


# --- QMP ----------------------------------------------------------------------

class QmpError(GuestError):
    """QMP answered with an error, or could not be reached."""


class Qmp:
    """A tiny QMP client on QEMU's unix socket: greeting, qmp_capabilities, then
    one command at a time; asynchronous events are kept in `events`."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._id = 0

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
            self._sock, self._file = sock, sock.makefile("rb")
            greeting = self._read()
            if "QMP" not in greeting:
                raise QmpError(f"{self.path}: not a QMP greeting: {greeting}")
            self._call("qmp_capabilities", {})
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict[str, Any]:
        assert self._file is not None
        line = self._file.readline()
        if not line:
            raise QmpError(f"{self.path}: QEMU closed the QMP connection")
        return json.loads(line)

    def _call(self, command: str, arguments: dict[str, Any]) -> Any:
        assert self._sock is not None
        self._id += 1
        request: dict[str, Any] = {"execute": command, "id": self._id}
        if arguments:
            request["arguments"] = arguments
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            elif reply.get("id") == self._id:
                if "error" in reply:
                    raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
                return reply.get("return")

    def command(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command; its `return` value. Connects (again) when needed."""
        try:
            if self._sock is None:
                self._connect()
            assert self._sock is not None
            self._sock.settimeout(self.timeout)
            return self._call(command, arguments or {})
        except (OSError, ValueError) as err:
            self.close()
            raise QmpError(f"{self.path}: {command}: {err}") from err

    def close(self) -> None:
        for thing in (self._file, self._sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass
        self._sock = self._file = None


# --- QEMU -----------------------------------------------------------------------

@dataclass
class Guest(Daemon):
    """One qemu-system-x86_64 (TCG) running the guest with one virtio-net-pci NIC on
    a vhost-user backend, from a private `directory` (a Daemon: its files are named
    after `name`; start() returns once its QMP socket exists).

    `vhost_server` False: QEMU connects to `vhost_socket`, which the backend serves
    (dpdkvhostuser, testpmd net_vhost client=0), retrying every second until it can
    (its log says "Failed to connect" meanwhile). True: QEMU serves it
    (server=on,wait=off) and the backend connects (dpdkvhostuserclient). Either way
    QEMU finishes starting, boots the guest and answers QMP only once the backend is
    connected (`wait_ready`).
    `incoming`: a migration destination, listening on tcp:127.0.0.1:`incoming_port`.
    `device_props`: more virtio-net-pci properties, e.g. `vucompat frontend-args`'s."""

    image: GuestImage
    directory: Path
    vhost_socket: Path
    vhost_server: bool = False
    name: str = "vm"
    queues: int = 1
    mac: str = "52:54:00:00:00:02"
    ip: str = "192.0.2.2/24"
    peer: str = "192.0.2.1"
    memory_mb: int = 256
    #: vCPUs; Linux uses min(cpus, queue pairs) of a multiqueue NIC's queues
    cpus: int = 1
    machine: str = "q35"
    device_props: Sequence[str] = ()
    #: MSI-X interrupts for the NIC (off: see `device`)
    msix: bool = False
    incoming: bool = False
    incoming_port: int | None = None
    extra_args: Sequence[str] = ()
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    started_at: float | None = field(default=None, init=False)
    _qmp: Qmp | None = field(default=None, init=False, repr=False)

    @property
    def stem(self) -> str:  # type: ignore[override]
        return self.name

    @property
    def qmp_socket(self) -> Path:
        return self.file(".qmp")

    @property
    def serial_log(self) -> Path:
        return self.file(".serial")

    @property
    def incoming_uri(self) -> str:
        """The URI to give the source's `migrate`."""
        if self.incoming_port is None:
            raise GuestError(f"{self.name} is not a migration destination")
        return f"tcp:127.0.0.1:{self.incoming_port}"

    def device(self) -> str:
        """The -device value of the NIC. Without `msix`, `vectors=0` (INTx), whatever
        `device_props` say: QEMU 7.2 under TCG dies (SIGSEGV, no message) as soon as the
        guest's virtio_pci enables a vhost-user NIC with MSI-X."""
        props = ["virtio-net-pci", "netdev=net0", f"mac={self.mac}", "romfile="]
        extra = [p for p in self.device_props if self.msix or not p.startswith("vectors=")]
        if self.queues > 1:
            props.append("mq=on")
        if not self.msix:
            props.append("vectors=0")
        elif self.queues > 1 and not any(p.startswith("vectors=") for p in extra):
            props.append(f"vectors={2 * self.queues + 2}")
        return ",".join(props + extra)

    def command(self) -> list[str]:
        """The whole QEMU command line."""
        chardev = f"socket,id=chr0,path={self.vhost_socket}"
        chardev += ",server=on,wait=off" if self.vhost_server else ",reconnect=1"
        cmd = [QEMU, "-name", self.name, "-accel", "tcg", "-machine", self.machine, "-cpu", "qemu64",
               "-smp", str(self.cpus), "-m", str(self.memory_mb), "-nodefaults", "-no-user-config",
               "-display", "none", "-no-reboot",
               "-object", f"memory-backend-memfd,id=mem,size={self.memory_mb}M,share=on",
               "-numa", "node,memdev=mem",
               "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
               "-append", f"console=ttyS0 quiet panic=-1 vuc.ip={self.ip} vuc.peer={self.peer}",
               "-serial", f"file:{self.serial_log}",
               "-qmp", f"unix:{self.qmp_socket},server=on,wait=off", "-pidfile", str(self.pidfile),
               "-chardev", chardev,
               "-netdev", f"vhost-user,id=net0,chardev=chr0,queues={self.queues}",
               "-device", self.device()]
        if self.incoming:
            cmd += ["-incoming", self.incoming_uri]
        return cmd + list(self.extra_args)

    def launch(self, timeout: float) -> None:
        """Start QEMU (start() returns once its QMP socket exists; the guest boots on:
        see `wait_booted`). Its stdout and stderr go to `log`."""
        if self.incoming and self.incoming_port is None:
            self.incoming_port = free_port()
        for stale in (self.qmp_socket, self.serial_log, self.pidfile):
            stale.unlink(missing_ok=True)
        with open(self.log, "w") as log:  # QEMU writes its pid file itself (-pidfile)
            self.spawn(self.command(), write_pidfile=False, stdin=subprocess.DEVNULL, stdout=log,
                       stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()

    def ready(self) -> bool:
        return self.qmp_socket.exists()

    def error(self, message: str) -> GuestError:
        crash = self.crash_signal()
        return GuestError(f"QEMU {message}{f' (killed by {crash})' if crash else ''}: "
                          f"{self.log_text().strip()[-2000:]}", crash)

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a QMP command; its return value (a dict for most). Keyword arguments
        have `_` turned into `-` (downtime_limit= -> "downtime-limit")."""
        if self._qmp is None:
            self._qmp = Qmp(self.qmp_socket)
        args = {**(arguments or {}), **{k.replace("_", "-"): v for k, v in kwargs.items()}}
        try:
            return self._qmp.command(command, args)
        except QmpError as err:
            if self.process is not None and self.process.poll() is not None:
                raise self._gone(f"{command}: ") from err
            raise

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Wait until QMP answers (QEMU blocks until its vhost-user backend is
        connected); the run state ("running", or "inmigrate" for a destination)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"QEMU {self.name} did not answer QMP in {timeout:.0f} s (vhost-user backend "
                                   f"not connected?): {self.log_text().strip()[-500:]}")
            if self._qmp is None:
                self._qmp = Qmp(self.qmp_socket)
            self._qmp.timeout = min(remaining, 30.0)
            try:
                return self.status()
            except QmpError:
                time.sleep(0.1)
            finally:
                if self._qmp is not None:
                    self._qmp.timeout = 30.0

    def status(self) -> str:
        """The run state: running, paused, inmigrate, postmigrate, finish-migrate, ..."""
        return self.qmp("query-status")["status"]

    def cont(self) -> None:
        """Resume a stopped guest (e.g. a source left paused by a failed migration)."""
        self.qmp("cont")

    def migrate(self, uri: str, downtime_limit_ms: int | None = None, max_bandwidth: int | None = None) -> None:
        """Start a live migration to `uri` (e.g. a destination's `incoming_uri`); QEMU's
        default capabilities; the parameters only when given (bytes/s, ms)."""
        params: dict[str, Any] = {}
        if downtime_limit_ms is not None:
            params["downtime-limit"] = downtime_limit_ms
        if max_bandwidth is not None:
            params["max-bandwidth"] = max_bandwidth
        if params:
            self.qmp("migrate-set-parameters", params)
        self.qmp("migrate", uri=uri)

    def wait_migration(self, timeout: float = 120.0) -> dict[str, Any]:
        """Poll query-migrate until completed, failed or cancelled; its last answer
        (status, total-time and downtime in ms, ram stats, error-desc)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.qmp("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"migration from {self.name} not done in {timeout:.0f} s: {info}")
            time.sleep(0.1)

    def migrate_to(self, destination: Guest, timeout: float = 120.0, **parameters: Any) -> dict[str, Any]:
        """Migrate to a started `destination` (incoming=True) and wait; query-migrate's answer."""
        self.migrate(destination.incoming_uri, **parameters)
        return self.wait_migration(timeout)

    def serial_text(self) -> str:
        """Everything the guest printed on its serial console so far."""
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        """QEMU's own messages (e.g. "Failed to load virtio-net:virtio")."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ticks(self) -> list[int]:
        """The counters of the guest's tick lines seen on this QEMU's console."""
        return [int(m.group(1)) for m in TICK.finditer(self.serial_text())]

    def traffic(self) -> tuple[int, int] | None:
        """eth0's (rx_packets, tx_packets) in the last tick line."""
        found = TICK.findall(self.serial_text())
        return (int(found[-1][1]), int(found[-1][2])) if found else None

    def features(self) -> int | None:
        """The virtio features the guest negotiated (bit i set = character i is "1"
        in /sys/class/net/eth0/device/features), once the guest printed them."""
        found = re.search(r"vucguest features ([01]+)", self.serial_text())
        return sum(1 << i for i, c in enumerate(found.group(1)) if c == "1") if found else None

    def queue_counts(self) -> tuple[int, int] | None:
        """eth0's (rx, tx) queue counts the guest printed."""
        found = re.search(r"vucguest queues rx=(\d+) tx=(\d+)", self.serial_text())
        return (int(found.group(1)), int(found.group(2))) if found else None

    def crash_signal(self) -> str | None:
        """The signal that killed QEMU ("SIGSEGV"), None while it runs or after a normal exit."""
        code = self.process.poll() if self.process is not None else None
        return signal.Signals(-code).name if code is not None and code < 0 else None

    def _gone(self, what: str = "") -> GuestError:
        code = self.process.poll() if self.process is not None else None
        crash = self.crash_signal()
        how = f"killed by {crash}" if crash else f"exit code {code}"
        return GuestError(f"QEMU {self.name} is gone ({what}{how}): {self.log_text().strip()[-2000:]}", crash)

    def _check_alive(self) -> None:
        if not self.running():
            raise self._gone()

    def wait_booted(self, timeout: float = 120.0) -> float:
        """Wait for the guest's features line and first tick; seconds since `start`."""
        deadline = time.monotonic() + timeout
        while not (self.features() is not None and self.ticks()):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"guest {self.name} did not boot in {timeout:.0f} s; console:\n"
                                   f"{self.serial_text()[-2000:]}")
            time.sleep(0.1)
        return time.monotonic() - (self.started_at or 0.0)

    def wait_ticks(self, after: int = 0, timeout: float = 60.0) -> int:
        """Wait until this console shows a tick counter above `after`; the newest counter."""
        deadline = time.monotonic() + timeout
        while True:
            ticks = self.ticks()
            if ticks and ticks[-1] > after:
                return ticks[-1]
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"guest {self.name}: no tick after {after} in {timeout:.0f} s "
                                   f"(last {ticks[-1] if ticks else None})")
            time.sleep(0.1)

    def quit(self) -> None:
        """QMP quit; wait up to 10 s for QEMU to exit. QMP is silent while QEMU waits
        for its backend: do not wait long for an answer."""
        if self._qmp is None:
            self._qmp = Qmp(self.qmp_socket)
        self._qmp.timeout = 2
        self.qmp("quit")
        assert self.process is not None
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Quit QEMU (QMP quit, else SIGTERM/SIGKILL by pid); always reaps it."""
        super().stop(timeout)
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
