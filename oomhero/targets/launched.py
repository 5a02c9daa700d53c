"""``oomhero run``: start a command under a memory limit and watch it.

Where this process can create a cgroup v2 group with the memory controller (root, a v2 hierarchy
that has it), the command runs in a fresh group with ``memory.max`` set: a real, kernel-enforced
limit. Elsewhere (like a kernel whose memory controller is bound to cgroup v1 — oomhero never
creates v1 groups) the command runs as is, and its process tree's RSS is compared with the limit:
a soft limit, labelled as such, that the kernel does not enforce.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass

from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.kernel.locate import memory_mount, own_mounts
from oomhero.kernel.procfs import read_text
from oomhero.targets import Scanner
from oomhero.targets.cgroups import CgroupScanner, ProcessTreeReader, ProcessTreeScanner


@dataclass
class Placement:
    """Where a started command runs, and what watches it."""

    process: subprocess.Popen
    scanner: Scanner
    enforced: bool
    why: str  # how the limit is applied, or why it could not be enforced
    cgroup_path: str | None = None

    def finish(self) -> int:
        """Stop the command if it still runs (SIGTERM; SIGKILL after 10 s), reap it, remove its
        group; its return code (negative: the signal that ended it)."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.cleanup()
        return code

    def cleanup(self) -> None:
        if self.cgroup_path is None:
            return
        for scanner_cgroup in getattr(self.scanner, "cgroups", []):
            scanner_cgroup.close()
        # The group empties a moment after its last process is reaped.
        for _ in range(50):
            try:
                os.rmdir(self.cgroup_path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def prepare_v2_group(limit: int) -> str:
    """Create ``oomhero-run-<pid>`` at the root of the v2 hierarchy with memory.max = limit.

    Raises OSError (with a reason a user can act on) when this machine cannot."""
    mount = memory_mount(own_mounts(), 2)
    if mount is None:
        raise OSError("no cgroup v2 hierarchy is mounted")
    controllers = read_text(os.path.join(mount.mount_point, "cgroup.controllers")).split()
    if "memory" not in controllers:
        raise OSError(
            f"the cgroup v2 hierarchy at {mount.mount_point} has no memory controller "
            "(this kernel binds it to cgroup v1, and oomhero never creates v1 groups)"
        )
    subtree = os.path.join(mount.mount_point, "cgroup.subtree_control")
    if "memory" not in read_text(subtree).split():
        _write(subtree, "+memory")
    path = os.path.join(mount.mount_point, f"oomhero-run-{os.getpid()}")
    os.mkdir(path)
    try:
        _write(os.path.join(path, "memory.max"), str(limit))
        # Like `docker run --memory`: the limit is not stretched with swap.
        if os.path.exists(os.path.join(path, "memory.swap.max")):
            _write(os.path.join(path, "memory.swap.max"), "0")
    except OSError:
        os.rmdir(path)
        raise
    return path


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror}") from None


def start(command: list[str], limit: int, **popen_options: object) -> Placement:
    """Start ``command`` under ``limit`` bytes, enforced where possible (see module doc)."""
    try:
        group = prepare_v2_group(limit)
    except OSError as exc:
        why = exc.args[0] if len(exc.args) == 1 else exc.strerror
        process = subprocess.Popen(command, **popen_options)
        scanner = ProcessTreeScanner(
            ProcessTreeReader(process.pid, limit), f"soft-limit:{process.pid}"
        )
        return Placement(process, scanner, enforced=False, why=str(why))

    procs = os.path.join(group, "cgroup.procs")

    def join_group() -> None:
        # Runs in the child between fork and exec: the command starts inside the group.
        with open(procs, "w") as f:
            f.write("0")

    try:
        process = subprocess.Popen(command, preexec_fn=join_group, **popen_options)
        cgroup = CgroupDir.open(group, 2, "host")
    except (OSError, subprocess.SubprocessError, CgroupError):
        with contextlib.suppress(OSError):
            os.rmdir(group)
        raise
    return Placement(
        process,
        CgroupScanner([cgroup]),
        enforced=True,
        why=f"memory.max={limit} in {group}",
        cgroup_path=group,
    )
