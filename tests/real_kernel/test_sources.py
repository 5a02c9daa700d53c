"""Kernel wake-up sources firing for real, and oomhero carrying on when one cannot be used.

Where a test must show that a source (not the clock) woke oomhero, polling is fixed at 10
minutes: after the first sample, every sample has to come from the source under test."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.real_kernel.kit import (
    MIB,
    Watcher,
    Workload,
    bloat_argv,
    make_cgroup,
    read_jsonl,
    remove_test_cgroups,
    wait_for,
)

NO_CLOCK = ("--interval", "10m")


@pytest.fixture
def cleanup():
    yield
    remove_test_cgroups()


def bloat(cgroup, events: Path, rate: str, *extra: str):
    return cgroup.spawn(bloat_argv(events, rate, *extra))


def stopped_counts(records: list[dict]) -> dict[str, int]:
    return next(r for r in records if r.get("msg") == "oomhero stopped")["samples_by_wakeup"]


@pytest.mark.guest_v2
def test_inotify_wakes_on_max_and_reports_the_oom_kill(tmp_path, cleanup):
    cgroup = make_cgroup("inotify", 64 * MIB)
    watcher = Watcher([cgroup], tmp_path / "log", "--sources", "inotify", *NO_CLOCK)
    app = bloat(cgroup, tmp_path / "bloat.jsonl", "64M")
    comm = wait_for(lambda: Path(f"/proc/{app.pid}/comm").read_text().strip(), 10, "its name")
    try:
        wait_for(lambda: watcher.records("oom kill"), 120, "oomhero to report the OOM kill")
    finally:
        app.kill()
        app.wait()
        records = watcher.stop()
    kills = [r for r in records if r.get("msg") == "oom kill"]
    assert kills[0]["victims"] >= 1 and kills[0]["total"] >= 1
    # The process the kernel killed, as its log names it (the guest runs oomhero as root).
    assert kills[0]["victim_pid"] == app.pid and kills[0]["victim_comm"] == comm, kills
    woken = [r for r in records if r.get("source") == "inotify"]
    assert any(r["msg"].startswith("rose to critical") for r in woken), records
    counts = stopped_counts(records)
    assert counts.get("poll") == 1 and counts.get("inotify", 0) >= 1, counts


@pytest.mark.guest_v2
def test_psi_trigger_wakes_under_memory_high_throttling(tmp_path, cleanup):
    cgroup = make_cgroup("psi", 512 * MIB)
    (cgroup.path / "memory.high").write_text(str(24 * MIB))
    watcher = Watcher(
        [cgroup],
        tmp_path / "log",
        "--sources",
        "psi",
        "--psi",
        "some:50ms/1s",
        "--warning-psi",
        "some_avg10>5",
        "--log-level",
        "debug",
        *NO_CLOCK,
    )
    app = bloat(cgroup, tmp_path / "bloat.jsonl", "32M", "--stop-at", "64M")
    try:
        wait_for(
            lambda: [r for r in watcher.records("sampled") if r["source"] == "psi"],
            120,
            "a sample woken by the PSI trigger",
        )
        # Usage stays far below the warning share of 512 MiB: only pressure can raise it.
        wait_for(lambda: watcher.records("signal sent"), 120, "the pressure condition")
        high_events = cgroup.events()["high"]
    finally:
        app.kill()
        app.wait()
        records = watcher.stop()
    assert high_events > 0, "memory.high never throttled the workload"
    counts = stopped_counts(records)
    assert counts.get("poll") == 1 and counts.get("psi", 0) >= 1, counts
    sent = [r for r in records if r.get("msg") == "signal sent"]
    assert (sent[0]["reason"], sent[0]["source"], sent[0]["signal"]) == (
        "pressure",
        "psi",
        "SIGUSR1",
    )
    assert sent[0]["percent"] < 75


@pytest.mark.guest_v1
def test_v1_eventfd_thresholds_wake_at_the_byte_values(tmp_path, cleanup):
    cgroup = make_cgroup("eventfd", 128 * MIB)
    workload = Workload(cgroup, tmp_path / "signals.jsonl")
    watcher = Watcher(
        [cgroup],
        tmp_path / "log",
        "--warning",
        "50",
        "--critical",
        "80",
        "--cooldown",
        "0",
        "--sources",
        "inotify,psi,eventfd",  # not the probe, which would see the crossings first
        *NO_CLOCK,
    )
    try:
        workload.to(55)
        wait_for(workload.signals, 60, "SIGUSR1")
        workload.to(85)
        wait_for(lambda: len(workload.signals()) >= 2, 60, "SIGUSR2")
    finally:
        workload.stop()
        records = watcher.stop()
    assert [s["signal"] for s in workload.signals()] == ["SIGUSR1", "SIGUSR2"]
    sent = [r for r in records if r.get("msg") == "signal sent"]
    assert [r["source"] for r in sent] == ["eventfd", "eventfd"], sent
    assert 50 <= sent[0]["percent"] < 58 and 80 <= sent[1]["percent"] < 88, sent
    watching = watcher.records("watching target")
    assert watching[0]["sources"] == "eventfd"
    # On v1, inotify and PSI have nothing to work with: said once each, and that is all.
    missing = [r["source"] for r in records if r.get("msg") == "source unavailable"]
    assert sorted(missing) == ["inotify", "psi"], missing


@pytest.mark.guest_v2
def test_adaptive_polling_samples_densely_only_near_a_threshold(tmp_path, cleanup):
    cgroup = make_cgroup("adaptive", 256 * MIB)
    watcher = Watcher(
        [cgroup],
        tmp_path / "log",
        "--sources",
        "none",
        "--warning",
        "75",
        "--poll-burst",
        "0",  # follow the measured rate only (the burst bound has its own test)
        "--log-level",
        "debug",
    )
    wait_for(lambda: len(watcher.records("sampled")) >= 3, 60, "idle samples")
    app = bloat(cgroup, tmp_path / "bloat.jsonl", "32M")
    try:
        wait_for(lambda: watcher.records("signal sent"), 120, "the warning signal")
    finally:
        app.kill()
        app.wait()
        records = watcher.stop()
    samples = [r for r in records if r.get("msg") == "sampled"]
    idle = samples[:3]
    assert all(r["next_in"] == 1.0 for r in idle), idle  # nothing moves: the ceiling
    far = [r["next_in"] for r in samples if 20 <= r["percent"] < 40 and r["rate_mib_s"] > 0]
    near = [r["next_in"] for r in samples if 65 <= r["percent"] < 75]
    assert far and near, samples
    assert min(near) < min(far), (far, near)
    assert min(near) < 0.2, near
    sent = [r for r in records if r.get("msg") == "signal sent"]
    assert sent[0]["source"] == "adaptive"


@pytest.mark.guest_v2
def test_adaptive_polling_watches_a_small_idle_target_closely_enough_for_a_burst(tmp_path, cleanup):
    small, big = make_cgroup("burst/small", 64 * MIB), make_cgroup("burst/big", 8192 * MIB)
    watcher = Watcher([small, big], tmp_path / "log", "--sources", "none", "--log-level", "debug")
    wait_for(lambda: len(watcher.records("sampled")) >= 8, 60, "idle samples")
    records = watcher.stop()
    gaps = {}
    for r in records:
        if r.get("msg") == "sampled":
            gaps.setdefault(r["target"].rsplit("/", 1)[1], []).append(r["next_in"])
    # 48 MiB to warning at the default 1 GiB/s burst: ~23 ms. 6 GiB away: the 1 s ceiling.
    assert max(gaps["small"]) < 0.05, gaps
    assert min(gaps["big"]) == 1.0, gaps


# -- each source taken away in turn: oomhero says why once and keeps working ------------------


@pytest.mark.guest_v2
def test_without_inotify_it_says_so_once_and_still_signals(tmp_path, cleanup):
    limit_file = Path("/proc/sys/fs/inotify/max_user_instances")
    saved = limit_file.read_text()
    limit_file.write_text("0")  # no inotify instance for anyone
    try:
        first, second = make_cgroup("noinotify/a", 128 * MIB), make_cgroup("noinotify/b", 128 * MIB)
        workload = Workload(first, tmp_path / "signals.jsonl")
        watcher = Watcher(
            [first, second], tmp_path / "log", "--warning", "50", "--sources", "inotify,psi,eventfd"
        )
        try:
            workload.to(55)
            wait_for(workload.signals, 60, "SIGUSR1 without inotify")
        finally:
            workload.stop()
            records = watcher.stop()
    finally:
        limit_file.write_text(saved)
    missing = [r for r in records if r.get("msg") == "source unavailable"]
    inotify = [r for r in missing if r["source"] == "inotify"]
    assert len(inotify) == 1, missing  # two targets, one line
    assert {r["sources"] for r in watcher.records("watching target")} == {"psi"}
    assert [r["source"] for r in missing] == ["inotify", "eventfd"], missing


@pytest.mark.guest_v2
def test_without_psi_permission_it_says_so_once_and_still_signals(cleanup):
    # oomhero and the app under the same unprivileged UID: signalling is allowed, opening the
    # root-owned memory.pressure for writing (a PSI trigger) is not.
    shared = Path(tempfile.mkdtemp(prefix="oomhero-psi-"))
    shared.chmod(0o777)
    cgroup = make_cgroup("nopsi", 128 * MIB)
    workload = Workload(cgroup, shared / "signals.jsonl", uid=65534)
    watcher = Watcher([cgroup], shared / "log", "--warning", "50", uid=65534)
    try:
        workload.to(55)
        wait_for(lambda: read_jsonl(shared / "signals.jsonl"), 60, "SIGUSR1 without PSI")
    finally:
        workload.stop()
        records = watcher.stop()
    missing = {r["source"]: r["why"] for r in records if r.get("msg") == "source unavailable"}
    assert "Permission denied" in missing["psi"], missing
    assert watcher.records("watching target")[0]["sources"] == "inotify"
    assert os.stat(shared / "signals.jsonl").st_uid == 65534
