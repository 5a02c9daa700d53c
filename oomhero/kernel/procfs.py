"""Processes: reading /proc, and holding a pidfd per process so a signal never hits a reused PID."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import signal
from collections.abc import Iterable
from dataclasses import dataclass

PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    starttime: int  # clock ticks after boot; with the pid, identifies one process for good
    uid: int
    kthread: bool


def parse_stat(text: str) -> tuple[str, int, int, int]:
    """``/proc/<pid>/stat`` → (comm, ppid, flags, starttime). comm may hold spaces and parens."""
    open_paren, close_paren = text.index("("), text.rindex(")")
    comm = text[open_paren + 1 : close_paren]
    fields = text[close_paren + 2 :].split()
    # fields[0] is field 3 (state) of proc(5).
    return comm, int(fields[1]), int(fields[6]), int(fields[19])


def read_proc(pid: int, proc: str = "/proc") -> ProcInfo | None:
    """None when the process is gone (or vanishes while being read)."""
    try:
        dirfd = os.open(f"{proc}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _proc_info(pid, dirfd)
    finally:
        os.close(dirfd)


def _proc_info(pid: int, dirfd: int) -> ProcInfo | None:
    """The process whose /proc directory ``dirfd`` is (None once it is gone)."""
    try:
        fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            # Not UTF-8 is no reason to lose a process: a name is any 15 bytes (prctl, exec).
            text = os.read(fd, 4096).decode(errors="surrogateescape")
        finally:
            os.close(fd)
        comm, ppid, flags, starttime = parse_stat(text)
        uid = os.fstat(dirfd).st_uid
    except (OSError, ValueError, IndexError):
        return None
    return ProcInfo(pid, ppid, comm, starttime, uid, bool(flags & PF_KTHREAD))


def current_comm(info: ProcInfo, proc: str = "/proc") -> str:
    """The name ``info``'s process has now (an exec or prctl renames it), for a log line about it;
    the name seen at discovery when it is gone or its pid is another process's. Read as bytes,
    bounded, without blocking: bytes that are not UTF-8 come back as surrogateescapes."""
    try:
        fd = os.open(f"{proc}/{info.pid}/stat", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            data = os.read(fd, 4096)  # a stat line is a few hundred bytes, comm 15 at most
        finally:
            os.close(fd)
        comm, _, _, starttime = parse_stat(data.decode(errors="surrogateescape"))
    except (OSError, ValueError, IndexError):
        return info.comm
    return comm if starttime == info.starttime else info.comm


def parse_caught(status: bytes) -> int:
    """The ``SigCgt`` mask of a ``/proc/<pid>/status`` text: bit ``n - 1`` set when signal ``n``
    has a handler. A text without the line (none in practice) catches nothing."""
    start = status.find(b"\nSigCgt:")
    if start < 0:
        return 0
    end = status.find(b"\n", start + 1)
    try:
        return int(status[start + 8 : end if end >= 0 else None].strip(), 16)
    except ValueError:
        return 0


def process_generation(proc: str = "/proc") -> tuple[int, str]:
    """A value that changes whenever a process starts or exits: /proc's link count (its fixed
    entries plus the number of processes), and the newest pid of this PID namespace
    (/proc/loadavg's last field), so that one process exiting as another starts (a container
    restarted) changes it too. A stat and a small read, where listing and reading /proc costs a
    few syscalls per process."""
    with open(f"{proc}/loadavg", "rb") as f:
        newest = f.read(256).rsplit(None, 1)[-1].decode(errors="replace")
    return os.stat(proc).st_nlink, newest


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one, and return it: a target holds a few
    descriptors for good (its directory, the files sampled, a PSI trigger, a pidfd per
    process), so hundreds of targets pass the usual soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


# Past this share of the open-file limit, descriptors that only save work (files kept open, PSI
# triggers, v1 eventfds) give way to those every target needs (its directory, its pidfds).
SPARE_SHARE = 0.5


class _Scarcity:
    """Whether this process holds over ``share`` of its open-file limit, counted exactly in
    /proc/self/fd — a listing of every descriptor, so not at every call: after a count, as many
    calls are answered from it as could not use up the headroom it showed (a caller opens at
    most MOST_PER_CALL before asking again), and once scarce, RECOUNT calls."""

    MOST_PER_CALL, RECOUNT = 4, 256

    def __init__(self) -> None:
        self.answer, self.skip = False, 0

    def __call__(self, share: float = SPARE_SHARE) -> bool:
        if self.skip > 0:
            self.skip -= 1
            return self.answer
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return False
        try:
            held = len(os.listdir("/proc/self/fd"))
        except OSError:  # none left to list with
            held = soft
        headroom = soft * share - held
        self.answer = headroom <= 0
        self.skip = self.RECOUNT if self.answer else int(headroom) // self.MOST_PER_CALL
        return self.answer


descriptors_scarce = _Scarcity()


def list_pids(proc: str = "/proc") -> list[int]:
    return [int(name) for name in os.listdir(proc) if name.isdigit()]


# Enough of /proc/<pid>/status for its SigCgt line (~1.4 KiB in); read further only when a
# process's status is longer before it (thousands of supplementary groups), up to STATUS_MOST.
STATUS_FIRST, STATUS_MOST = 4096, 1 << 20


class TrackedProcess:
    """A process with a pidfd and its ``status`` held open from discovery: signals go to this
    process or to nobody, and its handlers are read from its own status. A descriptor of
    /proc/<pid>/status stays bound to the process it was opened for: once that process is
    reaped, reads fail (ESRCH) whoever takes its pid, so no start-time check is needed later.
    Where descriptors are scarce (thousands of targets) the status is not kept: it is opened
    by path at each read, and the pidfd says whether it was still this process's."""

    def __init__(
        self, info: ProcInfo, pidfd: int, status_fd: int = -1, proc: str = "/proc"
    ) -> None:
        self.info = info
        self.pidfd = pidfd
        self.status_fd = status_fd
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.info.pid

    def caught(self) -> int | None:
        """The signals it catches now (its SigCgt), None once it is gone: one ``pread``."""
        if self.status_fd >= 0:
            return self._caught_from(self.status_fd)
        if self.pidfd < 0:
            return None
        try:
            fd = os.open(f"{self.proc}/{self.pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            caught = self._caught_from(fd)
        finally:
            os.close(fd)
        try:
            # Alive after the read: the pid was this process's all along (a live process's pid
            # is never reused).
            signal.pidfd_send_signal(self.pidfd, 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass  # not ours to signal: the send says so
        return caught

    @staticmethod
    def _caught_from(fd: int) -> int | None:
        try:
            status = os.pread(fd, STATUS_FIRST, 0)
            if len(status) == STATUS_FIRST and b"\nSigCgt:" not in status:
                status = os.pread(fd, STATUS_MOST, 0)
        except OSError:
            return None
        return parse_caught(status)

    def close(self) -> None:
        for fd in (self.pidfd, self.status_fd):
            if fd >= 0:
                os.close(fd)
        self.pidfd = self.status_fd = -1

    @classmethod
    def open(cls, info: ProcInfo, proc: str = "/proc") -> TrackedProcess | None:
        """Open a pidfd and the process's status, then check through its /proc directory
        (opened before the pidfd) that the pid still names the same process (same start
        time): a pid reused meanwhile is never adopted."""
        try:
            dirfd = os.open(f"{proc}/{info.pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        pidfd = status_fd = -1
        try:
            pidfd = os.pidfd_open(info.pid)
            if not descriptors_scarce():
                status_fd = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
            again = _proc_info(info.pid, dirfd)
            if again is not None and again.starttime == info.starttime:
                tracked, pidfd, status_fd = cls(info, pidfd, status_fd, proc), -1, -1
                return tracked
            return None
        except OSError:
            return None
        finally:
            for fd in (pidfd, status_fd, dirfd):
                if fd >= 0:
                    os.close(fd)


class ProcessSet:
    """The processes of one target, kept in step with scans."""

    def __init__(self) -> None:
        self.by_pid: dict[int, TrackedProcess] = {}

    def sync(self, infos: list[ProcInfo], proc: str = "/proc") -> None:
        current = {info.pid: info for info in infos}
        for pid in list(self.by_pid):
            tracked = self.by_pid[pid]
            info = current.get(pid)
            if info is None or info.starttime != tracked.info.starttime:
                tracked.close()
                del self.by_pid[pid]
        for pid, info in current.items():
            if pid not in self.by_pid:
                tracked = TrackedProcess.open(info, proc)
                if tracked:
                    self.by_pid[pid] = tracked

    def adopt(self, pids: Iterable[int], proc: str = "/proc") -> None:
        """Track the processes of ``pids`` not tracked yet (a target's cgroup.procs, read
        again): only newcomers are read from /proc, those tracked are left as they are."""
        for pid in pids:
            if pid not in self.by_pid and (info := read_proc(pid, proc)) and not info.kthread:
                tracked = TrackedProcess.open(info, proc)
                if tracked:
                    self.by_pid[pid] = tracked

    def forget(self, pid: int) -> None:
        tracked = self.by_pid.pop(pid, None)
        if tracked:
            tracked.close()

    def close(self) -> None:
        for tracked in self.by_pid.values():
            tracked.close()
        self.by_pid.clear()

    def chosen(self, signal_target: str) -> list[TrackedProcess]:
        """``all``: every process; ``main``: the topmost ones (parent outside the target)."""
        members = sorted(self.by_pid.values(), key=lambda t: t.pid)
        if signal_target == "main":
            return [t for t in members if t.info.ppid not in self.by_pid]
        return members


def read_environ(pid: int, proc: str = "/proc") -> bytes:
    """The NUL-separated environment a process started with; raises OSError."""
    with open(f"{proc}/{pid}/environ", "rb") as f:
        return f.read()


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def read_environ_memory(pid: int, most: int, proc: str = "/proc") -> bytes:
    """At most ``most`` bytes of a process's environment, read from its memory as
    ``/proc/<pid>/environ`` reads it (its stat's env_start..env_end, process_vm_readv). For a
    reader that has ptrace access to the process (CAP_SYS_PTRACE, the node agent's) but is not
    the owner of its environ file, which is mode 0400: the file would also take
    CAP_DAC_READ_SEARCH, a right to read every file. Raises OSError."""
    with open(f"{proc}/{pid}/stat", "rb") as f:
        stat = f.read(4096)
    fields = stat[stat.rindex(b")") + 2 :].split()  # fields from the 3rd (state) on
    start, end = int(fields[50 - 3]), int(fields[51 - 3])  # env_start, env_end: fields 50, 51
    if not end > start:  # hidden (0) without ptrace access, or empty
        raise PermissionError(errno.EACCES, f"no environment of pid {pid} visible")
    buffer = ctypes.create_string_buffer(min(end - start, most))
    local, remote = _IoVec(ctypes.addressof(buffer), len(buffer)), _IoVec(start, len(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    done = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"process_vm_readv of pid {pid}: {os.strerror(code)}")
    return buffer.raw[:done]


def effective_capabilities() -> int:
    """This process's effective capability bits (CapEff of /proc/self/status)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))


def kernel_symbols_among(names: Iterable[str], kallsyms: str = "/proc/kallsyms") -> set[str]:
    """Which of ``names`` the kernel has among its own (not modules') symbols: one read and a
    byte search, not a parse of its ~120,000 lines (seconds under emulation). Raises OSError."""
    with open(kallsyms, "rb") as f:
        text = f.read()
    return {name for name in names if f" {name}\n".encode() in text}


def pid_namespace() -> tuple[int, int]:
    """This process's PID namespace as the kernel names it: (dev_t, inode)."""
    st = os.stat("/proc/self/ns/pid")
    return (os.major(st.st_dev) << 20) | os.minor(st.st_dev), st.st_ino


def read_text(path: str, most: int = 1 << 20) -> str:
    """A kernel-made text file of this process's view (/proc/<pid>/cgroup, mountinfo), at most
    ``most`` bytes (raises OSError beyond), undecodable bytes replaced."""
    with open(path, "rb") as f:
        data = f.read(most + 1)
    if len(data) > most:
        raise OSError(errno.EFBIG, f"{path} is larger than {most} bytes")
    return data.decode(errors="replace")
