"""/metrics follows a real workload: the series move as it grows, and /healthz is ready."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.real_kernel.kit import MIB, Watcher, Workload, make_cgroup, remove_test_cgroups, wait_for

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
    assert 'oomhero_signals_sent_total{level="warning",signal="SIGUSR1"} 1.0' in after
    assert f'cgroup="{cgroup.path}"' in after
