"""The masking relay: stands on a port's vhost-user control socket between the
frontend (QEMU, testpmd) and OVS, so the frontend is offered no more than the
port's mode.

Replies are rewritten: GET_FEATURES (virtio mask; VHOST_F_LOG_ALL always passes, the
relay must never be why a migration fails), GET_PROTOCOL_FEATURES, GET_QUEUE_NUM
(capped at max_queue_pairs). A SET_FEATURES, SET_PROTOCOL_FEATURES or SET_VRING_NUM
beyond the mode closes the connection and is reported (never passed on). Everything
else, file descriptors included, passes unchanged; the data path (shared memory,
eventfds) never goes through here.

One thread serves every relay of the agent with a selector: a malformed or
oversized message closes that one connection; other ports are unaffected.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from vucompat.core import catalog
from vucompat.vhostuser import protocol as vu
from vucompat.core.portview import RelaySpec

log = logging.getLogger("vucompat.relay")

LOG_ALL = catalog.lookup("VHOST_F_LOG_ALL").value
#: how long a connected side waits for the other side's socket to appear
CONNECT_PATIENCE = 30.0
#: the first retry of a pending connection, doubled after each failure up to CONNECT_RETRY_MAX:
#: a frontend that starts at once is reached at once, one that takes seconds costs no busy loop
CONNECT_RETRY, CONNECT_RETRY_MAX = 0.05, 1.0


@dataclass
class _Side:
    sock: socket.socket
    reader: vu.Reader
    role: str  # "frontend" | "backend"


@dataclass
class _Pair:
    spec: RelaySpec
    accepted: _Side
    other: _Side | None = None
    started: float = field(default_factory=time.monotonic)
    #: when to try to connect the other side next, and the wait after that
    next_try: float = 0.0
    retry: float = CONNECT_RETRY

    def sides(self) -> list[_Side]:
        return [s for s in (self.accepted, self.other) if s is not None]

    def peer(self, side: _Side) -> _Side | None:
        return self.other if side is self.accepted else self.accepted


class Violation(Exception):
    """The frontend asked for more than the mode: close, report."""


class RelayManager:
    """Runs the relays of one agent in one thread. `ensure()` is called from the
    agent's thread; `on_violation(port, reason)` is called from the relay thread.
    Each listening socket gets `socket_mode` (and `socket_group`, a gid) after bind
    and before listen, so the agent's umask never decides who may connect (None:
    leave what bind made)."""

    def __init__(self, on_violation: Callable[[str, str], None], socket_mode: int | None = None,
                 socket_group: int | None = None) -> None:
        self.on_violation = on_violation
        self.socket_mode = socket_mode
        self.socket_group = socket_group
        self.selector = selectors.DefaultSelector()
        self.specs: dict[str, RelaySpec] = {}
        self.listeners: dict[str, socket.socket] = {}
        self._pairs: dict[int, _Pair] = {}
        self._pending: list[_Pair] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._commands: list[tuple[threading.Event, dict[str, RelaySpec]]] = []
        self._served: dict[str, RelaySpec] = {}
        self._last_violation: dict[str, str] = {}
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="vucompat-relay", daemon=True)
        self.thread.start()

    # -- called from the agent -------------------------------------------------------
    def ensure(self, specs: dict[str, RelaySpec], timeout: float = 5.0) -> bool:
        """Serve exactly `specs` (by port name): start the new, stop the gone.
        Returns when the relay thread has done it (so OVS can be pointed at them),
        or after `timeout` seconds (0: do not wait); True when `specs` differ from
        what it served before."""
        if specs == self._served:
            return False
        done = threading.Event()
        with self._lock:
            self._commands.append((done, dict(specs)))
        os.write(self._wake_w, b"x")
        if timeout:
            done.wait(timeout)
        self._served = dict(specs)
        return True

    def stop(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self.thread.join(timeout=10)

    # -- the relay thread ----------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            timeout = max(0.0, min(p.next_try for p in self._pending) - time.monotonic()) if self._pending else 1.0
            for key, _events in self.selector.select(timeout):
                kind, obj = key.data
                try:
                    if kind == "wake":
                        os.read(self._wake_r, 4096)
                    elif kind == "listen":
                        self._accept(obj)
                    elif kind == "side":
                        self._readable(*obj)
                except Exception:  # a relay bug must not take the other ports down
                    log.exception("relay: unexpected error")
            self._apply_commands()
            self._retry_pending()
        for name in list(self.listeners):
            self._close_listener(name)
        for pair in list(self._pairs.values()) + self._pending:
            self._close(pair)

    def _apply_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for done, specs in commands:
            for name in list(self.specs):
                if name not in specs or specs[name] != self.specs[name]:
                    self._close_listener(name)
            for name, spec in specs.items():
                if name not in self.listeners:
                    self._listen(spec)
            done.set()

    def _listen(self, spec: RelaySpec) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            spec.listen.parent.mkdir(parents=True, exist_ok=True)
            spec.listen.unlink(missing_ok=True)  # a relay that restarts listens on the same path again
            sock.bind(str(spec.listen))
            # who may connect is set before anyone can (listen): frontends, or OVS for client ports
            if self.socket_group is not None:
                os.chown(spec.listen, -1, self.socket_group)
            if self.socket_mode is not None:
                os.chmod(spec.listen, self.socket_mode)
            sock.listen(8)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            log.error("%s: cannot listen on %s: %s", spec.name, spec.listen, err)
            return
        self.specs[spec.name] = spec
        self.listeners[spec.name] = sock
        self.selector.register(sock, selectors.EVENT_READ, ("listen", spec))
        log.info("%s: relay listening on %s -> %s", spec.name, spec.listen, spec.connect)

    def _close_listener(self, name: str) -> None:
        sock = self.listeners.pop(name, None)
        spec = self.specs.pop(name, None)
        if sock is not None:
            self.selector.unregister(sock)
            sock.close()
        if spec is not None:
            spec.listen.unlink(missing_ok=True)
            for pair in [p for p in list(self._pairs.values()) + self._pending if p.spec.name == name]:
                self._close(pair)

    def _accept(self, spec: RelaySpec) -> None:
        listener = self.listeners.get(spec.name)
        if listener is None:
            return
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        role = "backend" if spec.backend_connects else "frontend"
        pair = _Pair(spec, _Side(conn, vu.Reader(conn), role))
        conn.setblocking(False)
        self._pending.append(pair)
        self._retry_pending()

    def _retry_pending(self) -> None:
        now = time.monotonic()
        for pair in [p for p in self._pending if p.next_try <= now]:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(pair.spec.connect))
            except OSError as err:
                sock.close()
                pair.next_try, pair.retry = now + pair.retry, min(pair.retry * 2, CONNECT_RETRY_MAX)
                if time.monotonic() - pair.started > CONNECT_PATIENCE:
                    log.warning("%s: %s did not answer within %gs (%s): closing", pair.spec.name,
                                pair.spec.connect, CONNECT_PATIENCE, err)
                    self._pending.remove(pair)
                    self._close(pair)
                continue
            self._pending.remove(pair)
            sock.setblocking(False)
            role = "frontend" if pair.spec.backend_connects else "backend"
            pair.other = _Side(sock, vu.Reader(sock), role)
            self._pairs[id(pair)] = pair
            for side in pair.sides():
                self.selector.register(side.sock, selectors.EVENT_READ, ("side", (pair, side)))
            log.debug("%s: relaying a connection", pair.spec.name)

    def _readable(self, pair: _Pair, side: _Side) -> None:
        peer = pair.peer(side)
        try:
            for message in side.reader.feed():
                try:
                    out = self._rewrite(pair.spec, side.role, message)
                    assert peer is not None
                    peer.sock.settimeout(2.0)
                    vu.send(peer.sock, out)
                    peer.sock.setblocking(False)
                finally:
                    vu.close_fds(message.fds)  # sent (the kernel duplicated them) or dropped
        except EOFError:
            self._close(pair)
        except Violation as err:
            reason = f"relay closed the connection: {err}"
            # a frontend that reconnects and asks again would flood the log: say it once per reason
            if self._last_violation.get(pair.spec.name) != reason:
                log.error("%s: %s: connection closed", pair.spec.name, err)
                self._last_violation[pair.spec.name] = reason
                self.on_violation(pair.spec.name, reason)
            self._close(pair)
        except (vu.ProtocolError, OSError) as err:
            log.warning("%s: %s from the %s: connection closed", pair.spec.name, err, side.role)
            self._close(pair)

    def _rewrite(self, spec: RelaySpec, role: str, message: vu.Message) -> vu.Message:
        abi = spec.abi
        allowed_virtio = abi.virtio | LOG_ALL
        if role == "backend":
            if not message.is_reply:
                return message
            if message.request == vu.GET_FEATURES:
                return message.with_u64(message.u64() & allowed_virtio)
            if message.request == vu.GET_PROTOCOL_FEATURES:
                return message.with_u64(message.u64() & abi.protocol)
            if message.request == vu.GET_QUEUE_NUM:
                return message.with_u64(min(message.u64(), abi.max_queue_pairs))
            return message
        if message.request == vu.SET_FEATURES:
            extra = message.u64() & ~allowed_virtio
            if extra:
                raise Violation("SET_FEATURES beyond the mode: " + ", ".join(catalog.mask_to_names(extra, "virtio")))
        elif message.request == vu.SET_PROTOCOL_FEATURES:
            extra = message.u64() & ~abi.protocol
            if extra:
                raise Violation("SET_PROTOCOL_FEATURES beyond the mode: "
                                + ", ".join(catalog.mask_to_names(extra, "protocol")))
        elif message.request == vu.SET_VRING_NUM:
            index, num = message.vring_state()
            limit = abi.max_rx_queue_size if index % 2 == 0 else abi.max_tx_queue_size
            if num > limit:
                raise Violation(f"SET_VRING_NUM vring {index} size {num} beyond the mode's {limit}")
            if index // 2 >= abi.max_queue_pairs:
                raise Violation(f"SET_VRING_NUM vring {index} beyond the mode's {abi.max_queue_pairs} queue pair(s)")
        return message

    def _close(self, pair: _Pair) -> None:
        self._pairs.pop(id(pair), None)
        if pair in self._pending:
            self._pending.remove(pair)
        for side in pair.sides():
            try:
                self.selector.unregister(side.sock)
            except (KeyError, ValueError):
                pass
            side.reader.close_fds()
            side.sock.close()
