"""Cooldown, hysteresis and re-arm on a real workload that grows, shrinks and grows again,
watched by `oomhero watch` through the kernel's own figures."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.real_kernel.kit import (
    MIB,
    Watcher,
    Workload,
    make_cgroup,
    remove_test_cgroups,
    wait_for,
)

pytestmark = pytest.mark.guest_v2

# Long enough for many 100 ms samples even in the slow guest.
SETTLE = 1.5


@pytest.fixture
def watched(tmp_path):
    started = []

    def start(cooldown: str):
        cgroup = make_cgroup("policy", 128 * MIB)
        workload = Workload(cgroup, tmp_path / "signals.jsonl")
        watcher = Watcher(
            [cgroup],
            tmp_path / "oomhero.log",
            "--warning",
            "50",
            "--critical",
            "80",
            "--hysteresis",
            "10",
            "--cooldown",
            cooldown,
            "--interval",
            "100ms",
        )
        started.append((watcher, workload))
        return workload

    yield start
    for watcher, workload in started:
        workload.stop()
        watcher.stop()  # and it stops cleanly on SIGTERM
    remove_test_cgroups()


def names(workload: Workload) -> list[str]:
    return [e["signal"] for e in workload.signals()]


def step(workload: Workload, percent: float, expect: list[str]) -> None:
    workload.to(percent)
    if len(expect) > len(names(workload)):
        wait_for(lambda: len(names(workload)) >= len(expect), 30, f"signals {expect}")
    time.sleep(SETTLE)  # and nothing more arrives
    assert names(workload) == expect, f"at {percent}%: got {names(workload)}, expected {expect}"


def test_hysteresis_and_rearm(watched):
    workload = watched("0")  # no repeats: one signal per crossing
    step(workload, 55, ["SIGUSR1"])
    step(workload, 44, ["SIGUSR1"])  # inside the band (40–50): still armed down, no re-arm
    step(workload, 55, ["SIGUSR1"])  # so crossing 50 again is not a new crossing
    step(workload, 30, ["SIGUSR1"])  # below 40: re-armed
    step(workload, 55, ["SIGUSR1", "SIGUSR1"])
    step(workload, 85, ["SIGUSR1", "SIGUSR1", "SIGUSR2"])
    step(workload, 74, ["SIGUSR1", "SIGUSR1", "SIGUSR2"])  # falling sends nothing (band 70–80)
    step(workload, 85, ["SIGUSR1", "SIGUSR1", "SIGUSR2"])  # critical was never re-armed
    step(workload, 60, ["SIGUSR1", "SIGUSR1", "SIGUSR2"])  # below 70: re-armed, no signal
    step(workload, 85, ["SIGUSR1", "SIGUSR1", "SIGUSR2", "SIGUSR2"])
    for event in workload.signals():
        floor = 50 if event["signal"] == "SIGUSR1" else 80
        assert event["percent"] >= floor - 2, event  # handled above its threshold


def test_cooldown_repeats_while_above_only(watched):
    workload = watched("1s")
    workload.to(55)
    wait_for(lambda: len(names(workload)) >= 3, 60, "two repeats of SIGUSR1")
    workload.to(20)
    time.sleep(SETTLE)
    count = len(names(workload))
    time.sleep(2 * SETTLE)
    assert len(names(workload)) == count, "repeated after usage fell below the threshold"
    times = [e["t"] for e in workload.signals()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.9 for gap in gaps[:2]), f"repeats closer than the 1 s cooldown: {gaps}"
    assert set(names(workload)) == {"SIGUSR1"}
