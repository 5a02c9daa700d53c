"""oomhero under another UID, without capabilities: the kernel refuses the signal, and oomhero
says so once, clearly, and keeps running."""

from __future__ import annotations

import pytest

from tests.real_kernel.kit import MIB, Watcher, Workload, make_cgroup, remove_test_cgroups, wait_for

pytestmark = pytest.mark.guest_v2


def test_signal_denied_is_reported_once_and_survived(tmp_path):
    cgroup = make_cgroup("perm", 128 * MIB)
    workload = Workload(cgroup, tmp_path / "signals.jsonl")  # runs as root
    watcher = Watcher(
        [cgroup],
        tmp_path / "oomhero.log",
        "--warning",
        "50",
        "--critical",
        "80",
        "--cooldown",
        "200ms",
        "--interval",
        "100ms",
        uid=65534,
    )
    try:
        workload.to(55)
        wait_for(lambda: watcher.records("signal not permitted"), 30, "the refusal to be logged")
        workload.to(85)  # critical too, and cooldown repeats: more refused attempts
        wait_for(lambda: watcher.records("rose to critical"), 30, "critical")
        assert watcher.process.poll() is None, "oomhero died"
    finally:
        workload.stop()
        records = watcher.stop()  # exits 0 on SIGTERM, no traceback
        remove_test_cgroups()
    refusals = [e for e in records if e.get("msg") == "signal not permitted"]
    assert len(refusals) == 1, refusals  # once per process, not per attempt
    assert refusals[0]["pid"] == workload.process.pid
    assert "uid 0" in refusals[0]["why"] and "CAP_KILL" in refusals[0]["why"]
    assert not workload.signals(), "the kernel let the signal through?"
