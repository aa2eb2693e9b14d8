"""Real vhost-user parts for tests, the demo and the benchmarks: ovs-vswitchd-dpdk
without hugepages on a private ovsdb-server, and dpdk-testpmd as a virtio-user
frontend (the guest side). Both are Daemons: they run from a private directory, are
stopped by pid, and never touch the system's OVS.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from vucompat_testing.daemon import Daemon

VSWITCHD_DPDK = Path("/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk")


@dataclass
class Vswitchd(Daemon):
    """ovs-vswitchd-dpdk with DPDK on --no-huge memory, a netdev bridge `bridge`,
    serving vhost-user sockets from `directory`/vhost."""

    directory: Path
    remote: str
    bridge: str = "br0"
    #: Open_vSwitch other_config set before the daemon starts (e.g. userspace-tso-enable,
    #: which OVS 3.1 reads only at start)
    other_config: dict[str, str] = field(default_factory=dict)
    #: run the daemon in a network namespace of its own (`unshare -n`): two userspace
    #: datapaths clash in one (their tap devices); unix sockets work across namespaces
    own_netns: bool = False
    #: the daemon's umask (None: ours); DPDK binds dpdkvhostuser sockets 0777 & ~umask
    umask: int | None = None
    stem: ClassVar[str] = "ovs-vswitchd"

    @property
    def ctl(self) -> Path:
        return self.file(".ctl")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "OVS_RUNDIR": str(self.directory), "OVS_LOGDIR": str(self.directory),
                "OVS_DBDIR": str(self.directory)}

    def vsctl(self, *args: str, wait: bool = True) -> str:
        """Run ovs-vsctl against this switch's database; return its output."""
        cmd = ["ovs-vsctl", f"--db={self.remote}", "--timeout=60", *([] if wait else ["--no-wait"]), *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, env=self.env).stdout.strip()

    def launch(self, timeout: float) -> None:
        """Configure DPDK in the database, start the daemon (detached), and add the
        bridge (ovs-vsctl waits until the daemon has it)."""
        (self.directory / "vhost").mkdir(parents=True, exist_ok=True)
        prefix = f"vucvs{os.getpid()}x{abs(hash(str(self.directory))) % 100000}"
        self.vsctl("init", wait=False)
        # 2 GB: OVS's shared memory pool asks for 262144 mbufs (MAX_NB_MBUF, ~760 MB;
        # lib/netdev-dpdk.c at v3.1.0, lines 115 and 708) and halves the request only on
        # ENOMEM, while --no-huge memory fails it with ENOBUFS: in 1 GB, no port got a pool
        self.vsctl("set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                   f'other_config:dpdk-extra="--no-pci --no-huge -m 2048 --legacy-mem --file-prefix={prefix}"',
                   "other_config:pmd-cpu-mask=0x2", "other_config:vhost-sock-dir=vhost",
                   *(f"other_config:{k}={v}" for k, v in self.other_config.items()), wait=False)
        self.run_detached([str(VSWITCHD_DPDK), self.remote, f"--unixctl={self.ctl}"], env=self.env, timeout=timeout,
                          prefix=["unshare", "-n"] if self.own_netns else [],
                          umask=-1 if self.umask is None else self.umask)
        self.vsctl("--may-exist", "add-br", self.bridge, "--", "set", "bridge", self.bridge, "datapath_type=netdev")

    def datapath_failures(self) -> list[str]:
        """The lines of its log where the datapath could not take a port: a memory
        pool it could not create (OVS then drops the port from the datapath, while
        the vhost-user connection and the Interface status go on, so only traffic
        and packet counters show it). Empty in a sound test environment."""
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if "Failed to create memory pool" in line or "Failed to set interface" in line]

    def add_vhost_port(self, name: str, socket: Path | None = None, compat: str | None = None,
                       client: bool = True) -> None:
        """ovs-vsctl add-port, as a user would: dpdkvhostuserclient (the frontend
        serves `socket`) or dpdkvhostuser (OVS serves vhost/<name>)."""
        settings = [f"type={'dpdkvhostuserclient' if client else 'dpdkvhostuser'}"]
        if client:
            settings.append(f"options:vhost-server-path={socket}")
        if compat is not None:
            settings.append(f"options:vhost-compat={compat}")
        self.vsctl("add-port", self.bridge, name, "--", "set", "Interface", name, *settings)

    def frontend_socket(self, name: str, timeout: float = 30.0) -> Path:
        """Where a frontend of dpdkvhostuser port `name` must connect, once the agent
        has recorded the port: the port's relay when the agent mirrors one
        (external_ids:vhost-compat-relay), else OVS's own socket. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            ids = self.vsctl("--if-exists", "get", "Interface", name, "external_ids")
            if "vhost-compat-state" in ids:
                relay = self.vsctl("--if-exists", "get", "Interface", name, "external_ids:vhost-compat-relay")
                return Path(relay.strip('"')) if relay else self.directory / "vhost" / name
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agent did not record {name} within {timeout:g}s")
            time.sleep(0.05)

    def quit(self) -> None:
        """ovs-appctl exit --cleanup: the daemon removes its ports and sockets."""
        subprocess.run(["ovs-appctl", "-t", str(self.ctl), "exit", "--cleanup"], capture_output=True, timeout=30,
                       env=self.env)


@dataclass
class Testpmd(Daemon):
    """dpdk-testpmd with a virtio_user vdev: a real vhost-user frontend, named `name`,
    logging to `directory`/testpmd-<name>.log. With `server` it serves `socket`
    (default `directory`/<name>.sock, for dpdkvhostuserclient ports); otherwise it
    connects to `socket` (OVS's, or a relay's). It idles in interactive mode (stdin
    kept open) and is told `quit` when stopped."""

    directory: Path
    name: str
    socket: Path | None = None
    server: bool = True
    queues: int = 1
    queue_size: int = 256
    packed: bool = False
    #: more EAL arguments, e.g. ["--log-level=pmd.net.virtio.*:debug"]
    eal_args: tuple[str, ...] = ()
    __test__ = False  # not a pytest test class, despite its name

    def __post_init__(self) -> None:
        if self.socket is None:
            self.socket = self.directory / f"{self.name}.sock"

    @property
    def stem(self) -> str:  # type: ignore[override]
        return f"testpmd-{self.name}"

    def launch(self, timeout: float) -> None:
        prefix = f"vuctp{os.getpid()}x{abs(hash(str(self.socket))) % 100000}"
        vdev = (f"net_virtio_user0,path={self.socket},server={1 if self.server else 0},queues={self.queues},"
                f"queue_size={self.queue_size}" + (",packed_vq=1" if self.packed else ""))
        cmd = ["dpdk-testpmd", "-l", "0,1", "--no-pci", "--no-huge", "-m", "512", f"--file-prefix={prefix}",
               f"--vdev={vdev}", *self.eal_args, "--", "-i", "--total-num-mbufs=16384", f"--rxq={self.queues}",
               f"--txq={self.queues}"]
        with open(self.log, "w") as log:
            self.spawn(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        """As a server: once it has created its socket."""
        return not self.server or (self.socket is not None and self.socket.exists())

    def quit(self) -> None:
        """`quit` on its prompt; wait up to 10 s for it to exit."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b"quit\n")
        self.process.stdin.flush()
        self.process.wait(timeout=10)
