"""Opening files on cgroupfs without trusting the path.

A container that can mount may put anything at its own ``/sys/fs/cgroup``, which a sidecar reads
through ``/proc/<pid>/root``: a tmpfs, FIFOs, device nodes, endless files, and symlinks, which
resolve in *this* process's filesystem. So a cgroup directory is walked to one component at a
time without following symlinks and checked with ``fstatfs`` to be cgroupfs; each file in it is
first opened with ``O_PATH`` (which opens nothing: no FIFO blocks, no device sees an open), checked
to be a regular file on that same cgroupfs, and only then reopened through its descriptor to read
or write the very inode checked. Reads are bounded. Errors name the file and the errno, never what
it holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator, Sequence

CGROUP2_SUPER_MAGIC = 0x63677270
CGROUP_SUPER_MAGIC = 0x0027E0EB
# The filesystem a cgroup hierarchy of each version lives on (a test may add a synthetic one).
CGROUP_MAGIC = {2: CGROUP2_SUPER_MAGIC, 1: CGROUP_SUPER_MAGIC}
_KNOWN_FS = {
    CGROUP2_SUPER_MAGIC: "cgroup2",
    CGROUP_SUPER_MAGIC: "cgroup",
    0x01021994: "tmpfs",
    0x794C7630: "overlayfs",
    0xEF53: "ext4",
    0x9123683E: "btrfs",
    0x58465342: "xfs",
    0x62656572: "sysfs",
    0x9FA0: "proc",
    0x1373: "devfs",
    0x01021997: "9p",
}
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class CgroupError(OSError):
    """A cgroup could not be found or read; the message says where and why."""


class CgroupGone(CgroupError):
    """The cgroup was removed (rmdir, or the container ended): its target is over."""


class CgroupRefused(CgroupError):
    """What is there is not what the kernel makes (not cgroupfs, not a regular file, too large):
    it is never read or written."""


class _StatFs(ctypes.Structure):
    # struct statfs starts with f_type (a long on the 64-bit ABIs and i386); the rest is room.
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 120)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fstatfs.argtypes = (ctypes.c_int, ctypes.POINTER(_StatFs))


def fs_magic(fd: int) -> int:
    """The filesystem type of an open descriptor (``O_PATH`` ones too), as ``fstatfs`` gives it."""
    buf = _StatFs()
    if _libc.fstatfs(fd, ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.f_type & 0xFFFFFFFF


def fs_name(magic: int) -> str:
    return _KNOWN_FS.get(magic, f"filesystem type {magic:#x}")


def open_dir(
    path: str, beneath: Sequence[str] = (), follow: bool = True, dir_fd: int | None = None
) -> int:
    """An ``O_PATH`` descriptor of ``path`` (relative to ``dir_fd`` if given), then of each of
    ``beneath`` below it in turn, none of which may be a symlink (nor ``..``). ``path`` itself is
    trusted (``/proc/<pid>/root`` is a link to follow); ``follow=False`` refuses a symlink there
    too. Raises OSError (ELOOP or ENOTDIR for a symlink)."""
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        for part in beneath:
            if part in ("", ".", "..") or "/" in part:
                raise OSError(errno.EINVAL, f"{part!r} is not one path component")
            child = os.open(part, _PATH | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def reopen(fd: int, flags: int) -> int:
    """The inode behind an ``O_PATH`` descriptor, opened for real (``/proc/self/fd`` reopens the
    very file checked, never what a path names now)."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


def check_file(path_fd: int, name: str, dir_stat: os.stat_result, magic: int) -> None:
    """Raises CgroupRefused unless ``path_fd`` is a regular file on the directory's cgroupfs."""
    st = os.fstat(path_fd)
    if not stat.S_ISREG(st.st_mode):
        raise CgroupRefused(errno.EPERM, f"{name} is {_kind(st.st_mode)}, not a cgroup file")
    found = fs_magic(path_fd)
    if found != magic:
        raise CgroupRefused(errno.EPERM, f"{name} is on {fs_name(found)}, not on cgroupfs")
    if st.st_dev != dir_stat.st_dev:
        raise CgroupRefused(errno.EPERM, f"{name} is mounted over from another filesystem")


@contextlib.contextmanager
def checked_path(dir_fd: int, name: str, dir_stat: os.stat_result, magic: int) -> Iterator[int]:
    """An ``O_PATH`` descriptor of the checked file ``name``, closed afterwards."""
    fd = os.open(name, _PATH, dir_fd=dir_fd)
    try:
        check_file(fd, name, dir_stat, magic)
        yield fd
    finally:
        os.close(fd)


def read_bounded(fd: int, most: int, name: str) -> bytes:
    """The whole of a cgroup file from offset 0 (the kernel regenerates it at each read from 0),
    at most ``most`` bytes: more is refused (CgroupRefused), never read on."""
    chunks, offset = [], 0
    while True:
        want = min(65536, most + 1 - offset)
        chunk = os.pread(fd, want, offset)
        chunks.append(chunk)
        offset += len(chunk)
        if offset > most:
            raise CgroupRefused(errno.EFBIG, f"{name} is larger than {most} bytes")
        if len(chunk) < want:  # the kernel fills a read while there is more
            return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return kind
    return "not a regular file"
