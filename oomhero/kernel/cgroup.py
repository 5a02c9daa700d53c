"""Reading a memory cgroup, v2 or v1, through one face: ``CgroupDir`` (locate.py finds it)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

CGROUP_MOUNT = "/sys/fs/cgroup"  # where a container, or a host, sees its cgroup tree

# v1 reports "no limit" as PAGE_COUNTER_MAX pages (0x7FFFFFFFFFFFF000 on x86-64); anything this
# large cannot be a real limit.
V1_UNLIMITED_FLOOR = 1 << 62


class CgroupError(OSError):
    """A cgroup could not be found or read; the message says where and why."""


@dataclass(frozen=True)
class MemorySample:
    current: int
    limit: int | None  # None: no limit
    inactive_file: int

    @property
    def working_set(self) -> int:
        # As kubelet and cAdvisor compute it: page cache that is easy to reclaim does not count.
        return max(self.current - self.inactive_file, 0)

    def value(self, metric: str) -> int:
        return self.working_set if metric == "working-set" else self.current


def parse_limit(text: str) -> int | None:
    text = text.strip()
    if text == "max":
        return None
    value = int(text)
    return None if value >= V1_UNLIMITED_FLOOR else value


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, memory.events, memory.oom_control, cgroup.events)."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def parse_pressure(text: str) -> dict[str, dict[str, float]]:
    """``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` lines → {"some": {"avg10": 0.0, ...}}."""
    result: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        result[kind] = {k: float(v) for k, v in (f.split("=", 1) for f in fields)}
    return result


class CgroupDir:
    """An open memory cgroup directory. Holds a directory fd, so reads need no path walk and a
    target's view stays valid when the process that led to it exits."""

    def __init__(self, path: str, version: int, view: str = "host") -> None:
        self.path = path
        self.version = version
        self.view = view
        self._kept: dict[str, int] = {}  # file name → fd held open for pread (the sampled files)
        self._limit: tuple[int | None] | None = None  # the limit last read (None: not yet)
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise CgroupError(exc.errno, f"cannot open cgroup {path}: {exc.strerror}") from None

    def __repr__(self) -> str:
        return f"CgroupDir({self.path!r}, v{self.version}, {self.view} view)"

    def close(self) -> None:
        for fd in self._kept.values():
            os.close(fd)
        self._kept.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        return self._fd

    def file_path(self, name: str) -> str:
        """A path to one of its files through the held directory fd: valid even after the
        process that led to the cgroup exits."""
        return f"/proc/self/fd/{self._fd}/{name}"

    def read(self, name: str) -> str:
        """One file's text: opened, read, closed (see ``read_kept`` for the sampled files)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._fd)
        except OSError as exc:
            raise self._error(name, exc) from None
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks).decode()
        except OSError as exc:
            raise self._error(name, exc) from None
        finally:
            os.close(fd)

    def read_kept(self, name: str) -> str:
        """One file's text through a descriptor kept open from the first read: every sample is a
        single ``pread`` at offset 0 (cgroup files are regenerated at each read from 0), not an
        open + read + close. Where no descriptor is left (EMFILE), it reads as ``read`` does."""
        fd = self._kept.get(name)
        if fd is None:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._fd)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    return self.read(name)
                raise self._error(name, exc) from None
            self._kept[name] = fd
        try:
            return _pread_all(fd).decode()
        except OSError as exc:
            raise self._error(name, exc) from None

    def _error(self, name: str, exc: OSError) -> CgroupError:
        return CgroupError(exc.errno, f"cannot read {self.path}/{name}: {exc.strerror}")

    def has(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self._fd)
        except OSError:
            return False
        return True

    def usage(self) -> int:
        """Bytes charged to the cgroup now (and below it)."""
        return int(
            self.read_kept("memory.current" if self.version == 2 else "memory.usage_in_bytes")
        )

    def sample(self, inactive_file: bool = True, limit: bool = True) -> MemorySample:
        """Usage and limit. ``inactive_file``: also memory.stat's page cache (what the
        working-set metric subtracts; without it, 0 and memory.stat is not read on v2).
        ``limit``: read the limit again; False: the one read last time (the limit files never
        notify, and rarely change: the sampler re-reads them at its slowest cadence)."""
        if limit or self._limit is None:
            self._limit = (self._read_limit(),)
        current = self.usage()
        if self.version == 2:
            stat = parse_flat_keyed(self.read_kept("memory.stat")) if inactive_file else {}
            return MemorySample(current, self._limit[0], stat.get("inactive_file", 0))
        stat = parse_flat_keyed(self.read_kept("memory.stat")) if inactive_file else {}
        return MemorySample(current, self._limit[0], stat.get("total_inactive_file", 0))

    def _read_limit(self) -> int | None:
        if self.version == 2:
            return parse_limit(self.read_kept("memory.max"))
        limit = parse_limit(self.read_kept("memory.limit_in_bytes"))
        # v1 is hierarchical: a parent's smaller limit applies too (memory.stat says which).
        inherited = parse_flat_keyed(self.read_kept("memory.stat")).get("hierarchical_memory_limit")
        if inherited is not None and inherited < V1_UNLIMITED_FLOOR:
            limit = inherited if limit is None else min(limit, inherited)
        return limit

    def events(self) -> dict[str, int]:
        """memory.events on v2; on v1 the oom counters of memory.oom_control and failcnt."""
        if self.version == 2:
            return parse_flat_keyed(self.read("memory.events"))
        events = {}
        if self.has("memory.oom_control"):
            oom = parse_flat_keyed(self.read("memory.oom_control"))
            events = {k: v for k, v in oom.items() if k in ("under_oom", "oom_kill")}
        events["failcnt"] = int(self.read("memory.failcnt"))
        return events

    def populated(self) -> bool:
        """False once no process is left in the cgroup or below it (cgroup.events)."""
        return "populated 0" not in self.read("cgroup.events")

    def pressure(self) -> dict[str, dict[str, float]] | None:
        """memory.pressure (PSI) where the kernel offers it, else None."""
        try:
            return parse_pressure(self.read("memory.pressure"))
        except (CgroupError, ValueError):
            return None

    def pids(self) -> list[int]:
        return [int(line) for line in self.read("cgroup.procs").split()]

    def subtree_pids(self) -> list[int]:
        """Pids of this cgroup and every cgroup below it."""
        pids = self.pids()
        for root, dirs, _ in os.walk(f"/proc/self/fd/{self._fd}"):
            for name in dirs:
                try:
                    with open(os.path.join(root, name, "cgroup.procs")) as f:
                        pids.extend(int(line) for line in f.read().split())
                except OSError:
                    continue  # a child cgroup removed while walking
        return pids


def _pread_all(fd: int, size: int = 65536) -> bytes:
    """The sampled files are one record each (memory.stat too: a few KiB), which the kernel
    returns whole: one ``pread`` unless it fills the buffer."""
    chunk = os.pread(fd, size, 0)
    chunks, offset = [chunk], len(chunk)
    while len(chunk) == size:
        chunk = os.pread(fd, size, offset)
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()
