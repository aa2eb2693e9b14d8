"""The masking relay: stands on a port's vhost-user control socket between the
frontend (QEMU, testpmd) and OVS, so the frontend is offered no more than the
port's mode.

Replies are rewritten: GET_FEATURES (virtio mask; VHOST_F_LOG_ALL always passes, the
relay must never be why a migration fails), GET_PROTOCOL_FEATURES, GET_QUEUE_NUM
(capped at max_queue_pairs). A SET_FEATURES, SET_PROTOCOL_FEATURES or SET_VRING_NUM
beyond the mode closes the connection and is reported (never passed on). Everything
else, file descriptors included, passes unchanged; the data path (shared memory,
eventfds) never goes through here.

One thread serves every relay with a selector, and nothing one peer does can stall
or break another port (docs/enforcement.md, "Limits"):
- every socket is non-blocking; what a frontend does not read waits in that
  connection's own queue, and a queue over MAX_QUEUED_BYTES closes that connection;
  what OVS has not read yet (over BACKEND_PAUSE) pauses reading from that connection's
  frontend, never from OVS (a frontend sets its own pace, never OVS's);
- a readable peer is served at most MAX_MESSAGES_PER_TURN messages before the others;
- at most `max_per_port` connections per port, and beyond the first connection of a
  port, none that would take the open files closer than FD_RESERVE to the limit;
- a frontend's connection reaches OVS only once the frontend has spoken (in
  vhost-user the frontend always speaks first): each connection costs OVS a vhost
  connection made and destroyed, in a thread every port shares, and a peer that
  connects and closes in a loop made thousands a second (bench/README.md, storms);
- a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM, EAGAIN) is handled where it
  happens: an accept pauses its listener for ACCEPT_PAUSE, a connect is retried, a
  send is retried on the next turn;
- an unexpected error is logged and the loop goes on; should the loop itself ever
  fail, it is started again (RelayManager.supervise).

The manager's state (listeners, connections, what each has half read or queued) can
be handed to a new process: freeze() stops serving without closing anything and
returns it, RelayManager(..., adopt=state) serves it again (vhostuser.relayd, the
upgrade without a disconnect).
"""

from __future__ import annotations

import array
import base64
import collections
import errno
import logging
import math
import os
import resource
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vucompat.core import catalog
from vucompat.core.mode import Abi
from vucompat.core.portview import RelaySpec
from vucompat.vhostuser import protocol as vu

log = logging.getLogger("vucompat.relay")

LOG_ALL = catalog.lookup("VHOST_F_LOG_ALL").value
#: how long a connected side waits for the other side's socket to appear
CONNECT_PATIENCE = 30.0
#: the first retry of a pending connection, doubled after each failure up to CONNECT_RETRY_MAX:
#: a frontend that starts at once is reached at once, one that takes seconds costs no busy loop
CONNECT_RETRY, CONNECT_RETRY_MAX = 0.05, 1.0
#: bytes a peer may leave unread before its connection is closed (a whole vhost-user
#: handshake is a few KiB; the kernel's socket buffer holds ~200 KiB more before this starts)
MAX_QUEUED_BYTES = 256 * 1024
#: bytes queued for OVS beyond which the relay stops reading from that connection's frontend
BACKEND_PAUSE = 64 * 1024
#: messages read from one peer before the other peers get their turn
MAX_MESSAGES_PER_TURN = 64
#: connections at once on one port's relay (a port has one frontend; a reconnect may overlap)
DEFAULT_MAX_PER_PORT = 4
#: open files kept free for the first connection of each port, the control channel and logs
FD_RESERVE = 64
#: how long a listener waits after accept() ran out of a resource
ACCEPT_PAUSE = 0.1
#: how long a send that ran out of kernel buffers (ENOBUFS, ENOMEM) waits
SEND_PAUSE = 0.05
LISTEN_BACKLOG = 128
#: errors that say "out of a resource for now", not "this peer is broken"
_SCARCE = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass
class _Side:
    sock: socket.socket
    reader: vu.Reader
    role: str  # "frontend" | "backend"
    #: what the peer has not read yet: (bytes, fds to pass with their first byte)
    queue: collections.deque[tuple[bytes, list[int]]] = field(default_factory=collections.deque)
    queued: int = 0
    #: False while the relay does not read from this side (its peer has too much queued)
    reading: bool = True
    #: a send that ran out of kernel buffers is tried again at this time (0: not waiting)
    send_at: float = 0.0


@dataclass
class _Pair:
    spec: RelaySpec
    accepted: _Side
    other: _Side | None = None
    started: float = field(default_factory=time.monotonic)
    #: when to try to connect the other side next (inf: not before the frontend speaks), and the wait after that
    next_try: float = 0.0
    retry: float = CONNECT_RETRY
    closed: bool = False

    def sides(self) -> list[_Side]:
        return [s for s in (self.accepted, self.other) if s is not None]

    def peer(self, side: _Side) -> _Side | None:
        return self.other if side is self.accepted else self.accepted


class Violation(Exception):
    """The frontend asked for more than the mode: close, report."""


class _Unread(Exception):
    """A peer left more than MAX_QUEUED_BYTES unread: close."""


def nofile_limit() -> int:
    """The soft limit on this process's open files."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class RelayManager:
    """Runs relays in one thread. `ensure()` and `freeze()` are called from another
    thread; `on_violation(port, reason)` is called from the relay thread. Each
    listening socket gets `socket_mode` (and `socket_group`, a gid) after bind and
    before listen, so the umask never decides who may connect (None: leave what bind
    made). `adopt`: a state from freeze() (of this or another process) to serve on."""

    def __init__(self, on_violation: Callable[[str, str], None], socket_mode: int | None = None,
                 socket_group: int | None = None, max_per_port: int = DEFAULT_MAX_PER_PORT,
                 adopt: dict[str, Any] | None = None) -> None:
        self.on_violation = on_violation
        self.socket_mode = socket_mode
        self.socket_group = socket_group
        self.max_per_port = max_per_port
        self.selector = selectors.DefaultSelector()
        self.specs: dict[str, RelaySpec] = {}
        self.listeners: dict[str, socket.socket] = {}
        self._pairs: dict[int, _Pair] = {}
        self._pending: list[_Pair] = []
        self._paused: dict[str, float] = {}
        #: connections held per port (relayed or waiting for their other side)
        self._held: collections.Counter[str] = collections.Counter()
        #: the sides whose send waits out a lack of kernel buffers (send_at set), by id
        self._send_waits: dict[int, tuple[_Pair, _Side]] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._commands: list[tuple[threading.Event, dict[str, RelaySpec]]] = []
        self._served: dict[str, RelaySpec] = {}
        self._last_violation: dict[str, str] = {}
        self._said: dict[tuple[str, str], float] = {}
        self._stop = False
        self._close_on_stop = True
        #: open files this process had before any relay (the baseline of the fd budget)
        self._base_fds = len(os.listdir("/proc/self/fd"))
        if adopt is not None:
            self._adopt(adopt)
        self.thread = threading.Thread(target=self.supervise, name="vucompat-relay", daemon=True)
        self.thread.start()

    # -- called from another thread --------------------------------------------------
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
        """Stop serving and close every relay and connection."""
        self._stop = True
        os.write(self._wake_w, b"x")
        self.thread.join(timeout=10)

    def freeze(self) -> dict[str, Any]:
        """Stop serving without closing anything; return the state a new
        RelayManager adopts: specs, and the fd numbers of listeners and connections
        with what each side has half read or queued. The fds stay open (made
        inheritable, for an exec)."""
        self._close_on_stop = False
        self.stop()
        self._apply_commands()
        state: dict[str, Any] = {"specs": [spec_to_json(s) for s in self.specs.values()],
                                 "listeners": {name: _keep(s) for name, s in self.listeners.items()},
                                 "pairs": [], "pending": []}
        for pair in self._pairs.values():
            assert pair.other is not None
            state["pairs"].append({"port": pair.spec.name, "accepted": _side_state(pair.accepted),
                                   "other": _side_state(pair.other)})
        for pair in self._pending:
            state["pending"].append({"port": pair.spec.name, "accepted": _side_state(pair.accepted)})
        return state

    def counts(self) -> dict[str, int]:
        """Ports served, connections relayed, connections waiting for their other side."""
        return {"ports": len(self.listeners), "connections": len(self._pairs), "pending": len(self._pending)}

    # -- the relay thread ----------------------------------------------------------
    def supervise(self) -> None:
        """Serve until stop(); a failure of the loop itself is logged and the loop
        starts again (its state is in the manager, not in the loop)."""
        while not self._stop:
            try:
                self._serve()
            except Exception:  # noqa: BLE001 - the relays must outlive any bug of the loop
                log.exception("relay: the serving loop failed; starting it again")
                time.sleep(0.1)
        if self._close_on_stop:
            for name in list(self.listeners):
                self._close_listener(name)
            for pair in list(self._pairs.values()) + self._pending:
                self._close(pair)

    def _serve(self) -> None:
        while not self._stop:
            for key, events in self.selector.select(self._timeout()):
                kind, obj = key.data
                try:
                    if kind == "wake":
                        os.read(self._wake_r, 4096)
                    elif kind == "listen":
                        self._accept(obj)
                    elif kind == "pending" and not obj.closed:
                        self._pending_readable(obj)
                    elif kind == "side" and not obj[0].closed:  # (closed by an event before it)
                        if events & selectors.EVENT_WRITE:
                            self._flush(*obj)
                        if events & selectors.EVENT_READ and not obj[0].closed:
                            self._readable(*obj)
                except Exception:  # noqa: BLE001 - a relay bug must not take the other ports down
                    log.exception("relay: unexpected error")
                    if kind in ("side", "pending"):
                        self._close(obj[0] if kind == "side" else obj)
            if self._stop:
                return
            self._apply_commands()
            self._retry_pending()
            self._resume_paused()
            self._retry_sends()

    def _timeout(self) -> float:
        times = [p.next_try for p in self._pending if p.next_try != math.inf] + list(self._paused.values())
        times += [side.send_at for _pair, side in self._send_waits.values()]
        return max(0.0, min(times) - time.monotonic()) if times else 1.0

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
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as err:
            log.error("%s: cannot open a socket to listen on %s: %s", spec.name, spec.listen, err)
            return
        try:
            spec.listen.parent.mkdir(parents=True, exist_ok=True)
            spec.listen.unlink(missing_ok=True)  # a relay that restarts listens on the same path again
            sock.bind(str(spec.listen))
            # who may connect is set before anyone can (listen): frontends, or OVS for client ports
            if self.socket_group is not None:
                os.chown(spec.listen, -1, self.socket_group)
            if self.socket_mode is not None:
                os.chmod(spec.listen, self.socket_mode)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            log.error("%s: cannot listen on %s: %s", spec.name, spec.listen, err)
            return
        self._serve_listener(spec, sock)
        log.info("%s: relay listening on %s -> %s", spec.name, spec.listen, spec.connect)

    def _serve_listener(self, spec: RelaySpec, sock: socket.socket) -> None:
        self.specs[spec.name] = spec
        self.listeners[spec.name] = sock
        self.selector.register(sock, selectors.EVENT_READ, ("listen", spec))

    def _close_listener(self, name: str) -> None:
        sock = self.listeners.pop(name, None)
        spec = self.specs.pop(name, None)
        if sock is not None:
            if self._paused.pop(name, None) is None:
                self.selector.unregister(sock)
            sock.close()
        if spec is not None:
            spec.listen.unlink(missing_ok=True)
            for pair in [p for p in list(self._pairs.values()) + self._pending if p.spec.name == name]:
                self._close(pair)

    def _fds_in_use(self) -> int:
        return self._base_fds + len(self.listeners) + 2 * len(self._pairs) + len(self._pending)

    def _accept(self, spec: RelaySpec) -> None:
        listener = self.listeners.get(spec.name)
        for _ in range(MAX_MESSAGES_PER_TURN):
            if listener is None or spec.name in self._paused:
                return
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno not in _SCARCE:
                    raise
                self._say(spec.name, "accept", f"cannot accept a connection ({err.strerror}): "
                                               f"pausing {ACCEPT_PAUSE:g}s")
                self.selector.unregister(listener)
                self._paused[spec.name] = time.monotonic() + ACCEPT_PAUSE
                return
            refused = self._refusal(spec.name)
            if refused:
                self._say(spec.name, "limit", f"connection refused: {refused}")
                conn.close()
                continue
            role = "backend" if spec.backend_connects else "frontend"
            conn.setblocking(False)
            log.debug("%s: accepted a connection from the %s", spec.name, role)
            self._wait_for_other_side(_Pair(spec, _Side(conn, vu.Reader(conn), role)))
            self._retry_pending()

    def _wait_for_other_side(self, pair: _Pair) -> None:
        """Keep an accepted connection until its other side answers, watching it for a
        close; a frontend's, until it has spoken too (_pending_readable)."""
        if not pair.spec.backend_connects:
            pair.next_try = math.inf
        self._pending.append(pair)
        self._held[pair.spec.name] += 1
        self.selector.register(pair.accepted.sock, selectors.EVENT_READ, ("pending", pair))

    def _pending_readable(self, pair: _Pair) -> None:
        """A waiting connection closed (drop it: relayed later, it would reach the other
        side only to close) or sent its first bytes (they wait in the socket: stop
        watching; a frontend that waited to speak is connected onward now)."""
        if _closed(pair.accepted.sock):
            log.debug("%s: the %s closed its connection before the other side answered", pair.spec.name,
                      pair.accepted.role)
            self._close(pair)
        else:
            self.selector.unregister(pair.accepted.sock)
            if pair.next_try == math.inf:  # the frontend has spoken: now its other side (the loop connects it)
                pair.next_try = 0.0

    def _refusal(self, name: str) -> str | None:
        """Why a new connection on port `name` is refused (None: it is not)."""
        held = self._held[name]
        if held >= self.max_per_port:
            return f"{held} connections already (at most {self.max_per_port} per port)"
        limit = nofile_limit()
        if held and self._fds_in_use() + 2 > limit - FD_RESERVE:
            return (f"{self._fds_in_use()} open files of {limit}: beyond a port's first connection, "
                    f"{FD_RESERVE} are kept for other ports")
        return None

    def _resume_paused(self) -> None:
        now = time.monotonic()
        for name, until in list(self._paused.items()):
            if until <= now:
                del self._paused[name]
                if name in self.listeners:
                    self.selector.register(self.listeners[name], selectors.EVENT_READ, ("listen", self.specs[name]))

    def _retry_pending(self) -> None:
        now = time.monotonic()
        for pair in [p for p in self._pending if p.next_try <= now]:
            if _closed(pair.accepted.sock):
                self._close(pair)
                continue
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            except OSError as err:
                self._failed_connect(pair, now, err)
                continue
            try:
                sock.connect(str(pair.spec.connect))
            except OSError as err:
                sock.close()
                self._failed_connect(pair, now, err)
                continue
            self._pending.remove(pair)
            sock.setblocking(False)
            role = "frontend" if pair.spec.backend_connects else "backend"
            pair.other = _Side(sock, vu.Reader(sock), role)
            self._relay(pair)
            log.debug("%s: relaying a connection", pair.spec.name)

    def _relay(self, pair: _Pair) -> None:
        """Start relaying a pair whose sides are both connected."""
        self._pairs[id(pair)] = pair
        for side in pair.sides():
            self._watch(pair, side)

    def _watch(self, pair: _Pair, side: _Side) -> None:
        """Watch `side` for what it waits for now: data to read (unless paused), room to send."""
        events = (selectors.EVENT_READ if side.reading else 0) | \
            (selectors.EVENT_WRITE if side.queue and not side.send_at else 0)
        registered = side.sock in self.selector.get_map() if side.sock.fileno() >= 0 else False
        if not events:
            if registered:
                self.selector.unregister(side.sock)
        elif registered:
            self.selector.modify(side.sock, events, ("side", (pair, side)))
        else:
            self.selector.register(side.sock, events, ("side", (pair, side)))

    def _failed_connect(self, pair: _Pair, now: float, err: OSError) -> None:
        pair.next_try, pair.retry = now + pair.retry, min(pair.retry * 2, CONNECT_RETRY_MAX)
        if time.monotonic() - pair.started > CONNECT_PATIENCE:
            log.warning("%s: %s did not answer within %gs (%s): closing", pair.spec.name, pair.spec.connect,
                        CONNECT_PATIENCE, err)
            self._close(pair)

    def _readable(self, pair: _Pair, side: _Side) -> None:
        peer = pair.peer(side)
        try:
            for message in side.reader.feed(MAX_MESSAGES_PER_TURN):
                try:
                    out = self._rewrite(pair.spec, side.role, message)
                    assert peer is not None
                    self._queue(pair, peer, out)
                finally:
                    vu.close_fds(message.fds)  # queued (as duplicates) or dropped
        except EOFError:
            log.debug("%s: the %s closed the connection", pair.spec.name, side.role)
            self._close(pair)
        except Violation as err:
            reason = f"relay closed the connection: {err}"
            # a frontend that reconnects and asks again would flood the log: say it once per reason
            if self._last_violation.get(pair.spec.name) != reason:
                log.error("%s: %s: connection closed", pair.spec.name, err)
                self._last_violation[pair.spec.name] = reason
                self.on_violation(pair.spec.name, reason)
            self._close(pair)
        except _Unread as err:
            self._say(pair.spec.name, "unread", f"{err}: connection closed")
            self._close(pair)
        except (vu.ProtocolError, OSError) as err:
            log.warning("%s: %s from the %s: connection closed", pair.spec.name, err, side.role)
            self._close(pair)

    def _queue(self, pair: _Pair, side: _Side, message: vu.Message) -> None:
        """Queue `message` for `side` (its fds duplicated) and send what the socket takes.
        Raises _Unread when a frontend's queue would exceed MAX_QUEUED_BYTES; pauses
        reading from the frontend while OVS's queue is over BACKEND_PAUSE."""
        data = message.encode()
        if side.role == "frontend" and side.queued + len(data) > MAX_QUEUED_BYTES:
            raise _Unread(f"the frontend left more than {MAX_QUEUED_BYTES // 1024} KiB unread")
        side.queue.append((data, [os.dup(fd) for fd in message.fds]))
        side.queued += len(data)
        if len(side.queue) == 1 and not side.send_at:
            self._flush(pair, side)
        peer = pair.peer(side)
        if side.role == "backend" and side.queued > BACKEND_PAUSE and peer is not None and peer.reading:
            peer.reading = False
            self._watch(pair, peer)

    def _flush(self, pair: _Pair, side: _Side) -> None:
        """Send what `side`'s socket takes now; watch it for room while anything is left."""
        while side.queue:
            data, fds = side.queue[0]
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            try:
                sent = side.sock.sendmsg([data], ancillary)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno not in _SCARCE:
                    raise
                side.send_at = time.monotonic() + SEND_PAUSE  # no room in the kernel: try again soon
                self._send_waits[id(side)] = (pair, side)
                break
            vu.close_fds(fds)  # the kernel holds its own duplicates now
            side.queued -= sent
            if sent < len(data):
                side.queue[0] = (data[sent:], [])
            else:
                side.queue.popleft()
        if pair.closed or id(pair) not in self._pairs:
            return  # not relaying yet (adopted) or closed
        self._watch(pair, side)
        peer = pair.peer(side)
        if peer is not None and not peer.reading and side.queued <= BACKEND_PAUSE // 2:
            peer.reading = True
            self._watch(pair, peer)

    def _retry_sends(self) -> None:
        now = time.monotonic()
        for key, (pair, side) in list(self._send_waits.items()):
            if side.send_at > now or pair.closed:
                continue
            del self._send_waits[key]
            side.send_at = 0.0
            try:
                self._flush(pair, side)
            except OSError as err:
                log.warning("%s: %s to the %s: connection closed", pair.spec.name, err, side.role)
                self._close(pair)

    def _say(self, port: str, what: str, message: str) -> None:
        """Log `message` about `port` at most once per 10 s for each kind `what` (a peer
        that hammers a relay must not flood the log)."""
        now = time.monotonic()
        if now - self._said.get((port, what), -60.0) >= 10.0:
            self._said[(port, what)] = now
            log.warning("%s: %s", port, message)

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
        if pair.closed:
            return
        self._pairs.pop(id(pair), None)
        if pair in self._pending:
            self._pending.remove(pair)
        self._held[pair.spec.name] -= 1
        if not self._held[pair.spec.name]:
            del self._held[pair.spec.name]
        for side in pair.sides():
            self._send_waits.pop(id(side), None)
            try:
                self.selector.unregister(side.sock)
            except (KeyError, ValueError):
                pass
            side.reader.close_fds()
            for _data, fds in side.queue:
                vu.close_fds(fds)
            side.queue.clear()
            side.sock.close()
        pair.closed = True

    # -- adopting a frozen state ---------------------------------------------------
    def _adopt(self, state: dict[str, Any]) -> None:
        specs = {s.name: s for s in map(spec_from_json, state["specs"])}
        for name, fd in state["listeners"].items():
            self._serve_listener(specs[name], _adopted_socket(int(fd)))
        self._served = dict(self.specs)
        for item in state["pairs"]:
            spec = specs[item["port"]]
            pair = _Pair(spec, _side_from_state(item["accepted"]), _side_from_state(item["other"]))
            self._held[spec.name] += 1
            self._relay(pair)
        for item in state["pending"]:
            self._wait_for_other_side(_Pair(specs[item["port"]], _side_from_state(item["accepted"])))


# -- what a frozen state holds -------------------------------------------------------
def spec_to_json(spec: RelaySpec) -> dict[str, Any]:
    """A RelaySpec as JSON data (spec_from_json reads it back equal)."""
    abi = spec.abi
    return {"name": spec.name, "listen": str(spec.listen), "connect": str(spec.connect),
            "backend_connects": spec.backend_connects,
            "abi": [abi.virtio, abi.protocol, abi.max_queue_pairs, abi.max_rx_queue_size, abi.max_tx_queue_size]}


def spec_from_json(data: dict[str, Any]) -> RelaySpec:
    """The RelaySpec of spec_to_json's data. Raises KeyError, TypeError, ValueError."""
    return RelaySpec(str(data["name"]), Path(data["listen"]), Path(data["connect"]), bool(data["backend_connects"]),
                     Abi(*(int(v) for v in data["abi"])))


def _keep(sock: socket.socket) -> int:
    """The fd of `sock`, detached from its socket object and inheritable across exec."""
    fd = sock.detach()
    os.set_inheritable(fd, True)
    return fd


def _closed(sock: socket.socket) -> bool:
    """Whether the peer of a connection not read yet has closed it (nothing is consumed)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _adopted_socket(fd: int) -> socket.socket:
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


def _side_state(side: _Side) -> dict[str, Any]:
    for fd in side.reader.fds + [fd for _data, fds in side.queue for fd in fds]:
        os.set_inheritable(fd, True)
    return {"fd": _keep(side.sock), "role": side.role,
            "read": base64.b64encode(bytes(side.reader.buffer)).decode(), "read_fds": list(side.reader.fds),
            "queue": [[base64.b64encode(data).decode(), fds] for data, fds in side.queue]}


def _side_from_state(data: dict[str, Any]) -> _Side:
    sock = _adopted_socket(int(data["fd"]))
    side = _Side(sock, vu.Reader(sock), str(data["role"]))
    side.reader.buffer = bytearray(base64.b64decode(data["read"]))
    side.reader.fds = [int(fd) for fd in data["read_fds"]]
    for encoded, fds in data["queue"]:
        chunk = base64.b64decode(encoded)
        side.queue.append((chunk, [int(fd) for fd in fds]))
        side.queued += len(chunk)
    for fd in side.reader.fds + [fd for _data, fds in side.queue for fd in fds]:
        os.set_inheritable(fd, False)
    return side
