"""``oomhero node``: one agent per node (a DaemonSet with hostPID and the host's cgroup tree).

It finds containers of any runtime by what they all share: a container is a memory cgroup whose
subtree holds processes, with a memory limit or a container runtime's name, and with no such
cgroup below it (so a kind or k3d node, itself a container, counts the pods inside it, not
itself). The names of the known runtimes label what is found:
- Kubernetes pods (``kubepods``): the children of a pod's directory, in the systemd driver
  (``kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope``,
  ``crio-<id>.scope``, ``docker-<id>.scope``) and the cgroupfs one
  (``kubepods/<qos>/pod<uid>/<id>``), wherever the kubelet's root is (``kubelet.slice/...``,
  below a kind node's own container...);
- podman (``libpod-<id>.scope`` in ``machine.slice``, ``libpod_parent/libpod-<id>``), Docker
  (``docker-<id>.scope``, ``docker/<id>``), CRI-O (``crio-<id>.scope``), containerd's nerdctl
  (``nerdctl-<id>.scope``); anything else found by its limit is ``other``.
Runtime monitors (conmon) and a pod's sandbox (pause, catatonit) are not containers. Both cgroup
v2 and the v1 memory hierarchy. ``--cgroup-root`` may name a subtree (``.../kubepods.slice``)
to look only there.

Of those, it watches the ones that opt in:
- a container opts in itself with ``OOMHERO_WARNING``/``OOMHERO_CRITICAL``/… in its own
  environment (read from ``/proc/<pid>/environ``); those values apply to it alone;
- or the agent watches everything (``--all``) or what ``--include`` globs match, with the agent's
  settings; ``--exclude`` globs (matched against the cgroup path below the root) win over both.
A container whose own settings are invalid is not watched, and says why once. Each scan that
changes what was found logs one line: how many cgroups were scanned, the containers by runtime,
how many are watched.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from oomhero import log
from oomhero.config import ConfigError, Setting, WatchSettings, build_watch_settings
from oomhero.kernel.cgroup import LIST, SMALL, CgroupDir, CgroupError
from oomhero.kernel.cgroup_parse import parse_limit, parse_pids
from oomhero.kernel.cgroupfs import read_bounded
from oomhero.kernel.procfs import ProcInfo, read_environ_memory, read_proc
from oomhero.targets import Found
from oomhero.targets.pod import POD_INIT

# A pod's directory in either driver; its children are the pod's containers (and its sandbox).
POD_DIR = re.compile(
    r"(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
    r"(?:\.slice)?$"
)
_ID = "([0-9a-f]{64})"
# A container's own cgroup, by runtime: systemd scopes, and cgroupfs directories.
RUNTIME_NAMES = (
    (re.compile(rf"^cri-containerd-{_ID}\.scope$"), "containerd"),
    (re.compile(rf"^crio-{_ID}\.scope$"), "cri-o"),
    (re.compile(rf"^docker-{_ID}\.scope$"), "docker"),
    (re.compile(rf"^libpod-{_ID}(?:\.scope)?$"), "podman"),
    (re.compile(rf"^nerdctl-{_ID}\.scope$"), "containerd"),
)
BARE_ID = re.compile(rf"^{_ID}$")  # cgroupfs drivers: kubepods' pod children, docker/<id>
# Where a runtime's monitor runs (podman's and CRI-O's conmon): never a container.
MONITOR = re.compile(rf"^(?:libpod-conmon-{_ID}\.scope|crio-conmon-{_ID}\.scope|conmon)$")
# Read bounds: the host's cgroup files are bounded as CgroupDir bounds a container's (SMALL,
# LIST: a larger file is not read); an environment past 1 MiB (the kernel allows a quarter of
# the stack limit) is read up to there.
ENVIRON_BOUND = 1 << 20
# Per-container settings, named like the agent's env vars with an OOMHERO_ prefix.
CONTAINER_ENV = {
    "OOMHERO_WARNING": "warning",
    "OOMHERO_CRITICAL": "critical",
    "OOMHERO_COOLDOWN": "cooldown",
    "OOMHERO_WARNING_SIGNAL": "warning_signal",
    "OOMHERO_CRITICAL_SIGNAL": "critical_signal",
    "OOMHERO_HYSTERESIS": "hysteresis",
}
VERSION_FILES = {  # (usage, limit) per cgroup version
    2: ("memory.current", "memory.max"),
    1: ("memory.usage_in_bytes", "memory.limit_in_bytes"),
}


@dataclass(frozen=True)
class Labels:
    """What a container's cgroup path says about it; "" where it says nothing."""

    runtime: str  # containerd, cri-o, docker, podman, or "" (not known by its name)
    container_id: str = ""
    pod_uid: str = ""  # a Kubernetes pod's UID

    @property
    def group(self) -> str:
        """How the scan's summary counts it: Kubernetes pods together, then by runtime."""
        return "kubepods" if self.pod_uid else self.runtime or "other"


def labels_of(parts: tuple[str, ...]) -> Labels | None:
    """The labels of a cgroup from its path's components below the root, if its name is a
    container runtime's (a pod's child counts whatever its name); None if it says nothing."""
    name, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    if MONITOR.match(name):
        return None
    runtime, container_id = "", ""
    for pattern, known in RUNTIME_NAMES:
        if match := pattern.match(name):
            runtime, container_id = known, match.group(1)
            break
    else:
        if match := BARE_ID.match(name):
            container_id = match.group(1)
            runtime = "docker" if parent == "docker" else ""
    pod = POD_DIR.search(parent)
    if pod:
        return Labels(runtime, container_id, pod.group(1).replace("_", "-"))
    return Labels(runtime, container_id) if runtime else None


@dataclass(frozen=True)
class Container:
    path: str  # the cgroup directory
    name: str  # its path below the root, "/"-prefixed
    labels: Labels
    pids: tuple[int, ...]  # every process of its subtree


@dataclass
class _Subtree:
    """A directory of the walk, once its subtree is done."""

    pids: list[int]
    contains: bool  # a container is at or below it


def memory_root(root: str) -> tuple[str, int]:
    """The memory hierarchy under a mounted cgroup tree: (path, version)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return root, 2
    if os.path.exists(os.path.join(root, "memory.usage_in_bytes")):
        return root, 1  # the v1 memory hierarchy itself
    if os.path.isdir(os.path.join(root, "memory")):
        return os.path.join(root, "memory"), 1
    raise CgroupError(errno.ENOENT, f"{root} holds neither a cgroup v2 tree nor a v1 memory/ one")


_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _read_cgroup_file(dir_fd: int, name: str, most: int) -> bytes | None:
    """A file of the walk's directory ``dir_fd``, never through a symlink nor blocking on a
    FIFO; None when it cannot be read whole (gone, not a plain file, larger than ``most``)."""
    try:
        fd = os.open(name, _OPEN, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return read_bounded(fd, most, name)
    except OSError:  # CgroupRefused past the bound; ESPIPE from a FIFO
        return None
    finally:
        os.close(fd)


def _pids(dir_fd: int) -> list[int]:
    data = _read_cgroup_file(dir_fd, "cgroup.procs", LIST)
    try:
        return parse_pids(data or b"")
    except CgroupError:  # not a process list
        return []


def _has_limit(dir_fd: int, version: int) -> bool:
    data = _read_cgroup_file(dir_fd, VERSION_FILES[version][1], SMALL)
    try:
        return data is not None and parse_limit(data) is not None
    except CgroupError:
        return False


def _read_environ(path: str) -> bytes | None:
    """The first ENVIRON_BOUND bytes of a process's environ, without following a symlink or
    blocking; None when it cannot be read (gone, another UID's)."""
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return None
    try:
        return os.read(fd, ENVIRON_BOUND)  # the kernel fills a read of environ up to its count
    except OSError:
        return None
    finally:
        os.close(fd)


def find_containers(memory: str, version: int) -> tuple[int, list[Container]]:
    """Every container below ``memory`` (see the module's docstring), and how many cgroups the
    walk saw. Bottom-up, without following symlinks; the top itself is never a container."""
    usage_file = VERSION_FILES[version][0]
    seen: dict[str, _Subtree] = {}
    containers: list[Container] = []
    walked = 0
    for path, dirs, files, dir_fd in os.fwalk(memory, topdown=False, follow_symlinks=False):
        walked += 1
        pids = _pids(dir_fd)
        below = [seen.pop(os.path.join(path, d)) for d in dirs if os.path.join(path, d) in seen]
        for child in below:
            pids.extend(child.pids)
        contains = any(child.contains for child in below)
        if pids and not contains and path != memory and usage_file in files:
            parts = tuple(os.path.relpath(path, memory).split(os.sep))
            labels = labels_of(parts)
            if labels is None and not MONITOR.match(parts[-1]) and _has_limit(dir_fd, version):
                labels = Labels("")
            if labels is not None:
                containers.append(Container(path, "/" + "/".join(parts), labels, tuple(pids)))
                contains = True
        seen[path] = _Subtree(pids, contains)
    return walked, containers


@dataclass(frozen=True)
class Seen:
    """A container as one scan judged it."""

    container: Container
    verdict: str  # "watched: <why>", "not opted in", "excluded", "invalid settings"
    found: Found | None = None  # what the engine watches, when watched


def container_settings(environ: bytes) -> dict[str, Setting]:
    """The OOMHERO_* settings in a process environment (``/proc/<pid>/environ``)."""
    settings = {}
    for entry in environ.split(b"\0"):
        name, _, value = entry.decode(errors="replace").partition("=")
        if name in CONTAINER_ENV:
            settings[CONTAINER_ENV[name]] = Setting(name, value)
    return settings


def open_container(path: str, version: int) -> CgroupDir:
    """A found container's cgroup, opened for watching (checked to be cgroupfs, as any)."""
    return CgroupDir.open(path, version, "node", follow=False)


@dataclass
class NodeScanner:
    """Finds the containers below the root, and the opted-in ones among them, on every scan."""

    root: str
    defaults: WatchSettings
    watch_all: bool = False
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    proc: str = "/proc"
    said: set[str] = field(default_factory=set)
    summary: tuple | None = None  # what the last summary line said

    def __post_init__(self) -> None:
        self.memory, self.version = memory_root(self.root)
        self.self_pid = os.getpid()

    def survey(self) -> tuple[int, list[Seen]]:
        """Every container below the root and what becomes of it (``Seen.verdict``); and how
        many cgroups the walk saw. The agent's own container and pods' sandboxes are left out."""
        walked, containers = find_containers(self.memory, self.version)
        seen = []
        for container in containers:
            if self.self_pid in container.pids:
                continue  # the agent's own container
            members = [info for pid in container.pids if (info := read_proc(pid, self.proc))]
            if not members or all(info.comm in POD_INIT for info in members):
                continue  # gone while scanning, or a pod's sandbox
            seen.append(self._judge(container, members))
        return walked, seen

    def _judge(self, container: Container, members: list[ProcInfo]) -> Seen:
        if any(fnmatch.fnmatch(container.name, g) for g in self.exclude):
            return Seen(container, "excluded")
        own = self._own_settings(members)
        settings = self._settings_for(container.name, own)
        if settings is None:
            return Seen(container, "invalid settings")
        if own:
            why = "its own settings"
        elif self.watch_all:
            why = "--all"
        elif any(fnmatch.fnmatch(container.name, g) for g in self.include):
            why = "--include"
        else:
            return Seen(container, "not opted in")
        opener = self._opener(container.path)
        found = Found(container.name, members, opener, settings, pids=CgroupDir.pids)
        return Seen(container, f"watched: {why}", found)

    def scan(self) -> dict[str, Found]:
        walked, seen = self.survey()
        found = {s.container.path: s.found for s in seen if s.found}
        self._summarise(walked, Counter(s.container.labels.group for s in seen), len(found))
        return found

    def close(self) -> None:
        pass  # it keeps nothing open between scans

    def _summarise(self, walked: int, counted: Counter, watching: int) -> None:
        """One line when what the scan found changed (not for each cgroup come and gone)."""
        summary = (sorted(counted.items()), watching)
        if summary == self.summary:
            return
        self.summary = summary
        total = sum(counted.values())
        ranked = sorted(counted.items(), key=lambda item: (-item[1], item[0]))  # most first
        by_runtime = ", ".join(f"{group} {n}" for group, n in ranked)
        fields: dict[str, object] = {
            "cgroups": walked,
            "containers": total,
            "runtimes": by_runtime or "none",
            "watching": watching,
            "root": self.memory,
        }
        if not total:
            fields["hint"] = (
                "no cgroup below the root holds processes under a memory limit or a container "
                "runtime's name: is the host's cgroup tree mounted there?"
            )
        log.event(logging.WARNING if not total else logging.INFO, "node scanned", **fields)

    def _own_settings(self, members: list[ProcInfo]) -> dict[str, Setting]:
        for info in members:
            environ = _read_environ(f"{self.proc}/{info.pid}/environ")
            if environ is None:  # another UID's (mode 0400): from its memory, with ptrace
                with contextlib.suppress(OSError):
                    environ = read_environ_memory(info.pid, ENVIRON_BOUND, self.proc)
            if environ is not None:
                return container_settings(environ)
        return {}

    def _settings_for(self, name: str, own: dict[str, Setting]) -> WatchSettings | None:
        if not own:
            return self.defaults
        try:
            return build_watch_settings(own, self.defaults)
        except ConfigError as exc:
            if name not in self.said:
                self.said.add(name)
                log.event(
                    logging.ERROR,
                    "container settings invalid: not watched",
                    target=name,
                    why=str(exc),
                )
            return None

    def _opener(self, path: str) -> Callable[[], CgroupDir]:
        return lambda: open_container(path, self.version)
