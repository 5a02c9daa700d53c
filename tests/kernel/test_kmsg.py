"""The OOM victim from the kernel's log: records as /dev/kmsg hands them out (the guest shows
the real thing), user-space forgeries, and matching the victim's cgroup to a target."""

import os

import pytest

from oomhero.kernel.kmsg import KernelLog, OomVictim, parse_record, same_cgroup

OOM_KILL = (
    b"3,1402,52113221,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
    b"mems_allowed=0,oom_memcg=/oomhero-test/pod/app,task_memcg=/oomhero-test/pod/app,"
    b"task=python3,pid=4242,uid=0\n"
)
KILLED = (
    b"3,1403,52113300,-;Memory cgroup out of memory: Killed process 4242 (python3) "
    b"total-vm:81920kB, anon-rss:65536kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:120kB "
    b"oom_score_adj:0\n"
)


def test_the_kernels_oom_kill_record_names_the_victim():
    assert parse_record(OOM_KILL) == (
        "oom-kill",
        OomVictim(4242, "python3", "/oomhero-test/pod/app"),
    )
    assert parse_record(KILLED) == ("killed", (4242, "python3"))


@pytest.mark.parametrize(
    "record",
    [
        OOM_KILL.replace(b"3,1402", b"11,1402"),  # user facility: written from user space
        OOM_KILL.replace(b"3,1402", b"14,1402"),
        b"garbage without a header",
        b"3,1,2,-;oom-kill:task_memcg=/x,task=a,pid=notanumber,uid=0\n",
        b"",
        b"\xff" * 9000,
    ],
)
def test_anything_but_a_kernel_record_names_no_one(record):
    assert parse_record(record) is None


def test_a_comm_that_imitates_the_fields_never_names_another_cgroup():
    # A comm of "x,task_memcg=/other": the path is still the kernel's, the comm all of it.
    _, victim = parse_record(OOM_KILL.replace(b"task=python3", b"task=x,task_memcg=/other"))
    assert victim.memcg == "/oomhero-test/pod/app" and victim.comm == "x,task_memcg=/other"
    # A comm of "a,task=b" moves the split: the path then names no target (unknown, not wrong).
    _, victim = parse_record(OOM_KILL.replace(b"task=python3", b"task=a,task=b"))
    assert not same_cgroup(victim.memcg, "/sys/fs/cgroup/oomhero-test/pod/app")
    escaped = OOM_KILL.replace(b"task=python3", b"task=bad\\xff\\x1b")  # the kernel's escapes
    assert parse_record(escaped)[1].comm == "bad\\xff\\x1b"


@pytest.mark.parametrize(
    ("kernel", "path", "same"),
    [
        ("/oomhero-test/pod/app", "/sys/fs/cgroup/oomhero-test/pod/app", True),  # host view
        ("/kubepods/burstable/podX/abc", "/kubepods/burstable/podX/abc", True),  # node name
        ("/kubepods/burstable/podX/abc", "/host/sys/fs/cgroup/kubepods/burstable/podX/abc", True),
        ("/kubepods/burstable/podX/abc", "/../abc", True),  # a sidecar's view
        ("/kubepods/burstable/podX/abc", "/../def", False),
        ("/oomhero-test/pod/app", "/sys/fs/cgroup/oomhero-test/pod/other", False),
        ("/", "/sys/fs/cgroup", False),
        ("/a", "/", False),
    ],
)
def test_the_victims_cgroup_is_matched_to_the_target(kernel, path, same):
    assert same_cgroup(kernel, path) is same


def test_claim_takes_the_targets_victims_checked_against_killed_lines(tmp_path):
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        log = KernelLog(str(fifo))
        assert log.why == f"cannot read {fifo}: Illegal seek"  # not a kmsg device
    finally:
        os.close(writer)
        os.close(reader)
    log = KernelLog(str(tmp_path / "absent"))
    assert log.fd is None and "No such file or directory" in log.why
    log.victims.extend(
        [
            OomVictim(1, "a", "/pod/app"),
            OomVictim(2, "b", "/pod/other"),
            OomVictim(3, "c", "/pod/app"),
        ]
    )
    log.killed.append((3, "not-c"))  # the two records disagree: trust neither
    assert log.claim(["/sys/fs/cgroup/pod/app"]) == [OomVictim(1, "a", "/pod/app")]
    assert [v.pid for v in log.victims] == [2]
