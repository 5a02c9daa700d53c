"""Prometheus metrics, served on ``--metrics-port`` (off unless set; the server: endpoint.py).

A listener on the engine keeps the series up to date from the loop's thread. Labels name the
container — cgroup path; the pod's namespace, name and UID from the sidecar's downward API env,
the pod UID and container id where the cgroup path shows them (kubelet's cgroupfs and systemd
layouts) — never a PID, so the number of series stays bounded by the number of containers, and
a container's series go when it does.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

from oomhero import __version__
from oomhero.actions.listener import Listener
from oomhero.kernel.cgroup import CgroupDir, MemorySample
from oomhero.log import readable
from oomhero.policy import Decision, Level

# A counter's <name>_created series doubles every counter for a timestamp no dashboard reads.
prometheus_client.disable_created_metrics()

# kubepods-burstable-pod<uid>.slice / pod<uid>; cri-containerd-<id>.scope, docker-<id>.scope,
# crio-<id>.scope, or a bare 64-hex container directory.
_POD_RE = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)
_CONTAINER_RE = re.compile(r"(?:^|[-/])([0-9a-f]{64})(?:\.scope)?$")
# What a target is, as far as oomhero knows it: the pod's namespace, name and UID (the sidecar's
# downward API env; the UID from the cgroup path in node mode), the container's id (from the
# path: kube_pod_container_info's container_id, for a join that gives its name) and the path.
LABELS = ("namespace", "pod", "pod_uid", "container_id", "cgroup")
# memory.pressure's avg10 moves over 10 s: read at most this often per target, not per sample.
PSI_EVERY = 2.0


@dataclass(frozen=True)
class PodIdentity:
    """The pod a sidecar runs in (its downward API env): every target of it is in this pod."""

    namespace: str = ""
    name: str = ""
    uid: str = ""


def container_labels(cgroup_path: str, pod: PodIdentity = PodIdentity()) -> tuple[str, ...]:
    """The LABELS of a target at ``cgroup_path``; "" where nothing says."""
    uid = _POD_RE.search(cgroup_path)
    container = _CONTAINER_RE.search(cgroup_path)
    return (
        pod.namespace,
        pod.name,
        pod.uid or (uid.group(1).replace("_", "-") if uid else ""),
        container.group(1) if container else "",
        readable(cgroup_path),  # a byte that is not UTF-8 as \xNN: the exposition is UTF-8
    )


class Metrics(Listener):
    """The engine listener that owns the series. A target's series go with it (``gone``): a node
    agent's containers come and go for weeks, their series must not pile up."""

    wants_page_cache = True  # the working-set gauge

    def __init__(self, pod: PodIdentity = PodIdentity(), clock=time.monotonic) -> None:
        self.pod, self.clock = pod, clock
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, _resident_memory_bytes, fds
        build = Gauge(
            "oomhero_build_info", "1, labelled with the version", ("version",), registry=r
        )
        build.labels(__version__).set(1)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, LABELS, registry=r)

        self.usage = gauge("oomhero_memory_usage_bytes", "memory.current (or v1 usage)")
        self.limit = gauge("oomhero_memory_limit_bytes", "memory.max (v1 limit)")
        self.working_set = gauge("oomhero_memory_working_set_bytes", "usage minus inactive_file")
        self.ratio = gauge("oomhero_memory_usage_ratio", "the watched metric over the limit")
        self.level = gauge("oomhero_target_level", "0 ok, 1 warning, 2 critical")
        self.warning_at = gauge(
            "oomhero_warning_threshold_ratio", "the target's warning threshold, of the limit"
        )
        self.critical_at = gauge(
            "oomhero_critical_threshold_ratio", "the target's critical threshold, of the limit"
        )
        self.psi_some = gauge(
            "oomhero_memory_pressure_some_avg10_ratio",
            "memory.pressure some avg10: share of the last 10 s some task stalled on memory",
        )
        self.psi_full = gauge(
            "oomhero_memory_pressure_full_avg10_ratio",
            "memory.pressure full avg10: share of the last 10 s all tasks stalled on memory",
        )
        signal_labels = (*LABELS, "level", "signal")
        self.signals = Counter("oomhero_signals_sent", "signals sent", signal_labels, registry=r)
        self.skips = Counter(
            "oomhero_signals_skipped",
            "signals not sent: the process has no handler for them (SigCgt)",
            signal_labels,
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
        self._labels: dict[str, tuple[str, ...]] = {}  # target key → its LABELS
        self._made: dict[str, set[tuple[object, tuple[str, ...]]]] = {}  # key → its series
        self._psi_read_at: dict[str, float] = {}

    def _series(self, metric, target, *extra: str):
        """``metric``'s child for ``target`` (and ``extra`` labels), remembered for ``gone``."""
        labels = self._labels.get(target.key)
        if labels is None:
            labels = self._labels[target.key] = container_labels(target.name, self.pod)
            own = target.settings
            self._series(self.warning_at, target).set(own.warning / 100)
            self._series(self.critical_at, target).set(own.critical / 100)
        labels += extra
        self._made.setdefault(target.key, set()).add((metric, labels))
        return metric.labels(*labels)

    # -- engine listener ------------------------------------------------------------------
    def sampled(
        self,
        target,
        sample: MemorySample,
        percent: float | None,
        decision: Decision | None,
        source: str,
    ) -> None:
        self._series(self.usage, target).set(sample.current)
        self._series(self.working_set, target).set(sample.working_set)
        self.wakeups.labels(source).inc()
        self._pressure(target)
        if percent is None or decision is None:
            return  # no limit: no ratio, no level
        self._series(self.limit, target).set(sample.limit)
        self._series(self.ratio, target).set(percent / 100)
        self._series(self.level, target).set(int(decision.level))

    def _pressure(self, target) -> None:
        now = self.clock()
        if now - self._psi_read_at.get(target.key, -PSI_EVERY) < PSI_EVERY:
            return
        self._psi_read_at[target.key] = now
        pressure = target.reader.pressure() if isinstance(target.reader, CgroupDir) else None
        for kind, gauge in (("some", self.psi_some), ("full", self.psi_full)):
            avg10 = (pressure or {}).get(kind, {}).get("avg10")
            if avg10 is not None:
                self._series(gauge, target).set(avg10 / 100)

    def signalled(self, target, level: Level, signal: str, pid: int, where: str) -> None:
        self._series(self.signals, target, level.label, signal).inc()

    def skipped(self, target, level: Level, signal: str, pid: int) -> None:
        self._series(self.skips, target, level.label, signal).inc()

    def oom_killed(self, target, victims: int) -> None:
        self._series(self.oom_kills, target).inc(victims)

    def detected(self, target, source: str, seconds: float) -> None:
        self.latency.labels(source).observe(seconds)

    def not_watched(self, name: str, reason: str) -> None:
        self.not_watched_targets.labels(reason).inc()

    def gone(self, target) -> None:
        self._labels.pop(target.key, None)
        self._psi_read_at.pop(target.key, None)
        for metric, labels in self._made.pop(target.key, ()):
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
