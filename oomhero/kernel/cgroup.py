"""Reading a memory cgroup, v2 or v1, through one face: ``CgroupDir``, one cgroup *instance*
held open (locate.py finds it). Its files are opened as cgroupfs.py checks them and parsed as
bytes: what a container puts at its own ``/sys/fs/cgroup`` is input, not truth."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from oomhero.kernel.cgroup_parse import (
    V1_UNLIMITED_FLOOR,
    MemorySample,
    parse_flat_keyed,
    parse_limit,
    parse_number,
    parse_pids,
    parse_pressure,
)
from oomhero.kernel.cgroupfs import (
    CGROUP_MAGIC,
    CgroupError,
    CgroupGone,
    CgroupRefused,
    checked_path,
    fs_magic,
    fs_name,
    open_dir,
    read_bounded,
    reopen,
)
from oomhero.kernel.procfs import descriptors_scarce

__all__ = ["CgroupDir", "CgroupError", "CgroupGone", "CgroupRefused", "MemorySample"]

CGROUP_MOUNT = "/sys/fs/cgroup"  # where a container, or a host, sees its cgroup tree

# Read bounds, far above what the kernel writes: a single value or a few counters; memory.stat
# (~1.5 KiB on 6.x); a process list (8 bytes a process).
SMALL, STAT, LIST = 4096, 65536, 4 << 20
# At most this many cgroups below a watched one are walked for its processes.
SUBTREE_MOST = 4096

# What oomhero may open in a cgroup, by version (``verify`` checks them all at once).
_FILES = {
    2: (
        "memory.current",
        "memory.max",
        "memory.stat",
        "memory.events",
        "memory.pressure",
        "cgroup.procs",
    ),
    1: (
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "memory.stat",
        "memory.oom_control",
        "memory.failcnt",
        "cgroup.event_control",
        "cgroup.procs",
    ),
}
# What a cgroup of each version notifies a waiter of, by the file that does: a wake-up source
# asks ``offers`` (psutil-style) instead of testing the version.
_NOTIFIES = {
    2: frozenset({"memory.events", "memory.pressure"}),
    1: frozenset({"cgroup.event_control"}),
}


class CgroupDir:
    """One memory cgroup instance, held by an ``O_PATH`` directory descriptor checked to be on
    cgroupfs: reads need no path walk, and it stays this cgroup whatever happens to the path or
    to the process that led to it. Its identity is the directory's (device, inode): on v2 the
    inode is the cgroup ID, and a cgroup removed and created again under the same name is
    another instance. Once removed, reads raise CgroupGone."""

    def __init__(self, dir_fd: int, path: str, version: int, view: str = "host") -> None:
        """Takes ``dir_fd`` (an ``O_PATH`` directory descriptor already checked to be on the
        cgroupfs of ``version``); use ``open``."""
        self._fd = dir_fd
        self.path = path
        self.version = version
        self.view = view
        self._stat = os.fstat(dir_fd)
        self._magic = CGROUP_MAGIC[version]
        self._kept: dict[str, int] = {}  # file name → fd held open for pread (the sampled files)
        self._limit: tuple[int | None] | None = None  # the limit last read (None: not yet)

    @classmethod
    def open(
        cls,
        path: str,
        version: int,
        view: str = "host",
        beneath: Sequence[str] = (),
        follow: bool = True,
        dir_fd: int | None = None,
        name: str | None = None,
    ) -> CgroupDir:
        """The cgroup at ``path`` (relative to ``dir_fd`` if given) and then ``beneath`` it, one
        component at a time, none a symlink (``follow=False``: not ``path`` either); refused
        unless it is a directory on the cgroupfs of ``version``. ``name``: what messages call
        it (default: the path)."""
        where = name or os.path.join(path, *beneath)
        try:
            fd = open_dir(path, beneath, follow, dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise CgroupRefused(
                    exc.errno, f"{where}: a symlink or not a directory on the way: not followed"
                ) from None
            hint = " (needs the same UID or CAP_SYS_PTRACE)" if exc.errno == errno.EACCES else ""
            raise CgroupError(exc.errno, f"cannot open {where}: {exc.strerror}{hint}") from None
        try:
            magic = fs_magic(fd)
        except OSError as exc:
            os.close(fd)
            raise CgroupError(exc.errno, f"cannot open {where}: {exc.strerror}") from None
        if magic != CGROUP_MAGIC[version]:
            os.close(fd)
            other = [v for v, m in CGROUP_MAGIC.items() if m == magic]
            if other:  # the kernel's all the same, only not the hierarchy looked for
                raise CgroupError(
                    errno.ENOENT, f"{where} is a cgroup v{other[0]} hierarchy, not v{version}"
                )
            raise CgroupRefused(errno.EPERM, f"{where} is on {fs_name(magic)}, not on cgroupfs")
        return cls(fd, where, version, view)

    def __repr__(self) -> str:
        return f"CgroupDir({self.path!r}, v{self.version}, {self.view} view)"

    @property
    def identity(self) -> tuple[int, int]:
        """(device, inode) of the directory: the same for every view of this cgroup."""
        return self._stat.st_dev, self._stat.st_ino

    @property
    def key(self) -> str:
        return f"cgroup:{self._stat.st_dev}:{self._stat.st_ino}"

    @property
    def cgroup_id(self) -> int:
        """The id the kernel gives the cgroup (kernfs node id): its directory's inode number."""
        return self._stat.st_ino

    def close(self) -> None:
        for fd in self._kept.values():
            os.close(fd)
        self._kept.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        return self._fd

    def duplicate(self) -> CgroupDir:
        """Another handle on this very cgroup (its own descriptors, closed on its own)."""
        return CgroupDir(os.dup(self._fd), self.path, self.version, self.view)

    def alive(self) -> bool:
        """False once the cgroup has been removed (its directory no longer lists its files)."""
        try:
            os.stat("cgroup.procs", dir_fd=self._fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def open_file(self, name: str, flags: int) -> int:
        """One of its files opened with ``flags`` (non-blocking), once checked to be a regular
        file on this cgroupfs; the caller closes it. CgroupRefused, CgroupGone, CgroupError."""
        try:
            with checked_path(self._fd, name, self._stat, self._magic) as path_fd:
                return reopen(path_fd, flags | os.O_NONBLOCK)
        except CgroupRefused as exc:
            raise CgroupRefused(exc.errno, f"{self.path}/{exc.strerror}") from None
        except OSError as exc:
            raise self._error(name, exc) from None

    @contextmanager
    def watch_path(self, name: str) -> Iterator[str]:
        """A path naming exactly the checked file ``name`` (its ``O_PATH`` descriptor under
        /proc/self/fd), for a call that takes a path (inotify), valid inside the block."""
        try:
            with checked_path(self._fd, name, self._stat, self._magic) as path_fd:
                yield f"/proc/self/fd/{path_fd}"
        except CgroupRefused as exc:
            raise CgroupRefused(exc.errno, f"{self.path}/{exc.strerror}") from None
        except OSError as exc:
            raise self._error(name, exc) from None

    def read(self, name: str, most: int = SMALL) -> bytes:
        """One file's bytes (at most ``most``): opened, read, closed (see ``read_kept``)."""
        fd = self.open_file(name, os.O_RDONLY)
        try:
            return self._read_fd(fd, name, most)
        finally:
            os.close(fd)

    def read_kept(self, name: str, most: int = SMALL) -> bytes:
        """One file's bytes through a descriptor kept open from the first read: every sample is
        a single ``pread`` at offset 0, not an open + read + close. Where no descriptor is left
        (EMFILE), it reads as ``read`` does."""
        fd = self._kept.get(name)
        if fd is None:
            if descriptors_scarce():  # kept for what every target needs
                return self.read(name, most)
            try:
                fd = self.open_file(name, os.O_RDONLY)
            except CgroupError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    return self.read(name, most)
                raise
            self._kept[name] = fd
        return self._read_fd(fd, name, most)

    def _read_fd(self, fd: int, name: str, most: int) -> bytes:
        try:
            return read_bounded(fd, most, name)
        except CgroupRefused as exc:
            raise CgroupRefused(exc.errno, f"{self.path}/{exc.strerror}") from None
        except OSError as exc:
            raise self._error(name, exc) from None

    def _error(self, name: str, exc: OSError) -> CgroupError:
        if exc.errno == errno.ENODEV or (exc.errno == errno.ENOENT and not self.alive()):
            return CgroupGone(errno.ENODEV, f"{self.path} was removed")
        return CgroupError(exc.errno, f"cannot read {self.path}/{name}: {exc.strerror}")

    def verify(self) -> None:
        """Check every file oomhero may open here (those present) is the kernel's: CgroupRefused
        for the first that is not, before anything is read or written."""
        for name in _FILES[self.version]:
            try:
                with checked_path(self._fd, name, self._stat, self._magic):
                    pass
            except CgroupRefused as exc:
                raise CgroupRefused(exc.errno, f"{self.path}/{exc.strerror}") from None
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise self._error(name, exc) from None

    def offers(self, interface: str) -> bool:
        """Whether this cgroup's version has ``interface`` to wait on (memory.events,
        memory.pressure, cgroup.event_control); whether it is there is ``has``'s to say."""
        return interface in _NOTIFIES[self.version]

    def has(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def usage(self) -> int:
        """Bytes charged to the cgroup now (and below it)."""
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return parse_number(self.read_kept(name), name)

    def sample(self, inactive_file: bool = True, limit: bool = True) -> MemorySample:
        """Usage and limit. ``inactive_file``: also memory.stat's page cache (what the
        working-set metric subtracts; without it, 0 and memory.stat is not read on v2).
        ``limit``: read the limit again; False: the one read last time (the limit files never
        notify, and rarely change: the sampler re-reads them at its slowest cadence)."""
        if limit or self._limit is None:
            self._limit = (self._read_limit(),)
        current = self.usage()
        stat = parse_flat_keyed(self.read_kept("memory.stat", STAT)) if inactive_file else {}
        key = "inactive_file" if self.version == 2 else "total_inactive_file"
        return MemorySample(current, self._limit[0], stat.get(key, 0))

    def _read_limit(self) -> int | None:
        if self.version == 2:
            return parse_limit(self.read_kept("memory.max"), "memory.max")
        limit = parse_limit(self.read_kept("memory.limit_in_bytes"), "memory.limit_in_bytes")
        # v1 is hierarchical: a parent's smaller limit applies too (memory.stat says which).
        stat = parse_flat_keyed(self.read_kept("memory.stat", STAT))
        inherited = stat.get("hierarchical_memory_limit")
        if inherited is not None and inherited < V1_UNLIMITED_FLOOR:
            limit = inherited if limit is None else min(limit, inherited)
        return limit

    def events(self) -> dict[str, int]:
        """memory.events on v2; on v1 the oom counters of memory.oom_control and failcnt."""
        if self.version == 2:
            return parse_flat_keyed(self.read_kept("memory.events"))
        events = {}
        if self.has("memory.oom_control"):
            oom = parse_flat_keyed(self.read_kept("memory.oom_control"))
            events = {k: v for k, v in oom.items() if k in ("under_oom", "oom_kill")}
        events["failcnt"] = parse_number(self.read_kept("memory.failcnt"), "memory.failcnt")
        return events

    def pressure(self) -> dict[str, dict[str, float]] | None:
        """memory.pressure (PSI) where the kernel offers it, else None."""
        try:
            return parse_pressure(self.read_kept("memory.pressure")) or None
        except CgroupGone:
            raise
        except CgroupError:
            return None

    def pids(self) -> list[int]:
        return parse_pids(self.read("cgroup.procs", LIST))

    def subtree_pids(self) -> list[int]:
        """Pids of this cgroup and every cgroup below it, depth first with one descriptor per
        level open (no symlink followed; over SUBTREE_MOST cgroups is refused)."""
        pids = self.pids()
        self._walk_below(pids, [0])
        return pids

    def _walk_below(self, pids: list[int], walked: list[int]) -> None:
        for child in self.children():
            try:
                walked[0] += 1
                if walked[0] > SUBTREE_MOST:
                    raise CgroupRefused(errno.E2BIG, f"over {SUBTREE_MOST} cgroups below")
                pids.extend(child.pids())
                child._walk_below(pids, walked)
            except CgroupGone:
                continue  # removed while walking
            finally:
                child.close()

    def children(self) -> Iterator[CgroupDir]:
        """The cgroups right below this one (directories on the same cgroupfs only)."""
        try:
            listing = reopen(self._fd, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise self._error(".", exc) from None
        try:
            names = [e.name for e in os.scandir(listing) if e.is_dir(follow_symlinks=False)]
        finally:
            os.close(listing)
        for name in sorted(names):
            where = f"{self.path}/{name}"
            try:
                child = CgroupDir.open(
                    name, self.version, self.view, follow=False, dir_fd=self._fd, name=where
                )
            except CgroupError:
                continue  # removed meanwhile, or something mounted there that is not a cgroup
            yield child
