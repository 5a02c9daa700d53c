"""What a container (or a careless user) can put where a cgroup should be, on this host: a plain
directory is refused outright; taken for cgroupfs (``synthetic_cgroupfs``), each hostile file
kind is refused without being opened for real, read whole, echoed or written to. The guest tests
show the same against real cgroupfs (tests/real_kernel/test_hostile.py)."""

from __future__ import annotations

import os
import signal
import stat
import time

import pytest

from oomhero.config import PsiTriggerSpec
from oomhero.kernel.cgroup import LIST, CgroupDir, CgroupError, CgroupGone, CgroupRefused
from oomhero.kernel.cgroupfs import fs_magic, fs_name
from oomhero.kernel.locate import Membership, open_root_view
from oomhero.sources.psi import PsiTrigger
from tests.helpers import run_cli, v1_dir, v2_dir

MIB = 1024**2
SECRET = b"token: s3cr3t-do-not-print\n"


@pytest.fixture
def no_hang():
    """Fails the test (instead of hanging the run) if it blocks for 10 s."""

    def alarm(*_):
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def opened():
    dirs = []

    def open_dir(path, version=2):
        cgroup = CgroupDir.open(str(path), version)
        dirs.append(cgroup)
        return cgroup

    yield open_dir
    for cgroup in dirs:
        cgroup.close()


def test_a_directory_not_on_cgroupfs_is_refused_naming_its_filesystem(tmp_path):
    directory = v2_dir(tmp_path / "cg")
    fd = os.open(directory, os.O_PATH)
    name = fs_name(fs_magic(fd))
    os.close(fd)
    for version in (2, 1):
        with pytest.raises(CgroupRefused) as info:
            CgroupDir.open(str(directory), version)
        assert info.value.strerror == f"{directory} is on {name}, not on cgroupfs"


def test_the_real_cgroupfs_of_this_host_is_accepted_read_only():
    """This host's own cgroup tree (never written to): the fstatfs check passes on cgroupfs."""
    for path, version in (("/sys/fs/cgroup/memory", 1), ("/sys/fs/cgroup", 2)):
        try:
            cgroup = CgroupDir.open(path, version)
        except CgroupError:
            continue
        assert cgroup.alive() and cgroup.identity == (
            os.stat(path).st_dev,
            os.stat(path).st_ino,
        )
        cgroup.close()
        return
    pytest.skip("no cgroup hierarchy mounted here")


@pytest.mark.usefixtures("synthetic_cgroupfs", "no_hang")
class TestHostileFiles:
    def test_a_fifo_as_memory_current_is_refused_without_blocking(self, tmp_path, opened):
        directory = v2_dir(tmp_path / "cg")
        (directory / "memory.current").unlink()
        os.mkfifo(directory / "memory.current")
        cgroup = opened(directory)
        with pytest.raises(CgroupRefused, match=r"memory\.current is a FIFO, not a cgroup file"):
            cgroup.sample()
        with pytest.raises(CgroupRefused, match="FIFO"):
            cgroup.verify()

    def test_a_device_node_is_never_opened(self, tmp_path, opened):
        directory = v2_dir(tmp_path / "cg")
        (directory / "memory.current").unlink()
        try:
            os.mknod(directory / "memory.current", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        except PermissionError:
            pytest.skip("mknod needs CAP_MKNOD")
        with pytest.raises(CgroupRefused, match="a character device"):
            opened(directory).sample()

    @pytest.mark.parametrize("name", ["memory.current", "memory.max", "memory.stat"])
    def test_a_symlink_to_dev_zero_is_refused(self, tmp_path, opened, name):
        directory = v2_dir(tmp_path / "cg")
        (directory / name).unlink()
        (directory / name).symlink_to("/dev/zero")
        with pytest.raises(CgroupRefused, match=f"{name} is a symlink"):
            opened(directory).sample()

    def test_a_symlink_to_a_secret_is_never_read_nor_echoed(self, tmp_path, opened):
        secret = tmp_path / "token"
        secret.write_bytes(SECRET)
        directory = v2_dir(tmp_path / "cg")
        (directory / "memory.max").unlink()
        (directory / "memory.max").symlink_to(secret)
        with pytest.raises(CgroupRefused) as info:
            opened(directory).sample()
        assert b"s3cr3t" not in str(info.value).encode()
        assert secret.read_bytes() == SECRET

    def test_a_psi_trigger_is_never_written_through_a_symlink(self, tmp_path, opened):
        mine = tmp_path / "oomhero-own-file"
        mine.write_bytes(SECRET)
        before = os.stat(mine)
        directory = v2_dir(tmp_path / "cg")
        (directory / "memory.pressure").unlink()
        (directory / "memory.pressure").symlink_to(mine)
        with pytest.raises(CgroupRefused, match="symlink"):
            PsiTrigger("k", opened(directory), PsiTriggerSpec("some", 150_000, 1_000_000))
        assert mine.read_bytes() == SECRET and os.stat(mine).st_mtime_ns == before.st_mtime_ns

    def test_a_huge_file_is_refused_not_read_whole(self, tmp_path, opened):
        directory = v2_dir(tmp_path / "cg")
        with open(directory / "memory.stat", "wb") as f:
            f.truncate(900 * MIB)  # sparse: no disk used
        started = time.monotonic()
        with pytest.raises(CgroupRefused, match=r"memory\.stat is larger than 65536 bytes"):
            opened(directory).sample()
        assert time.monotonic() - started < 2

    def test_a_long_process_list_is_bounded(self, tmp_path, opened):
        directory = v2_dir(tmp_path / "cg")
        with open(directory / "cgroup.procs", "wb") as f:
            f.write(b"1\n" * (LIST // 2 + 1))
        with pytest.raises(CgroupRefused, match="larger than"):
            opened(directory).pids()

    def test_non_utf8_and_foreign_digits_are_skipped_not_fatal(self, tmp_path, opened):
        directory = v2_dir(tmp_path / "cg")
        (directory / "memory.events").write_bytes(b"\x80\x81 3\nmax \xd9\xa1\noom_kill 2\n")
        assert opened(directory).events() == {"oom_kill": 2}

    def test_a_number_in_foreign_digits_is_an_error_that_does_not_echo(self, tmp_path, opened):
        directory = v2_dir(tmp_path / "cg")
        (directory / "memory.current").write_bytes("١٢٣".encode())
        with pytest.raises(CgroupError) as info:
            opened(directory).sample()
        assert info.value.strerror == "memory.current does not hold a number"

    def test_v1_files_are_checked_too(self, tmp_path, opened):
        directory = v1_dir(tmp_path / "cg")
        (directory / "memory.limit_in_bytes").unlink()
        (directory / "memory.limit_in_bytes").symlink_to("/dev/zero")
        with pytest.raises(CgroupRefused, match="symlink"):
            opened(directory, 1).sample()

    def test_a_symlinked_directory_on_the_way_to_a_containers_cgroup_is_not_followed(
        self, tmp_path
    ):
        """/proc/<pid>/root/sys -> somewhere of oomhero's own: the walk stops at the symlink."""
        proc = tmp_path / "proc"
        root = proc / "42" / "root"
        root.mkdir(parents=True)
        (proc / "42" / "cgroup").write_text("0::/\n")
        elsewhere = tmp_path / "elsewhere"
        v2_dir(elsewhere / "fs" / "cgroup", pids=(42,))
        (root / "sys").symlink_to(elsewhere)
        with pytest.raises(CgroupRefused, match="symlink or not a directory"):
            open_root_view(42, Membership(2, "/"), proc=str(proc))

    def test_a_removed_directory_reads_as_gone(self, tmp_path, opened):
        directory = v2_dir(tmp_path / "cg")
        cgroup = opened(directory)
        cgroup.sample()
        for name in os.listdir(directory):
            os.unlink(directory / name)
        os.rmdir(directory)
        assert not cgroup.alive()
        with pytest.raises(CgroupGone):
            cgroup.events()


def test_watch_on_a_plain_directory_with_a_fifo_exits_2_at_once(tmp_path):
    directory = v2_dir(tmp_path / "cg")
    (directory / "memory.current").unlink()
    os.mkfifo(directory / "memory.current")
    started = time.monotonic()
    result = run_cli("watch", str(directory), "--sources", "none", timeout=30)
    assert time.monotonic() - started < 10  # the interpreter's start-up; no read blocks
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not on cgroupfs" in lines[0] and "Traceback" not in lines[0]


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ("fifo", "memory.current is a FIFO, not a cgroup file"),
        ("zero", "memory.current is a symlink, not a cgroup file"),
        ("pressure", "memory.pressure is a symlink, not a cgroup file"),
        ("huge", "memory.stat is larger than 65536 bytes"),
    ],
)
def test_watch_refuses_each_hostile_file_at_start_with_one_line(tmp_path, shape, words):
    """Taken for cgroupfs (so each file's own check is what refuses it): exit 2, one line, the
    symlinked file oomhero would have written its PSI trigger to unchanged."""
    directory = v2_dir(tmp_path / "cg")
    mine = tmp_path / "oomhero-own-file"
    mine.write_bytes(SECRET)
    if shape == "fifo":
        (directory / "memory.current").unlink()
        os.mkfifo(directory / "memory.current")
    elif shape == "zero":
        (directory / "memory.current").unlink()
        (directory / "memory.current").symlink_to("/dev/zero")
    elif shape == "pressure":
        (directory / "memory.pressure").unlink()
        (directory / "memory.pressure").symlink_to(mine)
    else:
        with open(directory / "memory.stat", "wb") as f:
            f.truncate(900 * MIB)
    result = run_cli("watch", str(directory), timeout=30, synthetic=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert b"s3cr3t" not in result.stderr.encode()
    assert mine.read_bytes() == SECRET
