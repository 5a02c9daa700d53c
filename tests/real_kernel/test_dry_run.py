"""--dry-run on a real kernel: every decision and its would-be signal logged, no signal sent
(the workload handles SIGUSR1/SIGUSR2 and records any it gets)."""

from __future__ import annotations

import pytest

from tests.real_kernel.kit import MIB, Watcher, Workload, make_cgroup, remove_test_cgroups, wait_for

pytestmark = [pytest.mark.guest_v2, pytest.mark.guest_v1]


def test_dry_run_logs_the_would_be_signals_and_sends_none(tmp_path):
    cgroup = make_cgroup("dry-run", 128 * MIB)
    workload = Workload(cgroup, tmp_path / "signals.jsonl")
    watcher = Watcher([cgroup], tmp_path / "log", "--dry-run", "--cooldown", "0")
    try:
        workload.to(80)
        wait_for(lambda: watcher.records("signal not sent: dry run"), 60, "the warning's line")
        workload.to(95)
        wait_for(
            lambda: len(watcher.records("signal not sent: dry run")) >= 2, 60, "the critical's"
        )
    finally:
        workload.stop()
        records = watcher.stop()
        remove_test_cgroups()
    assert workload.signals() == [], "a dry run sent a signal"
    would = [r for r in records if r.get("msg") == "signal not sent: dry run"]
    assert [(r["signal"], r["threshold"]) for r in would] == [
        ("SIGUSR1", "warning"),
        ("SIGUSR2", "critical"),
    ]
    assert all(r["dry_run"] is True and r["pid"] == workload.process.pid for r in would)
    assert not [r for r in records if r.get("msg") == "signal sent"]
    (started,) = [r for r in records if r.get("msg") == "oomhero started"]
    assert started["dry_run"] is True
    assert any(r.get("msg") == "caution" and "dry run" in r["why"] for r in records)
    # The decisions themselves are the real run's: the level rose as it would have.
    levels = [r["msg"] for r in records if r.get("msg", "").startswith("rose to")]
    assert levels[:2] == ["rose to warning", "rose to critical"], levels
