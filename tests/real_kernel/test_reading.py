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
    # at the polling interval: a limit lowered under a running workload is seen, and its
    # working set (40 % of the old limit; the page cache can be reclaimed) becomes a warning.
    cgroup, workload = loaded_cgroup
    flags = ("--interval", "1s", "--sources", "none", "--metric", "working-set")
    watcher = Watcher([cgroup], tmp_path / "log", *flags, "--warning", "70", "--critical", "95")
    try:
        wait_for(lambda: watcher.process.poll() is None, 5, "oomhero running")
        assert workload.signals() == []
        working_set = kernel_figures(cgroup)[2]
        cgroup.limit_file.write_text(str(int(working_set / 0.8) // 4096 * 4096))  # at ~80 %
        wait_for(lambda: watcher.records("rose to warning"), 30, "warning after the limit change")
        wait_for(lambda: workload.signals(), 30, "SIGUSR1 after the limit change")
        assert [s["signal"] for s in workload.signals()] == ["SIGUSR1"]
    finally:
        watcher.stop()
