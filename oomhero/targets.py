"""Targets (one memory cgroup each, i.e. one container) and the scanners that find them."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import psutil

from oomhero.cgroup import (
    CgroupDir,
    CgroupError,
    MemorySample,
    membership_of,
    open_for_pid,
    open_path,
    own_mounts,
)
from oomhero.config import WatchSettings
from oomhero.ebpf import Crossing
from oomhero.policy import PolicyState
from oomhero.processes import ProcessSet, ProcInfo, list_pids, read_proc
from oomhero.schedule import GrowthEstimate


class Reader(Protocol):
    """What the engine samples: a cgroup directory, or a process tree under a soft limit."""

    def sample(self) -> MemorySample: ...

    def close(self) -> None: ...


@dataclass
class Found:
    """One target as a scan saw it: its members now, and how to open its reader (once)."""

    name: str
    members: list[ProcInfo]
    open_reader: Callable[[], Reader]
    settings: WatchSettings | None = None  # this target's own, where it has any (node mode)


class Scanner(Protocol):
    def scan(self) -> dict[str, Found]: ...


@dataclass
class Target:
    key: str
    name: str
    reader: Reader
    settings: WatchSettings = field(default_factory=WatchSettings)  # thresholds and signals
    processes: ProcessSet = field(default_factory=ProcessSet)
    state: PolicyState = field(default_factory=PolicyState)
    # Problems already logged for this target, so each is said once, not every tick.
    said: set[str] = field(default_factory=set)
    last_sample: MemorySample | None = None
    next_sample_at: float = 0.0  # monotonic time; 0: sample at once
    growth: GrowthEstimate = field(default_factory=GrowthEstimate)
    events_seen: dict[str, int] = field(default_factory=dict)  # memory.events counters
    missing_sources: dict[str, str] = field(default_factory=dict)  # source → why not
    crossing: Crossing | None = None  # the eBPF probe's event that woke this sample
    signalled_in_kernel: set[int] = field(default_factory=set)  # pids --bpf-signal reached
    last_signal: tuple[str, float] | None = None  # signal name, wall-clock time

    def close(self) -> None:
        self.reader.close()
        self.processes.close()

    @property
    def main_comm(self) -> str:
        main = self.processes.chosen("main")
        return main[0].info.comm if main else "-"


class PodScanner:
    """Sidecar mode: every process of this PID namespace, grouped by memory cgroup, except
    oomhero itself, the processes of its own cgroup (its container), and the pod's pause."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.self_pid = os.getpid()

    def scan(self) -> dict[str, Found]:
        own = membership_of(self.self_pid, self.proc)
        groups: dict[str, list[ProcInfo]] = {}
        paths: dict[str, str] = {}
        for pid in list_pids(self.proc):
            if pid == self.self_pid:
                continue
            info = read_proc(pid, self.proc)
            membership = membership_of(pid, self.proc)
            if info is None or info.kthread or membership is None:
                continue
            if own is not None and membership.key == own.key:
                continue
            if pid == 1 and info.comm == "pause":
                continue
            groups.setdefault(membership.key, []).append(info)
            paths[membership.key] = membership.path
        return {
            key: Found(paths[key], members, self._opener(members))
            for key, members in groups.items()
        }

    def _opener(self, members: list[ProcInfo]) -> Callable[[], Reader]:
        def open_reader() -> Reader:
            errors = []
            for info in members:
                try:
                    return open_for_pid(info.pid, prefer_root_view=True, proc=self.proc)
                except CgroupError as exc:
                    errors.append(exc)
            raise errors[0]

        return open_reader


def resolve_cgroup(spec: str) -> CgroupDir:
    """A CLI target: a PID (its memory cgroup, host view) or a cgroup path."""
    if spec.isdigit():
        return open_for_pid(int(spec), prefer_root_view=False)
    return open_path(spec, own_mounts())


class CgroupScanner:
    """Watch mode: fixed cgroups; members are the processes of each cgroup's subtree."""

    def __init__(self, cgroups: list[CgroupDir], proc: str = "/proc") -> None:
        self.cgroups = cgroups
        self.proc = proc

    def scan(self) -> dict[str, Found]:
        found = {}
        for cgroup in self.cgroups:
            try:
                pids = cgroup.subtree_pids()
            except CgroupError:
                pids = []
            members = [info for pid in pids if (info := read_proc(pid, self.proc))]
            found[cgroup.path] = Found(cgroup.path, members, lambda c=cgroup: c)
        return found


class ProcessTreeReader:
    """A soft, unenforced limit: the summed RSS of a process and its descendants."""

    def __init__(self, root_pid: int, limit: int) -> None:
        self.root_pid = root_pid
        self.limit = limit

    def pids(self) -> list[int]:
        try:
            root = psutil.Process(self.root_pid)
            return [root.pid] + [child.pid for child in root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> MemorySample:
        total = 0
        for pid in self.pids():
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue  # exited while being summed
        if total == 0 and not psutil.pid_exists(self.root_pid):
            raise CgroupError(errno.ESRCH, f"process {self.root_pid} has exited")
        return MemorySample(total, self.limit, 0)

    def close(self) -> None:
        pass


class ProcessTreeScanner:
    """Run mode without a cgroup: the child and its descendants, RSS against a soft limit."""

    def __init__(self, reader: ProcessTreeReader, name: str) -> None:
        self.reader = reader
        self.name = name

    def scan(self) -> dict[str, Found]:
        members = [info for pid in self.reader.pids() if (info := read_proc(pid))]
        return {self.name: Found(self.name, members, lambda: self.reader)}
