"""``oomhero node``: one agent per node (a DaemonSet with hostPID and the host's cgroup tree).

It finds every container cgroup under kubelet's kubepods hierarchy — the cgroupfs driver
(``kubepods/<qos>/pod<uid>/<container id>``) and the systemd driver
(``kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope``),
on cgroup v2 and v1 — and watches those that opt in:
- a container opts in itself with ``OOMHERO_WARNING``/``OOMHERO_CRITICAL``/… in its own
  environment (read from ``/proc/<pid>/environ``); those values apply to it alone;
- or the agent watches everything (``--all``) or what ``--include`` globs match, with the agent's
  settings; ``--exclude`` globs (matched against the cgroup path below the root) win over both.
A container whose own settings are invalid is not watched, and says why once.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from oomhero import log
from oomhero.config import ConfigError, Setting, WatchSettings, build_watch_settings
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.kernel.procfs import ProcInfo, read_environ, read_proc
from oomhero.targets import Found

# A pod's directory in either driver; its children are the pod's containers.
POD_DIR = re.compile(
    r"(^|-)pod[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}(\.slice)?$"
)
# Per-container settings, named like the agent's env vars with an OOMHERO_ prefix.
CONTAINER_ENV = {
    "OOMHERO_WARNING": "warning",
    "OOMHERO_CRITICAL": "critical",
    "OOMHERO_COOLDOWN": "cooldown",
    "OOMHERO_WARNING_SIGNAL": "warning_signal",
    "OOMHERO_CRITICAL_SIGNAL": "critical_signal",
    "OOMHERO_HYSTERESIS": "hysteresis",
}


def memory_root(root: str) -> tuple[str, int]:
    """The memory hierarchy under a mounted cgroup tree: (path, version)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return root, 2
    if os.path.exists(os.path.join(root, "memory.usage_in_bytes")):
        return root, 1  # the v1 memory hierarchy itself
    if os.path.isdir(os.path.join(root, "memory")):
        return os.path.join(root, "memory"), 1
    raise CgroupError(errno.ENOENT, f"{root} holds neither a cgroup v2 tree nor a v1 memory/ one")


def container_dirs(memory: str) -> list[str]:
    """Every container cgroup below the kubepods hierarchies (pod directories' children)."""
    found = []
    for top in ("kubepods.slice", "kubepods"):
        base = os.path.join(memory, top)
        for parent, dirs, _ in os.walk(base):
            if POD_DIR.search(os.path.basename(parent)):
                found.extend(os.path.join(parent, d) for d in sorted(dirs))
                dirs.clear()  # nothing below a container is a container
    return found


def container_settings(environ: bytes) -> dict[str, Setting]:
    """The OOMHERO_* settings in a process environment (``/proc/<pid>/environ``)."""
    settings = {}
    for entry in environ.split(b"\0"):
        name, _, value = entry.decode(errors="replace").partition("=")
        if name in CONTAINER_ENV:
            settings[CONTAINER_ENV[name]] = Setting(name, value)
    return settings


@dataclass
class NodeScanner:
    """Finds opted-in containers on every scan."""

    root: str
    defaults: WatchSettings
    watch_all: bool = False
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    proc: str = "/proc"
    said: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.memory, self.version = memory_root(self.root)

    def scan(self) -> dict[str, Found]:
        found = {}
        for path in container_dirs(self.memory):
            name = "/" + os.path.relpath(path, self.memory)
            members = self._members(path)
            if not members or any(fnmatch.fnmatch(name, g) for g in self.exclude):
                continue
            own = self._own_settings(members)
            settings = self._settings_for(name, own)
            if settings is None:
                continue
            if own or self.watch_all or any(fnmatch.fnmatch(name, g) for g in self.include):
                found[path] = Found(name, members, self._opener(path), settings, CgroupDir.pids)
        return found

    def _members(self, path: str) -> list[ProcInfo]:
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            return []  # removed while scanning
        return [info for pid in pids if (info := read_proc(pid, self.proc))]

    def _own_settings(self, members: list[ProcInfo]) -> dict[str, Setting]:
        for info in members:
            try:
                return container_settings(read_environ(info.pid, self.proc))
            except OSError:
                continue
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
        return lambda: CgroupDir(path, self.version, "node")
