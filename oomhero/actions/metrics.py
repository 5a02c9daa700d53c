"""Prometheus metrics, served on ``--metrics-port`` (off unless set; the server: endpoint.py).

A listener on the engine keeps the series up to date from the loop's thread. Labels name the
container — cgroup path, and the pod UID and container id
where the cgroup path shows them (kubelet's cgroupfs and systemd layouts) — never a PID, so the
number of series stays bounded by the number of containers.
"""

from __future__ import annotations

import contextlib
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

    def gone(self, target) -> None:
        labels = self._labels.pop(target.key, None)
        if labels is None:
            return
        for gauge in (self.usage, self.limit, self.working_set, self.ratio, self.level):
            with contextlib.suppress(KeyError):  # never set (an unlimited target has no ratio)
                gauge.remove(*labels)
