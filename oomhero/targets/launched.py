"""``oomhero run``: start a command under a memory limit and watch it.

Where this process can create a cgroup v2 group with the memory controller (root, a v2 hierarchy
that has it), the command runs in a fresh group with ``memory.max`` set: a real, kernel-enforced
limit. Elsewhere (like a kernel whose memory controller is bound to cgroup v1 — oomhero never
creates v1 groups) the command runs as is, and its process tree's RSS is compared with the limit:
a soft limit, labelled as such, that the kernel does not enforce.

What the command starts ends with it, as in a container: when oomhero stops (or the command
exits), the command gets SIGTERM, then whatever is left in its group — daemons it started —
SIGTERM and LEFTOVER_GRACE seconds, then SIGKILL, and the group is removed. The command also
gets SIGTERM from the kernel if oomhero dies first (PR_SET_PDEATHSIG), and what a SIGKILLed
oomhero left in its group is removed by the next ``oomhero run`` (run_group.py). Without a group
(the soft limit), the processes of the tree seen while watching are the ones stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from dataclasses import dataclass, field

import psutil

from oomhero import log
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.targets import Scanner
from oomhero.targets.cgroups import CgroupScanner, ProcessTreeReader, ProcessTreeScanner
from oomhero.targets.run_group import empty_group, prepare_v2_group, remove_group

STOP_GRACE = 10.0  # seconds the command has to exit after SIGTERM
LEFTOVER_GRACE = 2.0  # seconds what it left behind has after SIGTERM
PR_SET_PDEATHSIG = 1


@dataclass
class Placement:
    """Where a started command runs, and what watches it."""

    process: subprocess.Popen
    scanner: Scanner
    enforced: bool
    why: str  # how the limit is applied, or why it could not be enforced
    cgroup_path: str | None = None
    lock: int | None = None  # the group directory, flocked while this run lives
    tree: SeenTree | None = field(default=None, repr=False)

    def finish(self) -> int:
        """Stop the command if it still runs (SIGTERM; SIGKILL after STOP_GRACE), reap it, stop
        what it left behind, remove its group; its return code (negative: its signal)."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.cleanup()
        return code

    def cleanup(self) -> None:
        self.scanner.close()
        if self.cgroup_path is None:
            if self.tree is not None:
                left = stop_processes(list(self.tree.seen.values()))
                if left:
                    log.event(logging.INFO, "stopped what the command left", processes=left)
            return
        try:
            left = empty_group(self.cgroup_path, LEFTOVER_GRACE)
            remove_group(self.cgroup_path)
        except OSError as exc:
            log.event(
                logging.WARNING,
                "cannot remove the command's group",
                group=self.cgroup_path,
                why=exc.strerror or str(exc),
            )
            return
        finally:
            if self.lock is not None:
                os.close(self.lock)
        if left:
            log.event(logging.INFO, "stopped what the command left", processes=left)


class SeenTree(ProcessTreeReader):
    """The soft limit's reader, remembering each process it saw in the tree: what to stop at
    the end (a daemon the command started leaves its tree when the command exits)."""

    def __init__(self, root_pid: int, limit: int) -> None:
        super().__init__(root_pid, limit)
        self.seen: dict[int, psutil.Process] = {}

    def pids(self) -> list[int]:
        pids = super().pids()
        for pid in pids:
            known = self.seen.get(pid)
            if known is None or not known.is_running():
                with contextlib.suppress(psutil.Error):
                    self.seen[pid] = psutil.Process(pid)
        if len(self.seen) > 2 * len(pids) + 256:  # forget the ones that have exited
            self.seen = {pid: p for pid, p in self.seen.items() if p.is_running()}
        return pids


def stop_processes(processes: list[psutil.Process]) -> int:
    """SIGTERM the ones still running (psutil checks each is the same process, not a reused
    PID), SIGKILL after LEFTOVER_GRACE; how many were running."""
    alive = [p for p in processes if p.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, stubborn = psutil.wait_procs(alive, timeout=LEFTOVER_GRACE)
    for process in stubborn:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return len(alive)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:
    """In the child between fork and exec: SIGTERM when oomhero dies (PR_SET_PDEATHSIG); if it
    died already, the child never learns it: exit now."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def start(command: list[str], limit: int, **popen_options: object) -> Placement:
    """Start ``command`` under ``limit`` bytes, enforced where possible (see module doc).
    Raises OSError (or SubprocessError) when the command cannot be started."""
    parent = os.getpid()
    try:
        group, lock = prepare_v2_group(limit)
    except OSError as exc:
        why = exc.args[0] if len(exc.args) == 1 else exc.strerror
        process = subprocess.Popen(
            command, preexec_fn=lambda: _die_with_parent(parent), **popen_options
        )
        tree = SeenTree(process.pid, limit)
        scanner = ProcessTreeScanner(tree, f"soft-limit:{process.pid}")
        return Placement(process, scanner, enforced=False, why=str(why), tree=tree)

    procs = os.path.join(group, "cgroup.procs")

    def join_group() -> None:
        # Runs in the child between fork and exec: the command starts inside the group.
        _die_with_parent(parent)
        with open(procs, "w") as f:
            f.write("0")

    try:
        process = subprocess.Popen(command, preexec_fn=join_group, **popen_options)
        cgroup = CgroupDir.open(group, 2, "host")
    except (OSError, subprocess.SubprocessError, CgroupError):
        os.close(lock)
        with contextlib.suppress(OSError):
            os.rmdir(group)
        raise
    return Placement(
        process,
        CgroupScanner([cgroup]),
        enforced=True,
        why=f"memory.max={limit} in {group}",
        cgroup_path=group,
        lock=lock,
    )
