"""The relays in a process of their own, so that VMs keep their links while the
agent stops, restarts, crashes or is upgraded (docs/agent.md, "The relay process").

`vucompat relay serve` (RelayDaemon) runs a RelayManager and a control socket
(<relay-dir>/relayd.ctl, mode 0600). The agent (RelayClient) connects to it and
sends the relays it wants; the relay process sends back the violations it saw.
What it keeps:
- the specs it serves, in <relay-dir>/relayd.state (written on every change): a relay
  process that crashed and was started again (by systemd, or by the agent that
  started it) listens on the same paths at once, before any agent says anything;
  the connections of the crash are lost, as in an ovs-vswitchd crash, and the
  frontends and OVS reconnect as they do then;
- nothing else: the connections themselves are handed over on an upgrade. SIGHUP
  (or `vucompat relay upgrade`) freezes the relays, writes their state (specs, the
  fds of listeners and connections, what each side has half read or queued) to a
  memfd, and re-executes the installed program in the same process (same pid, same
  fds): the new code adopts every connection, and no frontend or OVS sees a
  disconnect.

Control messages are JSON lines: {"op": "ensure", "id": N, "specs": [...]} ->
{"ok": true, "id": N, "changed": bool}; {"op": "status"} -> counts and identity;
{"op": "upgrade"} -> {"ok": true}, then the re-exec. A connection that has sent an
ensure receives {"event": "violation", "port": P, "reason": R} lines.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from vucompat.agent import VERSION
from vucompat.agent.guard import RelayAccess
from vucompat.core.portview import RelaySpec
from vucompat.vhostuser.relay import DEFAULT_MAX_PER_PORT, RelayManager, nofile_limit, spec_from_json, spec_to_json

log = logging.getLogger("vucompat.relayd")

CONTROL_NAME, STATE_NAME, PID_NAME, LOCK_NAME = "relayd.ctl", "relayd.state", "relayd.pid", "relayd.lock"
#: a control line longer than this closes the control connection (a spec is ~300 bytes)
MAX_LINE = 16 * 1024 * 1024
#: the agent starts the relay process again at most this often
SPAWN_INTERVAL = 2.0


class RelayDaemonError(Exception):
    """The relay process cannot start (another one serves the directory, a path is unusable)."""


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_saved_specs(path: Path) -> dict[str, RelaySpec]:
    """The specs a relay process saved in `path`; {} when there is no such file.
    Raises RelayDaemonError when it cannot be read."""
    try:
        data = json.loads(path.read_text())
        return {spec.name: spec for spec in map(spec_from_json, data["specs"])}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RelayDaemonError(f"{path}: cannot read the saved relays: {err}") from None


class _Control:
    """One control connection: a non-blocking socket, its partial line, whether it is an agent's."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.agent = False

    def send(self, data: dict[str, Any]) -> None:
        """Send one line (blocking up to 2 s: the agent reads its control channel). Raises OSError."""
        self.sock.settimeout(2.0)
        try:
            self.sock.sendall(json.dumps(data).encode() + b"\n")
        finally:
            self.sock.setblocking(False)


class RelayDaemon:
    """`vucompat relay serve`: relays for the ports the agent names, in `relay_dir`.
    `argv`: the command line's arguments after the program (for the re-exec of an
    upgrade); `resume_fd`: the state an upgrade handed over (None: a fresh start)."""

    def __init__(self, relay_dir: Path, access: RelayAccess, max_per_port: int = DEFAULT_MAX_PER_PORT,
                 argv: Sequence[str] = (), resume_fd: int | None = None) -> None:
        self.relay_dir = relay_dir
        self.access = access
        self.max_per_port = max_per_port
        self.argv = list(argv)
        self.resume_fd = resume_fd
        self.control_path = relay_dir / CONTROL_NAME
        self.state_path = relay_dir / STATE_NAME
        self.pid_path = relay_dir / PID_NAME
        self.selector = selectors.DefaultSelector()
        self.controls: dict[int, _Control] = {}
        self.violations: dict[str, str] = {}
        self._violations_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._stop = False
        self._upgrade = False
        self.generation = 0
        self.since = time.time()
        self.exec_at = time.time()

    # -- start -------------------------------------------------------------------
    def _start(self) -> None:
        if self.resume_fd is not None:
            with os.fdopen(self.resume_fd, "rb") as f:
                state = json.loads(f.read())
            self.lock_fd, self.generation, self.since = state["lock"], state["generation"], state["since"]
            os.set_inheritable(self.lock_fd, False)
            self.listener = socket.socket(fileno=state["control"])
            os.set_inheritable(self.listener.fileno(), False)
            self.manager = self._manager(state["relay"])
            log.info("vucompat relay: upgraded in place (generation %d, version %s): %d relay(s), %d connection(s) "
                     "adopted", self.generation, VERSION, len(self.manager.listeners), len(state["relay"]["pairs"]))
        else:
            self.access.prepare(self.relay_dir)
            self.lock_fd = self._lock()
            self.listener = self._listen_control()
            saved: dict[str, RelaySpec] = {}
            try:
                saved = read_saved_specs(self.state_path)
            except RelayDaemonError as err:
                log.error("%s; starting with none (the agent sends them)", err)
            self.manager = self._manager(None)
            if saved:
                self.manager.ensure(saved)
                log.info("vucompat relay: serving the %d relay(s) saved in %s", len(saved), self.state_path)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        _write_atomically(self.pid_path, f"{os.getpid()}\n")

    def _manager(self, adopt: dict[str, Any] | None) -> RelayManager:
        return RelayManager(self._on_violation, self.access.mode, self.access.group, self.max_per_port, adopt=adopt)

    def _lock(self) -> int:
        """Hold <relay-dir>/relayd.lock for the life of the process (kept across an upgrade).
        Raises RelayDaemonError when another relay process holds it."""
        path = self.relay_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.pid_path.read_text().strip() if self.pid_path.exists() else "?"
            raise RelayDaemonError(f"another vucompat relay (pid {pid}) serves {self.relay_dir}: stop it first, "
                                   "or give this one another --relay-dir") from None
        return fd

    def _listen_control(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control_path.unlink(missing_ok=True)  # the lock is ours: a socket left here is a dead process's
        old = os.umask(0o177)
        try:
            sock.bind(str(self.control_path))
        except OSError as err:
            sock.close()
            raise RelayDaemonError(f"cannot listen on {self.control_path}: {err.strerror}") from None
        finally:
            os.umask(old)
        sock.listen(16)
        return sock

    # -- run ---------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (then every relay closes); SIGHUP upgrades in
        place. Raises RelayDaemonError when it cannot start."""
        self._start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)
        log.info("vucompat relay: pid %d, control %s, %d open files at most", os.getpid(), self.control_path,
                 nofile_limit())
        while not self._stop:
            for key, _events in self.selector.select(1.0):
                try:
                    if key.data == "wake":
                        os.read(self._wake_r, 4096)
                    elif key.data is None:
                        self._accept_control()
                    else:
                        self._read_control(key.data)
                except Exception:  # noqa: BLE001 - the control channel must never take the relays down
                    log.exception("relay: control channel error")
            self._send_violations()
            if not self.manager.thread.is_alive() and not self._stop:
                log.error("relay: the serving thread is gone; starting it again")
                self.manager.thread = threading.Thread(target=self.manager.supervise, name="vucompat-relay",
                                                       daemon=True)
                self.manager.thread.start()
            if self._upgrade:
                self._upgrade = False
                self._reexec()
        self.manager.stop()
        self.pid_path.unlink(missing_ok=True)
        log.info("vucompat relay: stopped (every relay closed)")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._upgrade = True
        else:
            self._stop = True
        os.write(self._wake_w, b"x")

    def _on_violation(self, port: str, reason: str) -> None:
        with self._violations_lock:
            self.violations[port] = reason
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _send_violations(self) -> None:
        agents = [c for c in self.controls.values() if c.agent]
        if not agents:
            return  # kept until an agent is there to record them
        with self._violations_lock:
            violations, self.violations = self.violations, {}
        for port, reason in violations.items():
            for control in agents:
                self._send(control, {"event": "violation", "port": port, "reason": reason})

    def _accept_control(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        except OSError as err:
            log.warning("relay: cannot accept a control connection: %s", err.strerror)
            time.sleep(0.05)
            return
        sock.setblocking(False)
        control = _Control(sock)
        self.controls[sock.fileno()] = control
        self.selector.register(sock, selectors.EVENT_READ, control)

    def _read_control(self, control: _Control) -> None:
        try:
            data = control.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(control)
            return
        control.buffer += data
        if len(control.buffer) > MAX_LINE:
            log.warning("relay: a control line over %d bytes: connection closed", MAX_LINE)
            self._drop(control)
            return
        while b"\n" in control.buffer and control.sock.fileno() >= 0:
            line, _, rest = bytes(control.buffer).partition(b"\n")
            control.buffer = bytearray(rest)
            self._command(control, line)

    def _command(self, control: _Control, line: bytes) -> None:
        try:
            request = json.loads(line)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            self._send(control, {"ok": False, "error": "not a JSON object with an op"})
            return
        if op == "ensure":
            try:
                specs = {s.name: s for s in map(spec_from_json, request["specs"])}
            except (KeyError, TypeError, ValueError) as err:
                self._send(control, {"ok": False, "id": request.get("id"), "error": f"bad specs: {err}"})
                return
            control.agent = True
            changed = self.manager.ensure(specs)
            if changed:
                self._save(specs)
            self._send(control, {"ok": True, "id": request.get("id"), "changed": changed})
            self._send_violations()
        elif op == "status":
            self._send(control, {"ok": True, **self.status()})
        elif op == "upgrade":
            self._send(control, {"ok": True, "pid": os.getpid()})
            self._upgrade = True
        else:
            self._send(control, {"ok": False, "error": f"unknown op {op!r}"})

    def status(self) -> dict[str, Any]:
        """What `vucompat relay status` prints: identity, counts, open files."""
        return {"pid": os.getpid(), "version": VERSION, "generation": self.generation, "since": self.since,
                "exec_at": self.exec_at, **self.manager.counts(), "open_files": len(os.listdir("/proc/self/fd")),
                "open_files_limit": nofile_limit(), "control": str(self.control_path)}

    def _save(self, specs: dict[str, RelaySpec]) -> None:
        try:
            _write_atomically(self.state_path, json.dumps({"specs": [spec_to_json(s) for s in specs.values()]}))
        except OSError as err:
            log.error("cannot save the relays in %s: %s (a restart waits for the agent to name them)",
                      self.state_path, err.strerror)

    def _send(self, control: _Control, data: dict[str, Any]) -> None:
        try:
            control.send(data)
        except OSError:
            self._drop(control)

    def _drop(self, control: _Control) -> None:
        self.controls.pop(control.sock.fileno(), None)
        try:
            self.selector.unregister(control.sock)
        except (KeyError, ValueError):
            pass
        control.sock.close()

    # -- upgrade -----------------------------------------------------------------
    def _reexec(self) -> None:
        """Hand every relay and connection to the installed program, in this process.
        When the exec fails, serve them again here."""
        for control in list(self.controls.values()):
            self._drop(control)  # the agent reconnects (its connection holds no VM's state)
        self.selector.unregister(self.listener)
        relay_state = self.manager.freeze()
        control_fd = self.listener.detach()
        state = {"relay": relay_state, "control": control_fd, "lock": self.lock_fd,
                 "generation": self.generation + 1, "since": self.since}
        for fd in (control_fd, self.lock_fd):
            os.set_inheritable(fd, True)
        memfd = os.memfd_create("vucompat-relay-state", 0)
        os.write(memfd, json.dumps(state).encode())
        os.lseek(memfd, 0, os.SEEK_SET)
        args = [sys.executable, "-m", "vucompat", *self.argv, "--resume-fd", str(memfd)]
        log.info("vucompat relay: upgrading in place: %d relay(s), %d connection(s) handed over (%s)",
                 len(relay_state["listeners"]), len(relay_state["pairs"]), " ".join(args))
        for handler in logging.getLogger().handlers:
            handler.flush()
        try:
            os.execv(sys.executable, args)
        except OSError as err:
            log.error("vucompat relay: the upgrade failed (%s): serving on with this program", err)
            os.close(memfd)
            self.listener = socket.socket(fileno=control_fd)
            self.listener.setblocking(False)
            self.selector.register(self.listener, selectors.EVENT_READ, None)
            self.manager = self._manager(relay_state)


# -- the agent's side ------------------------------------------------------------------
class RelayClient:
    """The agent's handle on the relay process at `control`: the same ensure() as a
    RelayManager, and `on_violation(port, reason)` called from its own thread. It
    reconnects by itself and sends the wanted relays again after every reconnect;
    with `spawn` (a command), it starts the relay process when none answers (at most
    every SPAWN_INTERVAL seconds). stop() leaves the relays serving."""

    def __init__(self, control: Path, on_violation: Callable[[str, str], None],
                 spawn: Sequence[str] | None = None) -> None:
        self.control = control
        self.on_violation = on_violation
        self.spawn = list(spawn) if spawn else None
        self._cond = threading.Condition()
        self._wanted: dict[str, RelaySpec] | None = None
        self._wanted_id = 0
        self._acked_id = 0
        self._closing = False
        self._spawned_at = -SPAWN_INTERVAL
        self._child: subprocess.Popen | None = None
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self.thread = threading.Thread(target=self._run, name="vucompat-relay-client", daemon=True)
        self.thread.start()

    def ensure(self, specs: dict[str, RelaySpec], timeout: float = 5.0) -> bool:
        """Have the relay process serve exactly `specs`. Returns once it has (or after
        `timeout` seconds; 0: do not wait); True when `specs` differ from the last call."""
        with self._cond:
            if specs == self._wanted:
                return False
            self._wanted = dict(specs)
            self._wanted_id += 1
            wanted_id = self._wanted_id
        self._wake()
        if timeout:
            with self._cond:
                if not self._cond.wait_for(lambda: self._acked_id >= wanted_id or self._closing, timeout):
                    log.warning("the relay process (%s) has not confirmed the relays within %gs", self.control,
                                timeout)
        return True

    def stop(self) -> None:
        """Close the control connection; the relay process and its relays go on."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._wake()
        self.thread.join(timeout=5)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _run(self) -> None:
        sock: socket.socket | None = None
        sent_id = 0
        buffer = b""
        backoff = 0.05
        said_down = False
        while not self._closing:
            if sock is None:
                sock = self._connect()
                if sock is None:
                    if not said_down:
                        log.warning("the relay process does not answer on %s%s", self.control,
                                    ": starting it" if self.spawn else "; waiting for it")
                        said_down = True
                    self._wait(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                if said_down:
                    log.info("connected to the relay process on %s", self.control)
                sent_id, buffer, backoff, said_down = 0, b"", 0.05, False
            try:
                with self._cond:
                    wanted, wanted_id = self._wanted, self._wanted_id
                if wanted is not None and sent_id != wanted_id:
                    line = {"op": "ensure", "id": wanted_id, "specs": [spec_to_json(s) for s in wanted.values()]}
                    sock.settimeout(5.0)
                    sock.sendall(json.dumps(line).encode() + b"\n")
                    sent_id = wanted_id
                if not self._wait(1.0, sock):
                    continue
                sock.setblocking(False)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionResetError(errno.ECONNRESET, "the relay process closed its control connection")
                buffer += data
                while b"\n" in buffer:
                    line_bytes, _, buffer = buffer.partition(b"\n")
                    self._received(json.loads(line_bytes))
            except (OSError, ValueError) as err:
                log.warning("lost the relay process's control connection (%s): reconnecting", err)
                sock.close()
                sock = None
                said_down = True
        if sock is not None:
            sock.close()

    def _received(self, message: dict[str, Any]) -> None:
        if message.get("event") == "violation":
            self.on_violation(str(message["port"]), str(message["reason"]))
        elif "id" in message:
            if not message.get("ok"):
                log.error("the relay process refused the relays: %s", message.get("error"))
            with self._cond:
                self._acked_id = max(self._acked_id, int(message["id"]))
                self._cond.notify_all()

    def _wait(self, seconds: float, sock: socket.socket | None = None) -> bool:
        """Wait up to `seconds` for `sock` to be readable or a wake; True when it is readable."""
        import select

        fds = [self._wake_r] + ([sock] if sock is not None else [])
        readable, _, _ = select.select(fds, [], [], seconds)
        if self._wake_r in readable:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        return sock is not None and sock in readable

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.control))
            return sock
        except OSError:
            sock.close()
        if self.spawn and time.monotonic() - self._spawned_at >= SPAWN_INTERVAL:
            if self._child is not None:
                self._child.poll()  # reap one that died
            self._spawned_at = time.monotonic()
            try:
                self._child = subprocess.Popen(self.spawn, start_new_session=True, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, close_fds=True)
                log.info("started the relay process (pid %d): %s", self._child.pid, " ".join(self.spawn))
            except OSError as err:
                log.error("cannot start the relay process (%s): %s", " ".join(self.spawn), err)
        return None


def request(control: Path, op: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one control request (status, upgrade) to the relay process at `control`;
    return its answer. Raises OSError when it does not answer, ValueError on a bad answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(control))
        sock.sendall(json.dumps({"op": op}).encode() + b"\n")
        buffer = b""
        while b"\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError(errno.ECONNRESET, f"{control}: closed without an answer")
            buffer += data
        return json.loads(buffer.partition(b"\n")[0])


def spawn_command(relay_dir: Path, access: RelayAccess, log_file: Path | None) -> list[str]:
    """The command with which the agent starts the relay process for `relay_dir`."""
    command = [sys.executable, "-m", "vucompat", "relay", "serve", "--relay-dir", str(relay_dir)]
    if access.group is not None:
        command += ["--relay-group", str(access.group)]
    if access.socket_mode is not None:
        command += ["--relay-socket-mode", f"{access.socket_mode:04o}"]
    if log_file is not None:
        command += ["--log-file", str(log_file)]
    return command
