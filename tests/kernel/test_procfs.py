import os
import signal
import subprocess
import sys

import psutil
import pytest

from oomhero.kernel.procfs import (
    PF_KTHREAD,
    ProcessSet,
    ProcInfo,
    TrackedProcess,
    kernel_symbols_among,
    list_pids,
    parse_caught,
    parse_stat,
    process_generation,
    raise_open_file_limit,
    read_environ_memory,
    read_proc,
)
from tests.helpers import stat_line, wait_until


def test_parse_stat_comm_with_spaces_and_parens():
    assert parse_stat(stat_line()) == ("my (weird) app", 1, 4194560, 98765)


@pytest.mark.parametrize("comm", ["x)", ") S 1 (", "a b c", "", "((()))"])
def test_parse_stat_tricky_comms(comm):
    assert parse_stat(stat_line(comm=comm, ppid=77, starttime=5)) == (comm, 77, 4194560, 5)


def test_parse_caught_reads_the_sigcgt_mask():
    status = b"Name:\tapp\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\n"
    assert parse_caught(status + b"SigCgt:\t0000000000000a00\n") == (1 << 9) | (1 << 11)
    assert parse_caught(status + b"SigCgt:\t0000000000000a00") == (1 << 9) | (1 << 11)
    assert parse_caught(status) == 0
    # A comm cannot forge the line: the kernel escapes a newline in Name. Garbage is nothing.
    assert parse_caught(b"Name:\tx\\nSigCgt:\tffff\nSigCgt:\tzz\n") == 0


USR1, USR2 = 1 << (signal.SIGUSR1 - 1), 1 << (signal.SIGUSR2 - 1)


def test_caught_tells_handlers_from_none_through_the_kept_status(recorder, sleeper):
    handler, plain = (
        TrackedProcess.open(read_proc(recorder.pid)),
        TrackedProcess.open(read_proc(sleeper.pid)),
    )
    try:
        assert handler.caught() & (USR1 | USR2) == USR1 | USR2
        assert plain.caught() & (USR1 | USR2) == 0
        sleeper.kill()
        sleeper.wait()  # reaped: the kept descriptor reads nothing more, whoever gets the pid
        assert plain.caught() is None
    finally:
        handler.close()
        plain.close()
    assert handler.caught() is None  # closed


def test_caught_without_a_kept_status_reads_by_path_and_knows_when_the_pid_is_gone(
    recorder, sleeper
):
    """With descriptors scarce the status is not kept: read by path, and the pidfd tells a
    read of this process from a read of whoever has its pid now."""
    handler, plain = (
        TrackedProcess.open(read_proc(recorder.pid)),
        TrackedProcess.open(read_proc(sleeper.pid)),
    )
    for tracked in (handler, plain):
        os.close(tracked.status_fd)
        tracked.status_fd = -1
    try:
        assert handler.caught() & (USR1 | USR2) == USR1 | USR2
        assert plain.caught() & (USR1 | USR2) == 0
        sleeper.kill()
        sleeper.wait()
        assert plain.caught() is None
    finally:
        handler.close()
        plain.close()


GROUPS_CHILD = (
    "import os, signal, time\n"
    "os.setgroups(list(range(1, 3001)))\n"
    "signal.signal(signal.SIGUSR1, lambda *a: None)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to set 3000 supplementary groups")
def test_caught_finds_sigcgt_past_a_long_groups_line():
    # Thousands of supplementary groups put SigCgt beyond the first read of /proc/PID/status.
    child = subprocess.Popen([sys.executable, "-c", GROUPS_CHILD], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        with open(f"/proc/{child.pid}/status", "rb") as f:
            assert f.read().index(b"SigCgt:") > 4096  # the test shows what it means to
        tracked = TrackedProcess.open(read_proc(child.pid))
        try:
            assert tracked.caught() & USR1
        finally:
            tracked.close()
    finally:
        child.kill()
        child.wait()


def test_parse_stat_of_this_process_agrees_with_the_kernel():
    with open("/proc/self/stat") as f:
        comm, ppid, _flags, starttime = parse_stat(f.read())
    with open("/proc/self/comm") as f:
        assert comm == f.read().rstrip("\n")
    assert ppid == os.getppid()
    assert starttime > 0


def test_read_proc_of_this_process():
    info = read_proc(os.getpid())
    assert info.pid == os.getpid()
    assert info.ppid == os.getppid()
    assert info.kthread is False
    assert info.uid == os.geteuid()
    with open(f"/proc/{os.getpid()}/comm") as f:
        assert info.comm == f.read().rstrip("\n")
    assert read_proc(os.getpid()) == info  # same start time every read


def test_read_proc_of_a_kernel_thread():
    with open("/proc/2/stat") as f:
        if "(kthreadd)" not in f.read():
            pytest.skip("pid 2 is not kthreadd in this PID namespace")
    assert read_proc(2).kthread is True


def test_read_proc_on_a_synthetic_proc(tmp_path):
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "stat").write_text(
        stat_line(pid=77, comm="kworker/0:1", ppid=2, flags=PF_KTHREAD | 0x40, starttime=12)
    )
    info = read_proc(77, proc=str(tmp_path))
    assert info == ProcInfo(77, 2, "kworker/0:1", 12, os.stat(tmp_path / "77").st_uid, True)


def test_read_proc_gone_or_garbled_is_none(tmp_path):
    assert read_proc(5, proc=str(tmp_path)) is None
    (tmp_path / "6").mkdir()
    (tmp_path / "6" / "stat").write_text("6 (short) S 1\n")
    assert read_proc(6, proc=str(tmp_path)) is None


def test_list_pids_only_numeric_entries(tmp_path):
    for name in ("1", "22", "self", "sys", "333x"):
        (tmp_path / name).mkdir()
    assert sorted(list_pids(str(tmp_path))) == [1, 22]


def test_list_pids_of_the_real_proc_includes_this_process():
    assert os.getpid() in list_pids()


# -- pidfds over real child processes ------------------------------------------------------------
def test_tracked_process_opens_a_pidfd_for_the_live_process(sleeper):
    tracked = TrackedProcess.open(read_proc(sleeper.pid))
    try:
        assert tracked.pidfd >= 0 and tracked.status_fd >= 0
        assert tracked.pid == sleeper.pid
        os.fstat(tracked.pidfd)  # real, open fds
        os.fstat(tracked.status_fd)
    finally:
        tracked.close()
    assert tracked.pidfd == -1 and tracked.status_fd == -1


def test_tracked_process_refuses_a_stale_start_time(sleeper):
    info = read_proc(sleeper.pid)
    stale = ProcInfo(info.pid, info.ppid, info.comm, info.starttime + 1, info.uid, False)
    assert TrackedProcess.open(stale) is None


def test_tracked_process_refuses_a_gone_process(sleeper):
    info = read_proc(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    assert TrackedProcess.open(info) is None


def test_process_set_sync_opens_and_drops(sleeper, recorder):
    processes = ProcessSet()
    try:
        processes.sync([read_proc(sleeper.pid), read_proc(recorder.pid)])
        assert sorted(processes.by_pid) == sorted([sleeper.pid, recorder.pid])
        assert all(t.pidfd >= 0 for t in processes.by_pid.values())
        kept = processes.by_pid[recorder.pid]
        dropped = processes.by_pid[sleeper.pid]

        processes.sync([read_proc(recorder.pid)])
        assert list(processes.by_pid) == [recorder.pid]
        assert dropped.pidfd == -1
        assert processes.by_pid[recorder.pid] is kept  # not reopened
    finally:
        processes.close()
    assert processes.by_pid == {}
    assert kept.pidfd == -1


def test_process_set_sync_drops_a_pid_whose_start_time_changed(sleeper):
    processes = ProcessSet()
    try:
        info = read_proc(sleeper.pid)
        processes.sync([info])
        old = processes.by_pid[sleeper.pid]
        reused = ProcInfo(info.pid, info.ppid, "other", info.starttime + 100, info.uid, False)
        processes.sync([reused])
        assert old.pidfd == -1
        # The new ProcInfo does not match the live process either: it is not adopted.
        assert sleeper.pid not in processes.by_pid
        processes.sync([info])
        assert processes.by_pid[sleeper.pid] is not old
        assert processes.by_pid[sleeper.pid].pidfd >= 0
    finally:
        processes.close()


def test_process_set_skips_members_that_are_already_gone(sleeper):
    info = read_proc(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    processes = ProcessSet()
    processes.sync([info, read_proc(os.getpid())])
    try:
        assert list(processes.by_pid) == [os.getpid()]
    finally:
        processes.close()


def test_process_set_adopt_opens_newcomers_only(sleeper, recorder):
    processes = ProcessSet()
    try:
        processes.sync([read_proc(recorder.pid)])
        known = processes.by_pid[recorder.pid]
        gone = subprocess.Popen(["true"])
        gone.wait()
        processes.adopt([recorder.pid, sleeper.pid, gone.pid, 2**22 + 7])
        assert sorted(processes.by_pid) == sorted([recorder.pid, sleeper.pid])
        assert processes.by_pid[recorder.pid] is known  # not reopened
        assert processes.by_pid[sleeper.pid].pidfd >= 0
    finally:
        processes.close()


def test_process_set_forget_closes(sleeper):
    processes = ProcessSet()
    processes.sync([read_proc(sleeper.pid)])
    tracked = processes.by_pid[sleeper.pid]
    processes.forget(sleeper.pid)
    processes.forget(sleeper.pid)  # twice is harmless
    assert tracked.pidfd == -1
    assert processes.by_pid == {}


@pytest.fixture
def shell_with_child():
    """sh (a child of this test) with its own child sleep: a parent and a grandchild."""
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    children = wait_until(lambda: psutil.Process(shell.pid).children(), "the sleep grandchild")
    yield shell, children[0].pid
    os.killpg(shell.pid, 9)
    shell.wait()


def test_chosen_main_is_the_topmost_process(shell_with_child):
    shell, grandchild = shell_with_child
    processes = ProcessSet()
    try:
        processes.sync([read_proc(grandchild), read_proc(shell.pid)])
        assert read_proc(grandchild).ppid == shell.pid
        assert [t.pid for t in processes.chosen("main")] == [shell.pid]
        assert [t.pid for t in processes.chosen("all")] == sorted([shell.pid, grandchild])
    finally:
        processes.close()


def test_chosen_main_without_the_parent_is_the_child(shell_with_child):
    _, grandchild = shell_with_child
    processes = ProcessSet()
    try:
        processes.sync([read_proc(grandchild)])
        assert [t.pid for t in processes.chosen("main")] == [grandchild]
    finally:
        processes.close()


def test_chosen_main_lists_every_unrelated_top_process(sleeper, recorder):
    processes = ProcessSet()
    try:
        processes.sync([read_proc(sleeper.pid), read_proc(recorder.pid)])
        assert [t.pid for t in processes.chosen("main")] == sorted([sleeper.pid, recorder.pid])
    finally:
        processes.close()


def test_process_generation_changes_as_processes_start_and_when_one_replaces_another():
    # The count is the whole machine's (other processes come and go): twenty children at
    # once stand out of that noise.
    before = process_generation()
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(20)]
    try:
        assert process_generation()[0] > before[0]
        children[0].kill()
        children[0].wait()
        replaced = process_generation()
        children[0] = subprocess.Popen(["sleep", "30"])  # one out, one in: the same count
        assert process_generation()[1] != replaced[1]  # but a newer pid
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_raise_open_file_limit_reaches_the_hard_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        assert raise_open_file_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_kernel_symbols_among_matches_whole_names_only(tmp_path):
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text(
        "ffffffff81000000 T _stext\n"
        "ffffffff81234560 t mem_cgroup_try_charge\n"  # ends with try_charge: not it
        "ffffffff81234570 T try_charge_memcg\n"
        "ffffffffc0001000 t try_charge\t[some_module]\n"  # a module's: not the kernel's
    )
    found = kernel_symbols_among(("try_charge_memcg", "try_charge"), str(kallsyms))
    assert found == {"try_charge_memcg"}


def test_descriptors_are_scarce_past_half_the_open_file_limit():
    """In a child with a low limit, opening one descriptor at a time: scarce exactly once
    half of the limit is held (as /proc/self/fd counts them), not before."""
    code = (
        "import os, resource\n"
        "from oomhero.kernel.procfs import descriptors_scarce\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
        "while not descriptors_scarce():\n"
        "    os.open('/', os.O_PATH)\n"
        "print(len(os.listdir('/proc/self/fd')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == 32, out


def test_environment_read_from_memory_is_what_environ_shows():
    """process_vm_readv of env_start..env_end, the node agent's way for another UID's process
    (here a child of ours, which needs no privilege)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
        env={"PATH": "/usr/bin", "OOMHERO_WARNING": "40", "PAD": "x" * 5000},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        # Running, not still in exec (vfork lets Popen return before the new stack is set up).
        assert child.stdout.readline() == b"ready\n"
        with open(f"/proc/{child.pid}/environ", "rb") as f:
            environ = f.read()
        assert read_environ_memory(child.pid, 1 << 20) == environ
        assert read_environ_memory(child.pid, 100) == environ[:100]  # the bound holds
    finally:
        child.stdin.close()
        child.wait()
        child.stdout.close()
    with pytest.raises(OSError):
        read_environ_memory(child.pid, 100)  # gone
