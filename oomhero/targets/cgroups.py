"""Chosen targets: cgroups or PIDs named on the command line, or a process tree (soft limit)."""

from __future__ import annotations

import errno

import psutil

from oomhero.kernel.cgroup import CgroupDir, CgroupError, MemorySample
from oomhero.kernel.locate import open_for_pid, open_path, own_mounts
from oomhero.kernel.procfs import read_proc
from oomhero.targets import Found


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
            found[cgroup.path] = Found(
                cgroup.path, members, lambda c=cgroup: c, pids=CgroupDir.subtree_pids
            )
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
        return {
            self.name: Found(self.name, members, lambda: self.reader, pids=ProcessTreeReader.pids)
        }
