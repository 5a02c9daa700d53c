"""oomhero under another UID, without capabilities: the kernel refuses the signal, and oomhero
says so once, clearly, and keeps running."""

from __future__ import annotations

import subprocess

import pytest

from tests.guest.kit import (
    MIB,
    Workload,
    make_cgroup,
    oomhero,
    read_jsonl,
    remove_test_cgroups,
    wait_for,
)

pytestmark = pytest.mark.guest_v2


def test_signal_denied_is_reported_once_and_survived(tmp_path):
    cgroup = make_cgroup("perm", 128 * MIB)
    workload = Workload(cgroup, tmp_path / "signals.jsonl")  # runs as root
    log = tmp_path / "oomhero.log"
    watcher = subprocess.Popen(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            *oomhero(
                "watch",
                str(cgroup.path),
                "--warning",
                "50",
                "--critical",
                "80",
                "--cooldown",
                "200ms",
                "--interval",
                "100ms",
                "--log-format",
                "json",
            ),
        ],
        stderr=open(log, "w"),
    )
    try:
        wait_for(
            lambda: any(e.get("msg") == "watching target" for e in read_jsonl(log)),
            60,
            "oomhero to start",
        )
        workload.to(55)
        wait_for(
            lambda: any(e.get("msg") == "signal not permitted" for e in read_jsonl(log)),
            30,
            "the refusal to be logged",
        )
        workload.to(85)  # critical too, and cooldown repeats: more refused attempts
        wait_for(
            lambda: any(e.get("msg") == "rose to critical" for e in read_jsonl(log)), 30, "critical"
        )
        assert watcher.poll() is None, "oomhero died"
    finally:
        watcher.terminate()
        code = watcher.wait(timeout=30)
        workload.stop()
        remove_test_cgroups()
    records = read_jsonl(log)
    refusals = [e for e in records if e.get("msg") == "signal not permitted"]
    assert len(refusals) == 1, refusals  # once per process, not per attempt
    assert refusals[0]["pid"] == workload.process.pid
    assert "uid 0" in refusals[0]["why"] and "CAP_KILL" in refusals[0]["why"]
    assert not workload.signals(), "the kernel let the signal through?"
    assert not [e for e in records if "raw" in e], [e for e in records if "raw" in e]
    assert code == 0
