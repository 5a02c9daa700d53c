"""``oomhero run``: start a command under a memory limit and watch it.

Where this process can create a cgroup v2 group with the memory controller (root, a v2 hierarchy
that has it), the command runs in a fresh group with ``memory.max`` set: a real, kernel-enforced
limit. Elsewhere (like a kernel whose memory controller is bound to cgroup v1 — oomhero never
creates v1 groups) the command runs as is, and its process tree's RSS is compared with the limit:
a soft limit, labelled as such, that the kernel does not enforce.

What the command starts ends with it, as in a container: when oomhero stops (or the command
exits), the command gets SIGTERM, then whatever is left in its group — daemons it started —
SIGTERM and LEFTOVER_GRACE seconds, then SIGKILL, and the group is removed. The command also
gets SIGTERM from the kernel if oomhero dies first (PR_SET_PDEATHSIG). A group whose oomhero was
SIGKILLed is known by its lock: each ``oomhero run`` holds an exclusive flock on its group's
directory (released by the kernel whatever ends the process), and the next ``oomhero run``
kills what is left in a group nobody holds and removes it. Without a group (the soft limit),
the processes of the tree seen while watching are the ones stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

import psutil

from oomhero import log
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.kernel.locate import memory_mount, own_mounts
from oomhero.kernel.procfs import read_text
from oomhero.targets import Scanner
from oomhero.targets.cgroups import CgroupScanner, ProcessTreeReader, ProcessTreeScanner

GROUP_PREFIX = "oomhero-run-"
STOP_GRACE = 10.0  # seconds the command has to exit after SIGTERM
LEFTOVER_GRACE = 2.0  # seconds what it left behind has after SIGTERM
# A group nobody holds is a leftover only once this old: one just made is locked right after.
LEFTOVER_AGE = 5.0
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


def _members(path: str) -> list[int]:
    """Every process in the group and the groups below it."""
    pids = []
    for directory, _, _ in os.walk(path):
        with contextlib.suppress(FileNotFoundError):
            pids += [int(p) for p in read_text(os.path.join(directory, "cgroup.procs")).split()]
    return pids


def _populated(path: str) -> bool:
    try:
        return "populated 0" not in read_text(os.path.join(path, "cgroup.events"))
    except FileNotFoundError:
        return False


def _wait_empty(path: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while _populated(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def empty_group(path: str, grace: float) -> int:
    """SIGTERM every process in the group, SIGKILL (cgroup.kill) what is left after ``grace``
    seconds; returns how many there were. Raises OSError if the group will not empty."""
    members = _members(path)
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if not _wait_empty(path, grace):
        kill_group(path)
        if not _wait_empty(path, 5.0):
            raise OSError(errno.EBUSY, f"processes still in {path} after SIGKILL")
    return len(members)


def kill_group(path: str) -> None:
    """SIGKILL every process of the group and below: cgroup.kill (Linux 5.14), else each PID
    until none is left (a forking process is caught on a later round)."""
    kill_file = os.path.join(path, "cgroup.kill")
    if os.path.exists(kill_file):
        _write(kill_file, "1")
        return
    for _ in range(100):
        pids = _members(path)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def remove_group(path: str) -> None:
    """rmdir the group and the groups below it, deepest first (a group empties a moment after
    its last process is reaped: retried for a second)."""
    directories = [d for d, _, _ in os.walk(path)]
    for directory in sorted(directories, key=len, reverse=True):
        for _ in range(50):
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                time.sleep(0.02)
        else:
            os.rmdir(directory)  # the last try: its error is the one to report


def _lock(path: str) -> int | None:
    """The group directory opened and flocked; None when another process holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    return fd


def remove_leftovers(root: str) -> None:
    """Kill what is left in, and remove, each group an ``oomhero run`` killed by SIGKILL (or a
    crash) left under ``root``: one that nobody holds locked and that is not brand new."""
    try:
        names = sorted(n for n in os.listdir(root) if n.startswith(GROUP_PREFIX))
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        try:
            fd = _lock(path)
            if fd is None:
                continue  # a live run's
            try:
                made = os.fstat(fd)
                if time.time() - max(made.st_mtime, made.st_ctime) < LEFTOVER_AGE:
                    continue  # being set up by a run that has not locked it yet
                left = len(_members(path))
                kill_group(path)
                if not _wait_empty(path, 5.0):
                    raise OSError(errno.EBUSY, "its processes outlived SIGKILL")
                remove_group(path)
            finally:
                os.close(fd)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed meanwhile
        except OSError as exc:
            log.event(
                logging.WARNING,
                "cannot remove a group a killed oomhero run left",
                group=path,
                why=exc.strerror or str(exc),
            )
            continue
        log.event(
            logging.INFO, "removed the group a killed oomhero run left", group=path, processes=left
        )


def prepare_v2_group(limit: int) -> tuple[str, int]:
    """Create ``oomhero-run-<pid>`` at the root of the v2 hierarchy with memory.max = limit,
    locked (the descriptor returned); leftovers of killed runs are removed first.

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
    remove_leftovers(mount.mount_point)
    path = os.path.join(mount.mount_point, f"{GROUP_PREFIX}{os.getpid()}")
    os.mkdir(path)
    lock = None
    try:
        lock = _lock(path)
        if lock is None:
            raise OSError(f"{path} is locked by another process")
        _write(os.path.join(path, "memory.max"), str(limit))
        # Like `docker run --memory`: the limit is not stretched with swap.
        if os.path.exists(os.path.join(path, "memory.swap.max")):
            _write(os.path.join(path, "memory.swap.max"), "0")
    except OSError:
        if lock is not None:
            os.close(lock)
        os.rmdir(path)
        raise
    return path, lock


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror}") from None


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
