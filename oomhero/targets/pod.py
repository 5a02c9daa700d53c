"""Sidecar mode: the other containers of the pod, seen through the shared PID namespace."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from oomhero.kernel.cgroup import CgroupDir, CgroupError, CgroupRefused
from oomhero.kernel.locate import membership_of, open_for_pid
from oomhero.kernel.procfs import ProcInfo, list_pids, read_proc
from oomhero.targets import Found, Reader

# The pod's init, PID 1 of a shared PID namespace: Kubernetes' pause, podman's catatonit (its
# pause). Neither allocates nor handles SIGUSR1/2; watching its cgroup (no limit) is noise.
POD_INIT = ("pause", "catatonit")


class PodScanner:
    """Sidecar mode: every process of this PID namespace, grouped by memory cgroup, except
    oomhero itself, the processes of its own cgroup (its container), and the pod's init (pause)."""

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
            if pid == 1 and info.comm in POD_INIT:
                continue
            groups.setdefault(membership.key, []).append(info)
            paths[membership.key] = membership.path
        return {
            key: Found(paths[key], members, self._opener(members), pids=CgroupDir.pids)
            for key, members in groups.items()
        }

    def close(self) -> None:
        pass  # it keeps nothing open between scans

    def _opener(self, members: list[ProcInfo]) -> Callable[[], Reader]:
        def open_reader() -> Reader:
            errors = []
            for info in members:
                try:
                    cgroup = open_for_pid(info.pid, prefer_root_view=True, proc=self.proc)
                except CgroupRefused:
                    raise  # the container shapes its cgroup view: refused, whoever is in it
                except CgroupError as exc:
                    errors.append(exc)
                    continue
                # The same process afterwards: its pid was not reused by another container's.
                again = read_proc(info.pid, self.proc)
                if again is not None and again.starttime == info.starttime:
                    return cgroup
                cgroup.close()
                errors.append(CgroupError(errno.ESRCH, f"pid {info.pid} exited meanwhile"))
            raise errors[0]

        return open_reader
