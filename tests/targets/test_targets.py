"""Target discovery: the sidecar's scan on a synthetic /proc, the soft-limit process tree."""

import errno
import os
import subprocess

import psutil
import pytest

from oomhero.kernel.cgroup import CgroupError
from oomhero.kernel.procfs import PF_KTHREAD
from oomhero.targets.cgroups import ProcessTreeReader, ProcessTreeScanner
from oomhero.targets.pod import PodScanner
from tests.helpers import stat_line, wait_until

# Synthetic cgroup trees under the temp dir (parsing and policy), taken for cgroupfs.
pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")


def fake_process(proc, pid, comm, cgroup, ppid=1, flags=0x400100):
    directory = proc / str(pid)
    directory.mkdir(parents=True)
    (directory / "stat").write_text(stat_line(pid=pid, comm=comm, ppid=ppid, flags=flags))
    if cgroup is not None:
        (directory / "cgroup").write_text(cgroup)
    return directory


@pytest.fixture
def pod_proc(tmp_path):
    proc = tmp_path / "proc"
    fake_process(proc, os.getpid(), "oomhero", "0::/pod/oomhero\n")
    fake_process(proc, 1, "pause", "0::/pod/pause\n", ppid=0)
    fake_process(proc, 7, "java", "0::/pod/app\n")
    fake_process(proc, 8, "java helper", "0::/pod/app\n", ppid=7)
    fake_process(proc, 9, "kworker/0:1", "0::/\n", ppid=2, flags=PF_KTHREAD)
    fake_process(proc, 10, "sh", "0::/pod/oomhero\n")  # oomhero's own container
    fake_process(proc, 11, "fluentd", "4:memory:/pod/logger\n0::/\n")
    fake_process(proc, 12, "vanishing", None)
    return proc


def test_pod_scanner_groups_by_memory_cgroup_and_skips_the_rest(pod_proc):
    found = PodScanner(proc=str(pod_proc)).scan()
    assert sorted(found) == ["v1:/pod/logger", "v2:/pod/app"]
    app = found["v2:/pod/app"]
    assert app.name == "/pod/app"
    assert sorted((m.pid, m.comm, m.ppid) for m in app.members) == [
        (7, "java", 1),
        (8, "java helper", 7),
    ]
    assert [m.pid for m in found["v1:/pod/logger"].members] == [11]


def test_pod_scanner_keeps_a_pid_1_that_is_not_pause(tmp_path):
    proc = tmp_path / "proc"
    fake_process(proc, os.getpid(), "oomhero", "0::/pod/oomhero\n")
    fake_process(proc, 1, "tini", "0::/pod/app\n", ppid=0)
    found = PodScanner(proc=str(proc)).scan()
    assert [m.pid for m in found["v2:/pod/app"].members] == [1]


def test_pod_scanner_skips_podmans_catatonit_as_pause(tmp_path):
    # podman's infra container (its pause) runs catatonit as the shared namespace's PID 1.
    proc = tmp_path / "proc"
    fake_process(proc, os.getpid(), "oomhero", "0::/pod/oomhero\n")
    fake_process(proc, 1, "catatonit", "0::/pod/infra\n", ppid=0)
    fake_process(proc, 7, "oomhero", "0::/pod/app\n")
    assert sorted(PodScanner(proc=str(proc)).scan()) == ["v2:/pod/app"]


def test_pod_scanner_opens_a_target_through_its_root_view(pod_proc):
    base = pod_proc / "7" / "root" / "sys" / "fs" / "cgroup"
    base.mkdir(parents=True)
    (base / "cgroup.procs").write_text("7\n8\n")
    (base / "memory.current").write_text("1048576\n")
    (base / "memory.max").write_text("4194304\n")
    (base / "memory.stat").write_text("inactive_file 0\n")
    # Both members see the same root: whichever the opener tries first finds the group here
    # (never falling back to the host view, which would look under /sys/fs/cgroup).
    (pod_proc / "8" / "root").symlink_to(pod_proc / "7" / "root")
    reader = PodScanner(proc=str(pod_proc)).scan()["v2:/pod/app"].open_reader()
    try:
        assert reader.view == "root"
        assert reader.path in (str(base), str(pod_proc / "8" / "root" / "sys" / "fs" / "cgroup"))
        assert reader.sample().limit == 4194304
    finally:
        reader.close()


@pytest.fixture
def tree():
    """sh with a sleep child, as a process tree."""
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    (child,) = wait_until(lambda: psutil.Process(shell.pid).children(), "the sleep child")
    yield shell, child.pid
    if shell.poll() is None:
        os.killpg(shell.pid, 9)
    shell.wait()


def test_process_tree_reader_sums_the_tree_against_the_soft_limit(tree):
    shell, child = tree
    reader = ProcessTreeReader(shell.pid, limit=64 * 1024**2)
    assert reader.pids() == [shell.pid, child]
    sample = reader.sample()
    assert sample.limit == 64 * 1024**2
    assert sample.inactive_file == 0
    assert sample.current >= psutil.Process(child).memory_info().rss > 0
    found = ProcessTreeScanner(reader, "soft").scan()
    assert list(found) == ["soft"]
    assert sorted(m.pid for m in found["soft"].members) == sorted([shell.pid, child])
    assert found["soft"].open_reader() is reader


def test_process_tree_reader_of_an_exited_process_is_an_error(tree):
    shell, _ = tree
    os.killpg(shell.pid, 9)
    shell.wait()
    reader = ProcessTreeReader(shell.pid, limit=1)
    assert reader.pids() == []
    with pytest.raises(CgroupError) as info:
        reader.sample()
    assert info.value.errno == errno.ESRCH
