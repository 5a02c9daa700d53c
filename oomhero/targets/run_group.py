"""The cgroup v2 group ``oomhero run`` makes for its command: made with its limit and locked,
emptied and removed at the end, and a group that a killed run left removed by the next run.

Each run holds an exclusive flock on its group's directory for its whole life; the kernel drops
it whatever ends the process, so a group nobody holds (and that is not brand new: one is locked
right after it is made) is a leftover. Emptying: SIGTERM to every process, SIGKILL
(``cgroup.kill``, Linux 5.14; else each PID until none is left) after a grace.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import time

from oomhero import log
from oomhero.kernel.locate import memory_mount, own_mounts
from oomhero.kernel.procfs import read_text

GROUP_PREFIX = "oomhero-run-"
# A group nobody holds is a leftover only once this old: one just made is locked right after.
LEFTOVER_AGE = 5.0


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
