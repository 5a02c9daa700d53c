"""Pods of "containers": one PID namespace with a pause process, a cgroup per container."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.real_kernel.kit.cgroups import Cgroup, make_cgroup
from tests.real_kernel.kit.guest import REPO, require_guest, wait_for
from tests.real_kernel.kit.processes import oomhero


@dataclass
class Container:
    """One "container": its own cgroup (with an optional limit), its own mount namespace with
    its own cgroup namespace and cgroup filesystem at /sys/fs/cgroup, as Kubernetes sets up."""

    name: str
    argv: list[str]
    memory_max: int | None = None
    uid: int | None = None
    caps: tuple[str, ...] = ()  # capabilities kept under ``uid``, e.g. ("sys_ptrace", "kill")
    # Shell run once its /sys/fs/cgroup is mounted, before the command (a container shaping its
    # own cgroup view: tmpfs or files mounted over it).
    setup: str = ""
    cgroup: Cgroup | None = field(default=None, init=False)


def _container_shell(container: Container, version: int) -> str:
    """The command the pod's init runs for a container (see pod_init.py)."""
    if version == 2:
        # The kernel refuses the same cgroup2 superblock on top of its own mount root: detach
        # the pod's view first (this mount namespace only).
        mount = "umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup"
    else:
        mount = (
            "mount -t tmpfs none /sys/fs/cgroup && mkdir /sys/fs/cgroup/memory && "
            "mount -t cgroup -o memory none /sys/fs/cgroup/memory"
        )
    run = shlex.join(container.argv)
    if container.uid is not None:
        caps = ",".join(f"+{cap}" for cap in container.caps)
        keep = f"--inh-caps {caps} --ambient-caps {caps} " if caps else ""
        run = f"setpriv --reuid={container.uid} --regid={container.uid} --clear-groups {keep}{run}"
    inner = (
        f"{mount} && {container.setup} && exec {run}"
        if container.setup
        else f"{mount} && exec {run}"
    )
    # Join the cgroup first, then unshare: the new cgroup namespace is rooted at that cgroup.
    return (
        f"echo $$ > {shlex.quote(str(container.cgroup.path / 'cgroup.procs'))} && "
        f"exec unshare --cgroup --mount sh -c {shlex.quote(inner)}"
    )


def oomhero_container(name: str, **settings: str) -> Container:
    """oomhero as a sidecar configured by env vars (OOMHero's pod.yaml), logging JSON to
    <workdir>/<name>.out (pod_init captures it); it is the container's only process."""
    env = ["env", *(f"{k}={v}" for k, v in {"OOMHERO_LOG_FORMAT": "json", **settings}.items())]
    return Container(name, ["sh", "-c", "exec " + shlex.join([*env, *oomhero()])])


class Pod:
    """Containers sharing one PID namespace, whose PID 1 is a "pause" process (pod_init.py)."""

    def __init__(self, name: str, containers: list[Container], workdir: Path) -> None:
        self.name = name
        self.containers = {c.name: c for c in containers}
        self.workdir = workdir
        self.version = 2 if require_guest() == "v2" else 1
        self.pause = make_cgroup(f"{name}/pause")
        for c in containers:
            c.cgroup = make_cgroup(f"{name}/{c.name}", c.memory_max)
        spec = {c.name: _container_shell(c, self.version) for c in containers}
        spec_path = workdir / f"{name}-spec.json"
        spec_path.write_text(json.dumps(spec))
        self.init = self.pause.spawn(
            [
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                sys.executable,
                str(REPO / "tests" / "real_kernel" / "pod_init.py"),
                str(spec_path),
            ],
            stdout=open(workdir / f"{name}-init.log", "w"),
            stderr=subprocess.STDOUT,
        )
        self.started: list[subprocess.Popen] = []  # nsenter of the containers started later
        for c in containers:
            wait_for(lambda c=c: c.cgroup.pids(), 30, f"container {c.name} to start")

    def start(self, container: Container) -> None:
        """One more container in the running pod, under a cgroup made for it (again: a
        container restarted gets a new cgroup under the same name)."""
        container.cgroup = make_cgroup(f"{self.name}/{container.name}", container.memory_max)
        (pod_init,) = psutil.Process(self.init.pid).children()  # PID 1 of the pod
        out = open(self.workdir / f"{container.name}.out", "a")
        enter = ["nsenter", f"--target={pod_init.pid}", "--pid", "--mount", "--root", "--wd", "--"]
        shell = ["sh", "-c", _container_shell(container, self.version)]
        self.started.append(
            subprocess.Popen([*enter, *shell], stdout=out, stderr=subprocess.STDOUT)
        )
        self.containers[container.name] = container
        wait_for(container.cgroup.pids, 30, f"container {container.name} to start")

    def remove(self, name: str) -> None:
        """A container stopped: its processes killed, its cgroup removed."""
        self.containers.pop(name).cgroup.remove()

    def stop(self) -> None:
        for c in self.containers.values():
            c.cgroup.kill_all()
        self.pause.kill_all()
        with contextlib.suppress(ProcessLookupError):
            self.init.kill()
        self.init.wait()
        for process in self.started:
            process.wait()
