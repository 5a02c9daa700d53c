"""``--metrics-port``: ``/metrics`` and ``/healthz`` over HTTP, served so that no client can
keep a probe from its answer.

One thread serves every connection from non-blocking sockets, one request each (answered
``Connection: close``; then its write side is shut and it is closed when the client closes, so
no reset destroys the answer):

- it holds at most MAX_CONNECTIONS; one more arriving closes the oldest already answered, else
  the oldest still sending its request (an idle one, by then: a probe sends its request as it
  connects and is answered in the same turn), so idle sockets never take the next probe's place;
  out of descriptors (EMFILE), the oldest makes room the same way;
- each connection gets REQUEST_DEADLINE seconds from accept to its close, and a request head of
  MAX_HEAD bytes;
- ``/metrics`` is rendered on a second thread (thousands of series take a while), once for
  every scrape waiting, while ``/healthz`` goes on being answered;
- a reset, a half-close or garbage costs the connection and a debug line, never a traceback.

``/healthz`` is the loop's liveness (Liveness): 503 until the first scan is done, 200 while the
loop turns, 503 with the reason when it has not turned for STALL_TURNS of its longest wait.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from oomhero import log
from oomhero.actions.listener import Listener

# Connections held at once (each a descriptor and at most MAX_HEAD bytes of buffer).
MAX_CONNECTIONS = 64
# Seconds from accept to the last byte of the answer; a scrape or a probe takes milliseconds.
REQUEST_DEADLINE = 5.0
MAX_HEAD = 8192  # bytes of request line and headers; more is answered 431
ACCEPT_PAUSE = 0.1  # seconds without accepting after accept() fails (out of descriptors)
# /healthz says "stalled" when the loop has not turned for this many of its longest waits (the
# polling ceiling, or the rescan interval if longer: the loop turns at least that often).
STALL_TURNS = 5

TEXT = "text/plain; charset=utf-8"
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Liveness(Listener):
    """Is the loop alive? The engine calls tick() at every turn; /healthz reads status()."""

    def __init__(
        self,
        ready: Callable[[], bool],
        stalled_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ready, self.stalled_after, self.clock = ready, stalled_after, clock
        self.started = self.last_turn = clock()

    def tick(self, engine: object) -> None:
        self.last_turn = self.clock()

    def status(self) -> tuple[int, str]:
        now = self.clock()
        if not self.ready():
            return 503, f"starting: first scan not done after {now - self.started:.1f}s\n"
        idle = now - self.last_turn
        if idle > self.stalled_after:
            return 503, (
                f"stalled: the loop has not turned for {idle:.1f}s "
                f"(it turns at least every {self.stalled_after / STALL_TURNS:g}s)\n"
            )
        return 200, "ok\n"


def stalled_after(poll_ceiling: float, rescan_interval: float) -> float:
    return STALL_TURNS * max(poll_ceiling, rescan_interval)


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    deadline: float
    # reading its request, rendering (waiting for the /metrics renderer), writing the answer,
    # or draining: answered, its write side shut, reading until the client closes (a close with
    # unread bytes would send a reset, which can destroy the answer before the client reads it)
    state: str = "reading"
    head: bytearray = field(default_factory=bytearray)
    answer: memoryview | bytes = b""  # what is left to send
    head_only: bool = False  # a HEAD request


class Endpoint:
    """The server: ``port`` is the one bound (``port=0`` picks a free one); shutdown() stops
    it and closes every connection."""

    def __init__(
        self, registry: CollectorRegistry, liveness: Liveness, address: str, port: int
    ) -> None:
        self.registry, self.liveness = registry, liveness
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        # A deep accept queue: a flood is taken in and the oldest closed, not left to the
        # kernel's SYN retries (seconds) while a probe waits behind it.
        self.listener = socket.create_server(
            (address, port),
            family=family,
            backlog=1024,
            dualstack_ipv6=address == "::" and socket.has_dualstack_ipv6(),
        )
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self._wake_r, selectors.EVENT_READ)
        # Accept order: the first is the oldest.
        self.connections: collections.OrderedDict[int, _Connection] = collections.OrderedDict()
        self._to_render: queue.SimpleQueue[_Connection | None] = queue.SimpleQueue()
        self._rendered: collections.deque[tuple[_Connection, bytes | None]] = collections.deque()
        self._stopping = False
        self._accept_again_at: float | None = None  # accepting paused: out of descriptors
        self._threads = [
            threading.Thread(target=self._serve, name="oomhero-http", daemon=True),
            threading.Thread(target=self._render_forever, name="oomhero-metrics", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the server thread --------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            if self._accept_again_at is not None and now >= self._accept_again_at:
                self._accept_again_at = None
                self.selector.register(self.listener, selectors.EVENT_READ)
            earliest = min(
                [c.deadline for c in self.connections.values()]
                + [self._accept_again_at or now + 1, now + 1]
            )
            events = self.selector.select(max(0.0, earliest - now))
            # Requests first, new connections last: a connection that has sent its request is
            # answered before a newcomer could take its place.
            events.sort(key=lambda event: event[0].fileobj is self.listener)
            for key, mask in events:
                self._handle(key, mask)
            self._expire(time.monotonic())
        for fd in list(self.connections):
            self._close(fd, None)
        self.selector.close()
        self.listener.close()

    def _handle(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.fileobj is self.listener:
            self._accept()
        elif key.fileobj == self._wake_r:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
            while self._rendered:
                self._answer_rendered(*self._rendered.popleft())
        else:
            fd = key.fileobj.fileno()
            connection = self.connections.get(fd)
            if connection is None:
                return
            try:
                if mask & selectors.EVENT_READ:
                    self._read(fd, connection)
                elif mask & selectors.EVENT_WRITE:
                    self._write(fd, connection)
            except OSError as exc:  # a reset, a broken pipe: the client's business
                self._close(fd, exc.strerror or type(exc).__name__)
            except Exception as exc:  # a bug costs this connection and one line, not the server
                log.event(logging.ERROR, "metrics server: request failed", why=repr(exc))
                self._close(fd, None)

    def _accept(self) -> None:
        for _ in range(MAX_CONNECTIONS):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self.connections:
                    # Out of descriptors, some of them ours: the oldest makes room.
                    self._close(self._oldest(), "out of descriptors: room for a newer one")
                    continue
                # The connection waits in the queue and the listener stays readable: a pause,
                # not a busy loop, before the next try.
                log.event(logging.DEBUG, "metrics server: accept failed", why=exc.strerror)
                self.selector.unregister(self.listener)
                self._accept_again_at = time.monotonic() + ACCEPT_PAUSE
                return
            sock.setblocking(False)
            if len(self.connections) >= MAX_CONNECTIONS:
                self._close(self._oldest(), "room for a newer connection")
            self.connections[sock.fileno()] = _Connection(sock, time.monotonic() + REQUEST_DEADLINE)
            self.selector.register(sock, selectors.EVENT_READ)

    def _oldest(self) -> int:
        """The oldest connection answered already, else the oldest still sending its request,
        else the oldest of all."""
        for state in ("draining", "reading"):
            found = next((fd for fd, c in self.connections.items() if c.state == state), None)
            if found is not None:
                return found
        return next(iter(self.connections))

    def _read(self, fd: int, connection: _Connection) -> None:
        data = connection.sock.recv(4096)
        if connection.state == "draining":
            if not data:
                self._close(fd, None)
            return
        if not data:
            self._close(fd, "closed by the client before its request was complete")
            return
        connection.head += data
        end = connection.head.find(b"\r\n\r\n")
        if end < 0:
            end = connection.head.find(b"\n\n")
        if end > MAX_HEAD or (end < 0 and len(connection.head) > MAX_HEAD):
            self._reply(fd, connection, 431, TEXT, b"request head too long\n")
        elif end >= 0:
            self._route(fd, connection, bytes(connection.head[:end]))

    def _route(self, fd: int, connection: _Connection, head: bytes) -> None:
        request = head.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
        if len(request) != 3 or not request[2].startswith(b"HTTP/1."):
            self._reply(fd, connection, 400, TEXT, b"not an HTTP/1 request\n")
            return
        method, target = request[0], request[1].split(b"?", 1)[0]
        connection.head_only = method == b"HEAD"
        if method not in (b"GET", b"HEAD"):
            self._reply(fd, connection, 405, TEXT, b"GET or HEAD only\n")
        elif target == b"/healthz":
            code, text = self.liveness.status()
            self._reply(fd, connection, code, TEXT, text.encode())
        elif target == b"/metrics":
            connection.state = "rendering"
            self.selector.unregister(connection.sock)
            self._to_render.put(connection)
        else:
            self._reply(fd, connection, 404, TEXT, b"not found: try /metrics or /healthz\n")

    def _reply(
        self,
        fd: int,
        connection: _Connection,
        code: int,
        kind: str,
        body: bytes,
    ) -> None:
        head = (
            f"HTTP/1.1 {code} {REASONS[code]}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        connection.answer = memoryview(head if connection.head_only else head + body)
        if connection.state == "rendering":
            self.selector.register(connection.sock, selectors.EVENT_WRITE)
        else:
            self.selector.modify(connection.sock, selectors.EVENT_WRITE)
        connection.state = "writing"
        self._write(fd, connection)  # most answers fit the socket's buffer: sent at once

    def _write(self, fd: int, connection: _Connection) -> None:
        with contextlib.suppress(BlockingIOError):
            while connection.answer:
                connection.answer = connection.answer[connection.sock.send(connection.answer) :]
        if not connection.answer:
            connection.sock.shutdown(socket.SHUT_WR)
            connection.state = "draining"
            self.selector.modify(connection.sock, selectors.EVENT_READ)

    def _answer_rendered(self, connection: _Connection, body: bytes | None) -> None:
        fd = connection.sock.fileno()
        if self.connections.get(fd) is not connection:
            return  # closed while it waited (deadline, or room for a newer one)
        try:
            if body is None:
                self._reply(fd, connection, 500, TEXT, b"cannot render the metrics\n")
            else:
                self._reply(fd, connection, 200, CONTENT_TYPE_LATEST, body)
        except OSError as exc:
            self._close(fd, exc.strerror)

    def _expire(self, now: float) -> None:
        for fd, connection in list(self.connections.items()):
            if connection.deadline <= now:
                answered = connection.state == "draining"
                self._close(fd, None if answered else f"not done within {REQUEST_DEADLINE:g}s")

    def _close(self, fd: int, why: str | None) -> None:
        connection = self.connections.pop(fd)
        if why is not None:
            log.event(logging.DEBUG, "metrics server: connection dropped", why=why)
        if connection.state != "rendering":
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(connection.sock)
        connection.state = "closed"
        connection.sock.close()

    # -- the renderer thread ------------------------------------------------------------------
    def _render_forever(self) -> None:
        """Render for every scrape waiting at once, until shutdown() queues None."""
        while True:
            waiting = [self._to_render.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    waiting.append(self._to_render.get_nowait())
            if None in waiting:
                return
            body: bytes | None = None
            try:
                body = generate_latest(self.registry)
            except Exception as exc:  # a bug costs these scrapes and one line, not the thread
                log.event(logging.ERROR, "metrics server: cannot render", why=repr(exc))
            self._rendered.extend((connection, body) for connection in waiting)
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"!")

    def shutdown(self) -> None:
        self._stopping = True
        self._to_render.put(None)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")
        for thread in self._threads:
            thread.join()  # neither blocks: a select of at most 1 s, a render
        os.close(self._wake_r)
        os.close(self._wake_w)


def serve(registry: CollectorRegistry, liveness: Liveness, address: str, port: int) -> Endpoint:
    """Serve /metrics and /healthz on ``address``:``port`` until shutdown()."""
    return Endpoint(registry, liveness, address, port)
