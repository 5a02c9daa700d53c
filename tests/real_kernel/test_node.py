"""Node mode on a kernel-real kubepods tree: cgroups named like kubelet's (systemd and cgroupfs
drivers), several "pods", containers opting in through their own environment."""

from __future__ import annotations

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

pytestmark = [pytest.mark.guest_v2, pytest.mark.guest_v1]

UID_A = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
UID_B = "11111111-2222-3333-4444-555555555555"
SYSTEMD_POD_DIR = f"kubepods-burstable-pod{UID_A.replace('-', '_')}.slice"
POD_A = f"node/kubepods.slice/kubepods-burstable.slice/{SYSTEMD_POD_DIR}"
POD_B = f"node/kubepods/besteffort/pod{UID_B}"


def test_node_agent_watches_opted_in_containers_with_their_own_thresholds(tmp_path):
    containers = {
        "a1": (f"{POD_A}/cri-containerd-{'a1' * 32}.scope", {"OOMHERO_WARNING": "40"}),
        "a2": (f"{POD_A}/cri-containerd-{'a2' * 32}.scope", {}),
        "b1": (f"{POD_B}/{'b1' * 32}", {"OOMHERO_WARNING": "60"}),
    }
    workloads = {}
    for name, (path, env) in containers.items():
        workloads[name] = Workload(
            make_cgroup(path, 128 * MIB), tmp_path / f"{name}.jsonl", env=env
        )
    root = (
        cgroup_base(2 if (cgroup_base(2) / "cgroup.controllers").exists() else 1)
        / TEST_ROOT
        / "node"
    )
    watcher = Watcher(
        [],
        tmp_path / "log",
        "--cooldown",
        "0",
        command=("node", "--cgroup-root", str(root)),
        expect=2,
    )
    try:
        for workload in workloads.values():
            workload.to(65)
        wait_for(
            lambda: workloads["a1"].signals() and workloads["b1"].signals(), 60, "both SIGUSR1"
        )
    finally:
        for workload in workloads.values():
            workload.stop()
        records = watcher.stop()
        remove_test_cgroups()
    assert not workloads["a2"].signals(), "a container that did not opt in was signalled"
    sent = {r["target"].rsplit("/", 1)[1][-8:]: r for r in records if r.get("msg") == "signal sent"}
    assert set(sent) == {"a1.scope", "b1b1b1b1"}, sent
    # Signalled at 65 % at most, below the agent's own warning (75): each used its own.
    assert 40 <= sent["a1.scope"]["percent"] < 67
    assert 60 <= sent["b1b1b1b1"]["percent"] < 67
    watching = [r["target"] for r in records if r.get("msg") == "watching target"]
    assert all(t.startswith("/kubepods") for t in watching), watching
