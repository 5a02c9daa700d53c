"""A pod as Kubernetes makes one with ``shareProcessNamespace: true``, for the sidecar runs.

One PID namespace whose PID 1 is a "pause" process; oomhero as the sidecar (no command, its
flags as a pod spec gives them) in a cgroup of its own, in the mount namespace whose /proc is
the pod's; each app container in its own cgroup and its own mount and cgroup namespaces, with
cgroup2 mounted at its /sys/fs/cgroup, so that oomhero finds it by scanning /proc and reads it
through /proc/<pid>/root/sys/fs/cgroup. A restarted container is a new one, in a new cgroup, as
a container runtime makes it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from kit import (
    make_cgroup,
    members,
    oomhero_argv,
    oomhero_env,
    oomhero_tree,
    remove_tree,
    spawn_in,
    write,
)
from watcher import COMMON, Mode, Watcher

# PID 1 of the pod: names itself "pause" (which oomhero's pod scan leaves out, as Kubernetes'
# pause container) and reaps whatever is reparented to it, until it is killed.
INIT = """
import ctypes, os, signal
ctypes.CDLL(None).prctl(15, b"pause", 0, 0, 0)
signal.signal(signal.SIGCHLD, lambda *_: None)
while True:
    try:
        os.wait()
    except ChildProcessError:
        signal.pause()
"""


def _ns_pids(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    return []


class Container:
    """One app container: its cgroup, and its process as this (the guest's) PID namespace
    numbers it."""

    def __init__(self, cgroup: Path, launcher: subprocess.Popen) -> None:
        self.cgroup, self.launcher = cgroup, launcher
        start = time.monotonic()
        while not (pids := members(cgroup)):
            if launcher.poll() is not None or time.monotonic() - start > 30:
                raise RuntimeError(f"container {cgroup.name} did not start")
            time.sleep(0.01)
        self.pid = pids[0]

    def close(self) -> None:
        remove_tree(self.cgroup)
        self.launcher.wait()


class Pod:
    def __init__(self, name: str) -> None:
        self.cgroup = make_cgroup(name)
        write(self.cgroup / "cgroup.subtree_control", "+memory")
        pause = make_cgroup("pause", parent=self.cgroup)
        argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", INIT]
        self.unshare = spawn_in(pause, argv)
        start = time.monotonic()
        while True:  # the pause process: PID 1 of the new namespace
            found = [p for p in members(pause) if _ns_pids(p)[-1:] == ["1"]]
            if found:
                self.pause = found[0]
                break
            if time.monotonic() - start > 30:
                raise RuntimeError("the pod's pause process did not start")
            time.sleep(0.01)

    def enter(self, cgroup: Path, command: str, **popen: object) -> subprocess.Popen:
        """Run the shell ``command`` in the pod (its PID namespace, and the mount namespace
        whose /proc is the pod's), in ``cgroup``, joined before anything else runs."""
        shell = f"echo $$ > {shlex.quote(str(cgroup / 'cgroup.procs'))} && {command}"
        # --root --wd: the pause process's root (the guest runs chrooted), not the namespace's.
        argv = ["nsenter", "-t", str(self.pause), "--pid", "--mount", "--root", "--wd"]
        argv += ["--", "sh", "-c", shell]
        return subprocess.Popen(argv, **popen)

    def container(self, name: str, limit: int | None, command: str) -> Container:
        """An app container running the shell ``command`` (as its PID 1's child would, here
        the pod's): its own cgroup, cgroup namespace and cgroup2 mount at /sys/fs/cgroup."""
        cgroup = make_cgroup(name, limit, parent=self.cgroup)
        # The kernel refuses the same cgroup2 superblock on top of its own mount root: detach
        # the pod's view first (in the new mount namespace only).
        inner = f"umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && {command}"
        launcher = self.enter(cgroup, f"exec unshare --cgroup --mount sh -c {shlex.quote(inner)}")
        return Container(cgroup, launcher)

    def sidecar(self, mode: Mode, log: Path, name: str = "sidecar") -> Watcher:
        """oomhero as the pod's sidecar: no command (sidecar mode), the mode's flags."""
        cgroup = make_cgroup(name, parent=self.cgroup)
        env = oomhero_env(mode.attach)
        # `python -m` puts the working directory first on sys.path: run in the tree.
        argv = " ".join(map(shlex.quote, oomhero_argv(*COMMON, *mode.args)))
        with open(log, "w") as out:
            process = self.enter(
                cgroup,
                f"cd {shlex.quote(str(oomhero_tree()))} && exec {argv}",
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        start = time.monotonic()
        while not members(cgroup):
            if process.poll() is not None or time.monotonic() - start > 30:
                raise RuntimeError(f"the sidecar did not start: {log.read_text()[-2000:]}")
            time.sleep(0.01)
        return Watcher(cgroup, log, process)

    def close(self) -> None:
        remove_tree(self.cgroup)  # the pause process first or last: everything goes with it
        self.unshare.wait()


def go(fifo: Path) -> None:
    """Open the FIFO a container waits on and say go: it starts its workload now."""
    fd = os.open(fifo, os.O_WRONLY)
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def waiting(fifo: Path, command: str) -> str:
    """A container command that waits for ``go`` on ``fifo``, then becomes ``command``."""
    os.mkfifo(fifo)
    return f"read go < {shlex.quote(str(fifo))} && exec {command}"
