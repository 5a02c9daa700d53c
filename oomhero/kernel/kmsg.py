"""The kernel's log, ``/dev/kmsg``, read for one thing: which process the OOM killer killed.

A cgroup's ``oom_kill`` counter says that a kill happened, not whom; the kernel says whom in its
log, as ``oom-kill:…,task_memcg=<path>,task=<comm>,pid=<pid>,uid=<uid>`` and ``Killed process
<pid> (<comm>)``. The device is opened once, without blocking, at its end (what happens from
then on only); each read returns one record, at most RECORD_MAX bytes, and a drain reads at
most MAX_RECORDS of them. Only the kernel's own records count: a record written from user space
carries another facility than the kernel's (devkmsg_write refuses facility 0 from user space),
so a process cannot forge a victim. Where the device cannot be read (a container without it,
kernel.dmesg_restrict without CAP_SYSLOG) ``why`` says so, and the victim stays unknown.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections import deque
from dataclasses import dataclass

KMSG = "/dev/kmsg"
RECORD_MAX = 8192  # the kernel's bound on one record (CONSOLE_EXT_LOG_MAX)
# Per drain: more than a default ring buffer holds (2^18 bytes, records of ~100), so a drain at
# an OOM kill reaches the newest record however long since the last; a flood cannot hold the
# loop for long (a read is a microsecond or two).
MAX_RECORDS = 16384
KEEP = 64  # victims not claimed yet (by the target whose oom_kill counter rose)
# The kernel escapes what is not printable as \xNN, so a record is one line of ASCII; a comm is
# 15 bytes, 60 characters escaped. The memcg path is greedy: a comm that holds ",task=" moves the
# split, and the path then matches no target (unknown, never a wrong name).
_OOM_KILL = re.compile(
    rb"oom-kill:.*,task_memcg=(?P<memcg>.*),task=(?P<task>.{1,64}?),pid=(?P<pid>\d+),uid=\d+"
)
_KILLED = re.compile(rb"Killed process (?P<pid>\d+) \((?P<comm>.{1,64}?)\)")


@dataclass(frozen=True)
class OomVictim:
    pid: int  # in the host's PID namespace, as the kernel names it
    comm: str
    memcg: str  # the victim's memory cgroup: its path from the hierarchy's root


def parse_record(record: bytes) -> tuple[str, OomVictim | tuple[int, str]] | None:
    """A /dev/kmsg record (``prio,seq,usec,flags;message\\n continuation…``) that names an OOM
    victim: ("oom-kill", victim) or ("killed", (pid, comm)); None for any other, and for any
    record that is not the kernel's own (facility 0)."""
    header, sep, rest = record.partition(b";")
    fields = header.split(b",")
    if not sep or not fields[0].isdigit() or int(fields[0]) >> 3 != 0:
        return None
    message = rest.split(b"\n", 1)[0]
    if match := _OOM_KILL.fullmatch(message):
        pid, comm = int(match["pid"]), _text(match["task"])
        return "oom-kill", OomVictim(pid, comm, _text(match["memcg"]))
    if match := _KILLED.search(message):
        return "killed", (int(match["pid"]), _text(match["comm"]))
    return None


def _text(raw: bytes) -> str:
    return raw.decode("ascii", errors="surrogateescape")


class KernelLog:
    """The OOM victims the kernel names from the time this was opened."""

    def __init__(self, path: str = KMSG) -> None:
        self.fd: int | None = None
        self.why: str | None = None  # why the victims cannot be known, when they cannot
        self.victims: deque[OomVictim] = deque(maxlen=KEEP)
        self.killed: deque[tuple[int, str]] = deque(maxlen=KEEP)  # "Killed process" lines
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            self.why = f"cannot read {path}: {exc.strerror}" + (
                " (kernel.dmesg_restrict: needs CAP_SYSLOG)" if exc.errno == errno.EPERM else ""
            )
            return
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            os.close(fd)
            self.why = f"cannot read {path}: {exc.strerror}"
            return
        self.fd = fd

    def drain(self) -> None:
        """Read what the kernel logged since the last drain (bounded), keeping the victims."""
        for _ in range(MAX_RECORDS):
            if self.fd is None:
                return
            try:
                record = os.read(self.fd, RECORD_MAX)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records overwritten before they were read: read on from here
                self.why = f"reading {KMSG} failed: {exc.strerror}"
                self.close()
                return
            if not record:
                return
            found = parse_record(record)
            if found is not None:
                kind, what = found
                (self.victims if kind == "oom-kill" else self.killed).append(what)

    def claim(self, paths: list[str]) -> list[OomVictim]:
        """The victims killed in the cgroup at any of ``paths`` (see ``same_cgroup``), taken
        from the kept ones; each checked against its "Killed process" line where there is one."""
        self.drain()
        mine = [v for v in self.victims if any(same_cgroup(v.memcg, p) for p in paths)]
        for victim in mine:
            self.victims.remove(victim)
        named = dict(self.killed)
        return [v for v in mine if named.get(v.pid, v.comm) == v.comm]

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def same_cgroup(kernel_path: str, path: str) -> bool:
    """Whether the kernel's path of a cgroup (from its hierarchy's root) names the cgroup that
    oomhero knows as ``path``: a filesystem path that ends with it (the hierarchy mounted at
    /sys/fs/cgroup, /host/sys/fs/cgroup…), or a path seen from a cgroup namespace, whose part
    after its last ``..`` ends the kernel's (a sidecar sees the app's cgroup as /../<id>)."""
    kernel = [part for part in kernel_path.split("/") if part]
    seen = [part for part in path.split("/") if part]
    if ".." in seen:
        seen = seen[len(seen) - seen[::-1].index("..") :]
    if not kernel or not seen:
        return False
    return seen[-len(kernel) :] == kernel or kernel[-len(seen) :] == seen
