"""What oomhero reads equals what the kernel's files say, on cgroup v2 and v1."""

from __future__ import annotations

import json
import subprocess

import pytest

from oomhero.kernel.locate import open_for_pid
from tests.real_kernel.kit import (
    MIB,
    Watcher,
    Workload,
    make_cgroup,
    oomhero,
    remove_test_cgroups,
    wait_for,
)

pytestmark = [pytest.mark.guest_v2, pytest.mark.guest_v1]


@pytest.fixture
def loaded_cgroup(tmp_path):
    cgroup = make_cgroup("reading", 96 * MIB)
    workload = Workload(cgroup, tmp_path / "events.jsonl")
    workload.to(40)
    # Some page cache too, so the working set differs from the usage.
    cgroup.spawn(["sh", "-c", "cat /usr/bin/* > /dev/null 2>&1"]).wait()
    yield cgroup, workload
    workload.stop()
    remove_test_cgroups()


def kernel_figures(cgroup) -> tuple[int, int, int]:
    stat = dict(line.split() for line in cgroup.read("memory.stat").splitlines())
    inactive = int(stat["inactive_file" if cgroup.version == 2 else "total_inactive_file"])
    limit = int(cgroup.limit_file.read_text())
    return cgroup.usage(), limit, max(cgroup.usage() - inactive, 0)


def stable_read(cgroup, read):
    """Read oomhero's figures between two identical readings of the kernel's files."""
    for _ in range(20):
        before = kernel_figures(cgroup)
        ours = read()
        if kernel_figures(cgroup) == before:
            return before, ours
    raise AssertionError("usage never held still for a comparison")


def test_sample_equals_kernel_files(loaded_cgroup):
    cgroup, workload = loaded_cgroup
    reader = open_for_pid(workload.process.pid, prefer_root_view=False)
    assert reader.path == str(cgroup.path)
    assert reader.version == cgroup.version
    (usage, limit, working_set), sample = stable_read(cgroup, reader.sample)
    assert sample.current == usage
    assert sample.limit == limit == 96 * MIB
    assert sample.working_set == working_set
    assert sample.working_set < sample.current, "expected some page cache in the cgroup"
    reader.close()


def test_status_json_equals_kernel_files(loaded_cgroup):
    cgroup, _ = loaded_cgroup

    def status():
        out = subprocess.run(
            oomhero("status", "--json", str(cgroup.path)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out)[0]

    (usage, limit, working_set), row = stable_read(cgroup, status)
    assert (row["usage"], row["limit"], row["working_set"]) == (usage, limit, working_set)
    assert row["version"] == cgroup.version
    assert row["processes"] == 1
    assert row["percent"] == round(usage * 100 / limit, 1)
    assert set(row["events"]) >= ({"max", "oom_kill"} if cgroup.version == 2 else {"oom_kill"})


def test_unlimited_cgroup_reads_as_no_limit(tmp_path):
    cgroup = make_cgroup("unlimited")
    try:
        process = cgroup.spawn(["sleep", "30"])
        reader = open_for_pid(process.pid, prefer_root_view=False)
        assert reader.sample().limit is None
        reader.close()
        process.kill()
        process.wait()
    finally:
        remove_test_cgroups()


def test_a_lowered_limit_is_noticed_by_the_next_poll(loaded_cgroup, tmp_path):
    # The sampled files stay open between samples (one pread each) and the limit is re-read
    # at the polling interval: a limit lowered under a running workload, after oomhero's first
    # sample, is seen at a later one. The new limit is set from the memory reclaim cannot take
    # without swap, anonymous and shared (the workload's mmap is shmem): whatever page cache the
    # kernel drops to fit it, the working set stays at 90 % or more of it, above the warning.
    cgroup, workload = loaded_cgroup
    flags = ("--interval", "1s", "--sources", "none", "--metric", "working-set")
    thresholds = ("--warning", "85", "--critical", "100", "--log-level", "debug")
    watcher = Watcher([cgroup], tmp_path / "log", *flags, *thresholds)
    try:
        wait_for(lambda: watcher.records("sampled"), 10, "oomhero's first sample")
        assert not watcher.records("rose to warning"), "the working set is below 85 % at first"
        stat = dict(line.split() for line in cgroup.read("memory.stat").splitlines())
        keys = ("anon", "shmem") if cgroup.version == 2 else ("total_rss", "total_shmem")
        unreclaimable = sum(int(stat[key]) for key in keys)
        lowered = int(unreclaimable / 0.9) // 4096 * 4096
        cgroup.limit_file.write_text(str(lowered))
        (warning,) = wait_for(
            lambda: watcher.records("rose to warning"), 30, "warning after the limit change"
        )
        assert warning["limit_mib"] == round(lowered / MIB, 1), warning
        wait_for(lambda: workload.signals(), 30, "SIGUSR1 after the limit change")
        assert [s["signal"] for s in workload.signals()] == ["SIGUSR1"]
    finally:
        watcher.stop()
