"""2,000 cgroups under one oomhero, within the guest's default open-file limit (soft 1024, hard
4096): it raises the soft limit to the hard one, and once half of it is in use the descriptors
that only save work (PSI triggers, v1 eventfds, files kept open) give way to those every target
needs. No target is lost, the loss is said once, and the last cgroup is still signalled."""

from __future__ import annotations

import resource
import subprocess

import pytest

from tests.real_kernel.kit import (
    MIB,
    Workload,
    make_cgroup,
    oomhero,
    read_jsonl,
    remove_test_cgroups,
    wait_for,
)

pytestmark = [pytest.mark.guest_v2, pytest.mark.guest_v1]

COUNT = 2000


@pytest.fixture
def cleanup():
    yield
    remove_test_cgroups()


def test_two_thousand_cgroups_are_all_watched_within_the_open_file_limit(tmp_path, cleanup):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard < 3 * COUNT, "the guest's limit is too high to show anything"  # 4096
    cgroups = [make_cgroup(f"many/{i:04d}", 64 * MIB) for i in range(COUNT)]
    last = Workload(cgroups[-1], tmp_path / "last.jsonl")
    log = tmp_path / "watch.log"
    # Every 10 s: the test is about descriptors, and 2,000 samples a second would not fit the
    # guest's one emulated CPU.
    watcher = subprocess.Popen(
        oomhero(
            "watch",
            *(str(c.path) for c in cgroups),
            "--interval",
            "10s",
            "--warning",
            "50",
            "--log-format",
            "json",
        ),
        stderr=open(log, "w"),
    )
    try:

        def watched() -> int:
            return sum(1 for r in read_jsonl(log) if r.get("msg") == "watching target")

        wait_for(lambda: watched() == COUNT or watcher.poll() is not None, 900, "all watched")
        last.to(60)
        wait_for(lambda: last.signals() or watcher.poll() is not None, 120, "the last signalled")
        records = read_jsonl(log)
        still_running = watcher.poll() is None
    finally:
        watcher.terminate()
        watcher.wait(timeout=120)
        last.stop()
    assert still_running, [r for r in records if "raw" in r][-20:]
    assert not [r for r in records if "raw" in r]
    assert watched() == COUNT
    assert not [r for r in records if r.get("msg") in ("cannot read target", "cannot sample")]
    assert [r["signal"] for r in last.signals()] == ["SIGUSR1"]
    scarce = [
        r
        for r in records
        if r.get("msg") == "source unavailable" and "open-file limit" in r.get("why", "")
    ]
    source = "psi" if cgroups[0].version == 2 else "eventfd"
    assert [r["source"] for r in scarce] == [source], scarce  # said once
    lines = [r for r in records if r.get("msg") == "watching target"]
    first, final = lines[0]["sources"].split(","), lines[-1]["sources"].split(",")
    if source == "psi":  # v1 thresholds are registered after this line, at the first sample
        assert "psi" in first and "psi" not in final, (first, final)
