"""Finding the memory cgroup of a process, or of a path given on the command line.

Two ways to reach a process's cgroup:
- its own view, ``/proc/<pid>/root/sys/fs/cgroup`` — what a sidecar in a pod with a shared PID
  namespace uses; with a cgroup namespace this directory *is* the container's cgroup;
- the host view: ``/proc/<pid>/cgroup`` joined onto this process's own cgroup mount.
A candidate directory is only accepted once the pid is listed in its ``cgroup.procs``, so a view
that shows some other cgroup (no cgroup namespace, nested groups) is never mistaken for the target.
The root view is the container's to shape: it is walked without following symlinks and must be
cgroupfs (``CgroupDir.open``); a view that is not is refused outright, never read.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from oomhero.kernel.cgroup import CGROUP_MOUNT, CgroupDir, CgroupError, CgroupRefused
from oomhero.kernel.procfs import read_text

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


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


def membership_of(pid: int, proc: str = "/proc") -> Membership | None:
    try:
        return memory_membership(parse_proc_cgroup(read_text(f"{proc}/{pid}/cgroup")))
    except (OSError, ValueError):
        return None


def own_mounts() -> list[Mount]:
    return parse_mountinfo(read_text("/proc/self/mountinfo"))


def open_own() -> CgroupDir | None:
    """This process's own memory cgroup (host view), or None where it cannot be seen."""
    membership = membership_of(os.getpid())
    if membership is None:
        return None
    try:
        return open_host_view(os.getpid(), membership, own_mounts())
    except CgroupError:
        return None


def host_view_path(membership: Membership, mounts: list[Mount]) -> str:
    """Where this process sees the cgroup named by ``membership``; raises CgroupError if nowhere."""
    mount, parts = _host_view(membership, mounts)
    return str(PurePosixPath(mount.mount_point, *parts))


def _host_view(membership: Membership, mounts: list[Mount]) -> tuple[Mount, tuple[str, ...]]:
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
    return mount, relative.parts


def _with_member(cgroup: CgroupDir, pid: int) -> CgroupDir | None:
    """``cgroup`` if ``pid`` is listed in it, else None (and it is closed)."""
    try:
        if pid in cgroup.pids():
            return cgroup
    except CgroupError:
        pass
    cgroup.close()
    return None


def open_root_view(pid: int, membership: Membership, proc: str = "/proc") -> CgroupDir:
    """The target's cgroup as the target itself sees it, under ``/proc/<pid>/root``: a view the
    container controls, refused (CgroupRefused) where it is not cgroupfs all the way."""
    root = f"{proc}/{pid}/root"
    base = tuple(CGROUP_MOUNT.strip("/").split("/")) + (
        ("memory",) if membership.version == 1 else ()
    )
    where = f"{root}/{'/'.join(base)}"
    # With a cgroup namespace the base is the target's cgroup; without one, or when the process
    # sits in a nested group, the target's cgroup is some suffix of its path below the base.
    parts = tuple(p for p in PurePosixPath(membership.path).parts if p not in ("/", ".."))
    first_error: CgroupError | None = None
    for start in range(len(parts) + 1):
        below = base + parts[len(parts) - start :]
        try:
            cgroup = CgroupDir.open(root, membership.version, "root", below)
        except CgroupRefused:
            raise
        except CgroupError as exc:
            first_error = first_error or exc
            if exc.errno in (errno.EACCES, errno.EPERM) or start == 0:
                raise  # the view itself cannot be read: no deeper candidate can be either
            continue
        found = _with_member(cgroup, pid)
        if found:
            return found
    if first_error is not None and len(parts) == 0:
        raise first_error
    raise CgroupError(errno.ENOENT, f"pid {pid} is not in any cgroup below {where}")


def open_host_view(pid: int, membership: Membership, mounts: list[Mount]) -> CgroupDir:
    mount, parts = _host_view(membership, mounts)
    cgroup = CgroupDir.open(mount.mount_point, membership.version, "host", parts)
    found = _with_member(cgroup, pid)
    if found is None:
        raise CgroupError(errno.ENOENT, f"pid {pid} is not listed in {cgroup.path}/cgroup.procs")
    return found


def open_for_pid(pid: int, prefer_root_view: bool, proc: str = "/proc") -> CgroupDir:
    """Find and open the memory cgroup of ``pid``; the error says why each view failed. A root
    view that is not cgroupfs is refused (CgroupRefused) whatever the host view says: that
    container is shaping what oomhero would read."""
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
        except CgroupRefused:
            raise
        except CgroupError as exc:
            errors.append(f"{name}: {exc.strerror}")
    raise CgroupError(
        errno.ENOENT, f"cannot read the memory cgroup of pid {pid}: " + "; ".join(errors)
    )


_USAGE_FILE = {2: "memory.current", 1: "memory.usage_in_bytes"}


def open_path(spec: str, mounts: list[Mount]) -> CgroupDir:
    """A cgroup given on the command line: a directory path, or a path below the memory mount.
    The user's own symlinks are followed; what it leads to must be cgroupfs."""
    candidates = [(spec, version) for version in (2, 1)] if os.path.isabs(spec) else []
    for version in (2, 1):
        mount = memory_mount(mounts, version)
        if mount:
            candidates.append((os.path.join(mount.mount_point, spec.lstrip("/")), version))
    refused: CgroupRefused | None = None
    for path, version in candidates:
        try:
            cgroup = CgroupDir.open(os.path.normpath(path), version, "host")
        except CgroupRefused as exc:
            refused = refused or exc
            continue
        except CgroupError:
            continue
        if cgroup.has(_USAGE_FILE[version]):
            return cgroup
        cgroup.close()
    if refused is not None:
        raise refused
    raise CgroupError(
        errno.ENOENT,
        f"{spec!r} is not a memory cgroup (no memory.current or memory.usage_in_bytes "
        "under it, nor under the memory hierarchy mounted here)",
    )
