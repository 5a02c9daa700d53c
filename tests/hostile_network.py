"""The hostile network, for host and guest tests: real servers on loopback that misbehave as a
webhook endpoint could (one that records, and may redirect or fail; one that trickles its answer
a byte a second; one that trickles a TLS handshake; one that resets every connection), a
kubelet-like probe with its 1 s timeout, and a listener that really stalls the loop."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

from oomhero.actions.listener import Listener
from oomhero.commands.common import Outputs, start_outputs
from oomhero.config import WatchSettings
from oomhero.engine import Engine
from oomhero.targets.cgroups import CgroupScanner
from tests.helpers import wait_until

PROBE_TIMEOUT = 1.0  # what a kubelet probe gives (timeoutSeconds: 1)


class Recorder(http.server.ThreadingHTTPServer):
    """An endpoint that records each request (method, path, headers, body) and answers
    ``status`` with ``headers``."""

    def __init__(self, status: int = 204, headers: dict[str, str] | None = None) -> None:
        self.requests: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length),
                    }
                )
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = record

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class RawServer:
    """A TCP server on loopback that runs ``behave(connection)`` for each client, in a thread."""

    def __init__(self, behave) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.behave = behave
        self.accepted = 0
        self.stopping = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection:
            self.behave(connection, self.stopping)

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()


def read_request(connection: socket.socket) -> None:
    connection.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            return
        data += chunk


def trickle(connection: socket.socket, stopping: threading.Event) -> None:
    """Reads the request, then answers one byte a second, forever (the answer never ends)."""
    read_request(connection)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000000
    for byte in answer:
        if stopping.wait(1.0):
            return
        connection.sendall(bytes([byte]))


def trickle_tls(connection: socket.socket, stopping: threading.Event) -> None:
    """A "TLS server" that sends its handshake one byte a second (a record header that never
    completes), never reading what the client says."""
    while not stopping.wait(1.0):
        connection.sendall(b"\x16")


def reset(connection: socket.socket, stopping: threading.Event) -> None:
    """Reads the request and closes with RST (SO_LINGER 0): a connection reset by peer."""
    read_request(connection)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def get(url: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def probe(base: str) -> int | None:
    """A kubelet-like probe: the status, or None when no answer came within 1 s."""
    with contextlib.suppress(OSError):
        return get(base + "/healthz", timeout=PROBE_TIMEOUT)[0]
    return None


def reset_connection(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the server sees "connection reset by peer"."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Stall(Listener):
    """A listener that, once armed, blocks the loop's thread in a read of an empty pipe: a real
    blocking system call in the loop, as a hung listener or source would make. A byte on the
    pipe frees it."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.armed = threading.Event()

    def tick(self, engine: object) -> None:
        if self.armed.is_set():
            self.armed.clear()
            os.read(self.read_end, 1)

    def release(self) -> None:
        os.write(self.write_end, b"x")

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


def stall_a_watching_loop(cgroup, sources: tuple[str, ...], port: int) -> dict[str, object]:
    """oomhero's loop watching ``cgroup`` with metrics on ``port``, run on this thread (its
    signal handling needs the main one; it turns at least every 0.2 s, its rescan interval, so
    it is stalled after 5 turns, 1 s) while a helper thread waits for /healthz to answer 200,
    stalls the loop (Stall), waits for 503, probes once more, frees the loop and waits for 200
    again. Returns what it saw: "stalled" (status, body), "after" (seconds from the stall to
    that 503), "still stuck" (the next probe's status), "recovered"."""
    settings = WatchSettings(sources=sources, poll_ceiling=0.1)
    engine = Engine(CgroupScanner([cgroup]), settings, rescan_interval=0.2)
    start_outputs(Outputs(metrics_port=port), engine)
    stall = Stall()
    engine.listeners.append(stall)
    base = f"http://127.0.0.1:{port}"
    seen: dict[str, object] = {}
    done = threading.Event()
    timeout = 60

    def until(predicate, what: str):
        return wait_until(predicate, what, timeout)

    def drive() -> None:
        try:
            until(lambda: probe(base) == 200, "the first scan")
            stall.armed.set()
            until(lambda: not stall.armed.is_set(), "the loop to block")
            blocked_at = time.monotonic()
            seen["stalled"] = until(
                lambda: (a := get(base + "/healthz", PROBE_TIMEOUT))[0] == 503 and a, "503"
            )
            seen["after"] = time.monotonic() - blocked_at
            seen["still stuck"] = probe(base)
            stall.release()
            seen["recovered"] = until(lambda: probe(base) == 200, "200 again")
        finally:
            stall.release()  # never leave the loop blocked, whatever failed
            done.set()

    helper = threading.Thread(target=drive)
    helper.start()
    try:
        engine.run(until=done.is_set)
    finally:
        helper.join(timeout)
        engine.close()
        stall.close()
    return seen


def garbage(connection: socket.socket, stopping: threading.Event) -> None:
    """Reads the request and answers a 60 KiB status line of garbage, on one line."""
    read_request(connection)
    connection.sendall(b"HTTP/1.1 2" + b"\x1b[31m<script>" * 4000 + b"\r\n\r\n")
