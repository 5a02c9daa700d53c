"""/metrics follows a real workload: the series move as it grows, and /healthz is ready."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.real_kernel.kit import (
    MIB,
    TEST_ROOT,
    Watcher,
    Workload,
    cgroup_base,
    make_cgroup,
    remove_test_cgroups,
    wait_for,
)

pytestmark = pytest.mark.guest_v2

PORT = 19090


def scrape(path: str = "/metrics") -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=10) as reply:
            return reply.read().decode()
    except urllib.error.HTTPError as exc:
        return f"{exc.code}"


def gauge(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + "{")]
    return float(line.rsplit(" ", 1)[1])


def test_metrics_follow_a_growing_workload(tmp_path):
    cgroup = make_cgroup("metrics", 128 * MIB)
    workload = Workload(cgroup, tmp_path / "signals.jsonl")
    watcher = Watcher([cgroup], tmp_path / "log", "--warning", "50", "--metrics-port", str(PORT))
    try:
        wait_for(lambda: scrape("/healthz") == "ok\n", 30, "readiness after the first scan")
        workload.to(20)
        wait_for(lambda: gauge(scrape(), "oomhero_memory_usage_ratio") >= 0.2, 30, "20 %")
        before = scrape()
        workload.to(55)
        wait_for(lambda: gauge(scrape(), "oomhero_target_level") == 1, 30, "the warning level")
        # The probe (a default source) reports the crossing at 50 %; the gauges follow the
        # workload to 55 % at a later sample (the 5 s safety net while the probe is armed).
        wait_for(lambda: gauge(scrape(), "oomhero_memory_usage_ratio") >= 0.55, 30, "55 %")
        after = scrape()
    finally:
        workload.stop()
        watcher.stop()
        remove_test_cgroups()
    assert gauge(before, "oomhero_target_level") == 0
    assert gauge(after, "oomhero_memory_usage_bytes") > gauge(before, "oomhero_memory_usage_bytes")
    assert gauge(after, "oomhero_memory_usage_bytes") >= 0.55 * 128 * MIB
    assert gauge(after, "oomhero_memory_limit_bytes") == 128 * MIB
    (sent,) = [line for line in after.splitlines() if line.startswith("oomhero_signals_sent")]
    assert f'cgroup="{cgroup.path}"' in sent and 'level="warning"' in sent
    assert sent.endswith('signal="SIGUSR1"} 1.0')
    assert gauge(after, "oomhero_warning_threshold_ratio") == 0.5
    assert gauge(after, "oomhero_memory_pressure_some_avg10_ratio") >= 0
    assert "_created" not in after and "oomhero_build_info{" in after


UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
POD = (
    "node/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{UID.replace('-', '_')}.slice"
)


def test_node_series_say_which_container_and_go_with_it(tmp_path):
    """Node mode: each container's series carry its pod UID and container id (from the cgroup
    path) and its own thresholds; a container that goes takes its series with it."""
    ids = {"keep": "ab" * 32, "goes": "cd" * 32}
    workloads = {
        name: Workload(
            make_cgroup(f"{POD}/cri-containerd-{cid}.scope", 128 * MIB),
            tmp_path / f"{name}.jsonl",
            env={"OOMHERO_WARNING": "40" if name == "keep" else "60"},
        )
        for name, cid in ids.items()
    }
    root = cgroup_base(2) / TEST_ROOT / "node"
    watcher = Watcher(
        [], tmp_path / "log", "--metrics-port", str(PORT),
        command=("node", "--cgroup-root", str(root)), expect=2,
    )  # fmt: skip
    try:
        wait_for(lambda: scrape("/healthz") == "ok\n", 30, "readiness after the first scan")
        workloads["goes"].to(70)
        wait_for(lambda: workloads["goes"].signals(), 60, "SIGUSR1 for the container that goes")
        both = scrape()
        workloads["goes"].stop()  # its last process gone: the agent retires the container
        wait_for(lambda: ids["goes"] not in scrape(), 30, "the series of the container gone")
        after = scrape()
        gone = watcher.records("target gone")
    finally:
        for workload in workloads.values():
            workload.stop()
        watcher.stop()
        remove_test_cgroups()
    thresholds = [line for line in both.splitlines() if line.startswith("oomhero_warning_thr")]
    assert sorted(float(line.rsplit(" ", 1)[1]) for line in thresholds) == [0.4, 0.6]
    for line in thresholds:
        assert f'pod_uid="{UID}"' in line, line
        assert any(f'container_id="{cid}"' in line for cid in ids.values()), line
    (sent,) = [line for line in both.splitlines() if line.startswith("oomhero_signals_sent")]
    assert f'container_id="{ids["goes"]}"' in sent and f'pod_uid="{UID}"' in sent
    assert len(gone) == 1 and ids["goes"] in gone[0]["target"]
    per_target = [line for line in after.splitlines() if "container_id=" in line]
    assert per_target and all(ids["keep"] in line for line in per_target), per_target
