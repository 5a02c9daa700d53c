"""Prometheus metrics and readiness, served on ``--metrics-port`` (off unless set).

A listener on the engine keeps the series up to date from the loop's thread; a small HTTP
server in a daemon thread answers ``/metrics`` and ``/healthz`` (200 once the first scan is
done, 503 before). It never holds more than MAX_CONNECTIONS connections (and threads), and
each gets REQUEST_DEADLINE seconds in all: idle or trickling clients cannot pile up threads or
starve the loop. Labels name the container — cgroup path, and the pod UID and container id
where the cgroup path shows them (kubelet's cgroupfs and systemd layouts) — never a PID, so the
number of series stays bounded by the number of containers.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from oomhero.actions.listener import Listener
from oomhero.kernel.cgroup import MemorySample
from oomhero.policy import Decision, Level

# kubepods-burstable-pod<uid>.slice / pod<uid>; cri-containerd-<id>.scope, docker-<id>.scope,
# crio-<id>.scope, or a bare 64-hex container directory.
_POD_RE = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)
_CONTAINER_RE = re.compile(r"(?:^|[-/])([0-9a-f]{64})(?:\.scope)?$")
LABELS = ("cgroup", "pod_uid", "container_id")
# Connections served at once; one more is closed at accept (a scraper retries next interval).
MAX_CONNECTIONS = 8
# Seconds from accept to the last byte of the answer; a scrape takes milliseconds.
REQUEST_DEADLINE = 5.0


def container_labels(cgroup_path: str) -> tuple[str, str, str]:
    """(cgroup, pod UID, short container id) from a cgroup path; "" where it does not say."""
    pod = _POD_RE.search(cgroup_path)
    container = _CONTAINER_RE.search(cgroup_path)
    return (
        cgroup_path,
        pod.group(1).replace("_", "-") if pod else "",
        container.group(1)[:12] if container else "",
    )


class Metrics(Listener):
    """The engine listener that owns the series."""

    wants_page_cache = True  # the working-set gauge

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.usage = Gauge(
            "oomhero_memory_usage_bytes", "memory.current (or v1 usage)", LABELS, registry=r
        )
        self.limit = Gauge(
            "oomhero_memory_limit_bytes", "memory.max (v1 limit)", LABELS, registry=r
        )
        self.working_set = Gauge(
            "oomhero_memory_working_set_bytes", "usage minus inactive_file", LABELS, registry=r
        )
        self.ratio = Gauge(
            "oomhero_memory_usage_ratio", "the watched metric over the limit", LABELS, registry=r
        )
        self.level = Gauge(
            "oomhero_target_level", "0 ok, 1 warning, 2 critical", LABELS, registry=r
        )
        self.signals = Counter(
            "oomhero_signals_sent", "signals sent", ("level", "signal"), registry=r
        )
        self.skips = Counter(
            "oomhero_signals_skipped",
            "signals not sent: the process has no handler for them (SigCgt)",
            ("level", "signal"),
            registry=r,
        )
        self.oom_kills = Counter("oomhero_oom_kills", "OOM kills seen", LABELS, registry=r)
        self.wakeups = Counter(
            "oomhero_wakeups", "samples taken, by what woke the loop", ("source",), registry=r
        )
        self.latency = Histogram(
            "oomhero_detection_latency_seconds",
            "from the charge that crossed a threshold to oomhero's sample (eBPF source only)",
            ("source",),
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.not_watched_targets = Counter(
            "oomhero_targets_not_watched",
            "targets found but not watched: refused (not the kernel's cgroupfs) or unreadable",
            ("reason",),
            registry=r,
        )
        self._labels: dict[str, tuple[str, str, str]] = {}

    # -- engine listener ------------------------------------------------------------------
    def sampled(
        self,
        target,
        sample: MemorySample,
        percent: float | None,
        decision: Decision | None,
        source: str,
    ) -> None:
        labels = self._labels.setdefault(target.key, container_labels(target.name))
        self.usage.labels(*labels).set(sample.current)
        self.working_set.labels(*labels).set(sample.working_set)
        self.wakeups.labels(source).inc()
        if percent is None or decision is None:
            return  # no limit: no ratio, no level
        self.limit.labels(*labels).set(sample.limit)
        self.ratio.labels(*labels).set(percent / 100)
        self.level.labels(*labels).set(int(decision.level))

    def signalled(self, target, level: Level, signal: str, pid: int, where: str) -> None:
        self.signals.labels(level.label, signal).inc()

    def skipped(self, target, level: Level, signal: str, pid: int) -> None:
        self.skips.labels(level.label, signal).inc()

    def oom_killed(self, target, victims: int) -> None:
        labels = self._labels.setdefault(target.key, container_labels(target.name))
        self.oom_kills.labels(*labels).inc(victims)

    def detected(self, target, source: str, seconds: float) -> None:
        self.latency.labels(source).observe(seconds)

    def not_watched(self, name: str, reason: str) -> None:
        self.not_watched_targets.labels(reason).inc()

    def gone(self, target) -> None:
        labels = self._labels.pop(target.key, None)
        if labels is None:
            return
        for gauge in (self.usage, self.limit, self.working_set, self.ratio, self.level):
            with contextlib.suppress(KeyError):  # never set (an unlimited target has no ratio)
                gauge.remove(*labels)


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each bounded by what is left of one deadline: a client that trickles a
    byte at a time cannot stretch a request past it (a plain socket timeout restarts per recv)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.sock.settimeout(_left(self.deadline))
        return self.sock.recv_into(buffer)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("past the request deadline")
    return left


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them."""

    daemon_threads = True
    block_on_close = False
    # A deep accept queue: waiting connections cost no thread, and a flood beyond the free
    # slots is accepted and closed at once instead of lingering in the kernel's retries.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()  # no thread started: it will not release the slot
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve(metrics: Metrics, ready, address: str, port: int) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz in a daemon thread; ``ready()``: is the first scan done?"""

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            super().setup()
            deadline = time.monotonic() + REQUEST_DEADLINE
            self.rfile.close()  # the socket's plain reader: replaced by one with the deadline
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))
            self.deadline = deadline

        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, code, kind = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                ok = ready()
                body = b"ok\n" if ok else b"starting: first scan not done\n"
                code, kind = (200 if ok else 503), "text/plain"
            else:
                body, code, kind = b"not found: try /metrics or /healthz\n", 404, "text/plain"
            # A client that does not read its answer is cut off at the deadline too.
            self.connection.settimeout(_left(self.deadline))
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass  # scrapes are not news

    server = _BoundedServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, name="oomhero-metrics", daemon=True).start()
    return server
