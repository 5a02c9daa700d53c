"""Chosen targets: cgroups or PIDs named on the command line, or a process tree (soft limit)."""

from __future__ import annotations

import errno
import functools
import re

import psutil

from oomhero.kernel.cgroup import CgroupDir, CgroupError, CgroupGone, MemorySample
from oomhero.kernel.locate import open_for_pid, open_path, own_mounts
from oomhero.kernel.procfs import read_proc
from oomhero.targets import Found


def resolve_cgroup(spec: str) -> CgroupDir:
    """A CLI target: a PID in ASCII digits (its memory cgroup, host view) or a cgroup path
    (str.isdigit() and int() also take "١", Arabic-Indic one, for 1)."""
    if re.fullmatch("[0-9]+", spec):
        return open_for_pid(int(spec), prefer_root_view=False)
    return open_path(spec, own_mounts())


class CgroupScanner:
    """Watch mode: chosen cgroups; members are the processes of each one's subtree. Each is
    looked up again by its path at every scan, so a cgroup removed and made again under the
    same path (a restarted service or container) is followed to its new instance. A scan holds
    one cgroup open at a time: a target's reader is opened only when the watchlist asks. (One
    found through a process's root view is kept as it is: that path leads through the
    process.)"""

    def __init__(self, chosen: list[CgroupDir], proc: str = "/proc") -> None:
        self.proc = proc
        self.paths = [c.path for c in chosen]
        self.first = {c.path: c for c in chosen if c.view == "host"}  # opened at the start
        self.pinned = {c.path: c for c in chosen if c.view != "host"}
        self.mounts = own_mounts()

    def scan(self) -> dict[str, Found]:
        found = {}
        for path in self.paths:
            first = self.first.get(path)
            cgroup = first.duplicate() if first is not None else self._lookup(path)
            if cgroup is None:
                continue
            try:
                pids, identity = cgroup.subtree_pids(), cgroup.key
            except CgroupError:
                pids, identity = [], cgroup.key
            finally:
                cgroup.close()
            members = [info for pid in pids if (info := read_proc(pid, self.proc))]
            opener = functools.partial(self._open, path)
            found[path] = Found(
                cgroup.path, members, opener, identity=identity, pids=CgroupDir.subtree_pids
            )
        return found

    def _open(self, path: str) -> CgroupDir:
        first = self.first.pop(path, None)  # the one checked at the start
        if first is not None:
            return first
        cgroup = self._lookup(path)
        if cgroup is None:
            raise CgroupGone(errno.ENOENT, f"{path} is gone")
        return cgroup

    def _lookup(self, path: str) -> CgroupDir | None:
        pinned = self.pinned.get(path)
        if pinned is not None:
            return pinned.duplicate() if pinned.alive() else None
        try:
            cgroup = open_path(path, self.mounts)
        except CgroupError:
            return None  # not there (yet): the next scan looks again
        if cgroup.alive():
            return cgroup
        cgroup.close()  # found as the kernel removes it
        return None

    def close(self) -> None:
        for cgroup in [*self.first.values(), *self.pinned.values()]:
            cgroup.close()
        self.first.clear()
        self.pinned.clear()


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

    @property
    def key(self) -> str:
        return f"tree:{self.root_pid}"

    def alive(self) -> bool:
        return psutil.pid_exists(self.root_pid)

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

    def close(self) -> None:
        pass  # the reader is the target's to close
