"""Reading memory cgroups, v2 and v1, and finding the cgroup of a process.

Two ways to reach a process's cgroup:
- its own view, ``/proc/<pid>/root/sys/fs/cgroup`` — what a sidecar in a pod with a shared PID
  namespace uses; with a cgroup namespace this directory *is* the container's cgroup;
- the host view: ``/proc/<pid>/cgroup`` joined onto this process's own cgroup mount.
A candidate directory is only accepted once the pid is listed in its ``cgroup.procs``, so a view
that shows some other cgroup (no cgroup namespace, nested groups) is never mistaken for the target.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")

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


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` → {controller: path}; the v2 hierarchy is under the key ``""``."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            result[controller] = path
    return result


@dataclass(frozen=True)
class Membership:
    """Which memory cgroup a process is in, as this process's cgroup namespace names it."""

    version: int
    path: str

    @property
    def key(self) -> str:
        return f"v{self.version}:{self.path}"


def memory_membership(proc_cgroup: dict[str, str]) -> Membership | None:
    """The memory controller is on v1 when a v1 ``memory`` line exists, else on v2."""
    if "memory" in proc_cgroup:
        return Membership(1, proc_cgroup["memory"])
    if "" in proc_cgroup:
        return Membership(2, proc_cgroup[""])
    return None


@dataclass(frozen=True)
class Mount:
    mount_point: str
    root: str
    fstype: str
    super_options: tuple[str, ...]


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mounts.append(
            Mount(
                mount_point=_unescape(fields[4]),
                root=_unescape(fields[3]),
                fstype=rfields[0],
                super_options=tuple(rfields[2].split(",")),
            )
        )
    return mounts


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040); the rest is UTF-8.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def memory_mount(mounts: list[Mount], version: int) -> Mount | None:
    # The last match: a later mount over the same place hides the earlier one (a container
    # that mounts its own cgroup view over the one it inherited still lists both).
    for mount in reversed(mounts):
        if version == 2 and mount.fstype == "cgroup2":
            return mount
        if version == 1 and mount.fstype == "cgroup" and "memory" in mount.super_options:
            return mount
    return None


class CgroupDir:
    """An open memory cgroup directory. Holds a directory fd, so reads need no path walk and a
    target's view stays valid when the process that led to it exits."""

    def __init__(self, path: str, version: int, view: str = "host") -> None:
        self.path = path
        self.version = version
        self.view = view
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise CgroupError(exc.errno, f"cannot open cgroup {path}: {exc.strerror}") from None

    def __repr__(self) -> str:
        return f"CgroupDir({self.path!r}, v{self.version}, {self.view} view)"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        return self._fd

    def read(self, name: str) -> str:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._fd)
        except OSError as exc:
            raise CgroupError(
                exc.errno, f"cannot read {self.path}/{name}: {exc.strerror}"
            ) from None
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks).decode()
        except OSError as exc:
            raise CgroupError(
                exc.errno, f"cannot read {self.path}/{name}: {exc.strerror}"
            ) from None
        finally:
            os.close(fd)

    def has(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self._fd)
        except OSError:
            return False
        return True

    def sample(self) -> MemorySample:
        if self.version == 2:
            current = int(self.read("memory.current"))
            limit = parse_limit(self.read("memory.max"))
            inactive = parse_flat_keyed(self.read("memory.stat")).get("inactive_file", 0)
            return MemorySample(current, limit, inactive)
        current = int(self.read("memory.usage_in_bytes"))
        limit = parse_limit(self.read("memory.limit_in_bytes"))
        stat = parse_flat_keyed(self.read("memory.stat"))
        # v1 is hierarchical: a parent's smaller limit applies too.
        inherited = stat.get("hierarchical_memory_limit")
        if inherited is not None and inherited < V1_UNLIMITED_FLOOR:
            limit = inherited if limit is None else min(limit, inherited)
        return MemorySample(current, limit, stat.get("total_inactive_file", 0))

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


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def membership_of(pid: int, proc: str = "/proc") -> Membership | None:
    try:
        return memory_membership(parse_proc_cgroup(read_text(f"{proc}/{pid}/cgroup")))
    except (OSError, ValueError):
        return None


def own_mounts() -> list[Mount]:
    return parse_mountinfo(read_text("/proc/self/mountinfo"))


def host_view_path(membership: Membership, mounts: list[Mount]) -> str:
    """Where this process sees the cgroup named by ``membership``; raises CgroupError if nowhere."""
    mount = memory_mount(mounts, membership.version)
    if mount is None:
        raise CgroupError(
            errno.ENOENT, f"no cgroup v{membership.version} memory hierarchy is mounted here"
        )
    path = PurePosixPath(membership.path)
    if ".." in path.parts:
        raise CgroupError(errno.ENOENT, "the cgroup lies outside this cgroup namespace")
    try:
        relative = path.relative_to(mount.root)
    except ValueError:
        raise CgroupError(
            errno.ENOENT, f"the cgroup {path} is not under the mounted part {mount.root}"
        ) from None
    return str(PurePosixPath(mount.mount_point) / relative)


def _dir_with_member(path: str, version: int, view: str, pid: int) -> CgroupDir | None:
    try:
        cgroup = CgroupDir(path, version, view)
    except CgroupError:
        return None
    try:
        if pid in cgroup.pids():
            return cgroup
    except CgroupError:
        pass
    cgroup.close()
    return None


def open_root_view(pid: int, membership: Membership, proc: str = "/proc") -> CgroupDir:
    """The target's cgroup as the target itself sees it, under ``/proc/<pid>/root``."""
    base = f"{proc}/{pid}/root/sys/fs/cgroup" + ("/memory" if membership.version == 1 else "")
    try:
        os.stat(base)
    except OSError as exc:
        hint = " (needs the same UID or CAP_SYS_PTRACE)" if exc.errno == errno.EACCES else ""
        raise CgroupError(exc.errno, f"cannot read {base}: {exc.strerror}{hint}") from None
    # With a cgroup namespace the base is the target's cgroup; without one, or when the process
    # sits in a nested group, the target's cgroup is some suffix of its path below the base.
    parts = [p for p in PurePosixPath(membership.path).parts if p not in ("/", "..")]
    for start in range(len(parts) + 1):
        candidate = os.path.join(base, *parts[len(parts) - start :]) if start else base
        found = _dir_with_member(candidate, membership.version, "root", pid)
        if found:
            return found
    raise CgroupError(errno.ENOENT, f"pid {pid} is not in any cgroup below {base}")


def open_host_view(pid: int, membership: Membership, mounts: list[Mount]) -> CgroupDir:
    path = host_view_path(membership, mounts)
    found = _dir_with_member(path, membership.version, "host", pid)
    if found is None:
        raise CgroupError(errno.ENOENT, f"pid {pid} is not listed in {path}/cgroup.procs")
    return found


def open_for_pid(pid: int, prefer_root_view: bool, proc: str = "/proc") -> CgroupDir:
    """Find and open the memory cgroup of ``pid``; the error says why each view failed."""
    membership = membership_of(pid, proc)
    if membership is None:
        raise CgroupError(errno.ESRCH, f"pid {pid} is gone or has no memory cgroup")
    errors = []
    openers = [
        ("root view", lambda: open_root_view(pid, membership, proc)),
        ("host view", lambda: open_host_view(pid, membership, own_mounts())),
    ]
    if not prefer_root_view:
        openers.reverse()
    for name, opener in openers:
        try:
            return opener()
        except CgroupError as exc:
            errors.append(f"{name}: {exc.strerror}")
    raise CgroupError(
        errno.ENOENT, f"cannot read the memory cgroup of pid {pid}: " + "; ".join(errors)
    )


_USAGE_FILE = {2: "memory.current", 1: "memory.usage_in_bytes"}


def open_path(spec: str, mounts: list[Mount]) -> CgroupDir:
    """A cgroup given on the command line: a directory path, or a path below the memory mount."""
    candidates = [(spec, version) for version in (2, 1)] if os.path.isabs(spec) else []
    for version in (2, 1):
        mount = memory_mount(mounts, version)
        if mount:
            candidates.append((os.path.join(mount.mount_point, spec.lstrip("/")), version))
    for path, version in candidates:
        if os.path.exists(os.path.join(path, _USAGE_FILE[version])):
            return CgroupDir(os.path.normpath(path), version, "host")
    raise CgroupError(
        errno.ENOENT,
        f"{spec!r} is not a memory cgroup (no memory.current or memory.usage_in_bytes "
        "under it, nor under the memory hierarchy mounted here)",
    )
