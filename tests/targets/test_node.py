"""Node mode's discovery over a synthetic kubepods tree (parsing and opt-in rules only; the
guest shows it on real cgroups with real workloads)."""

import subprocess
import sys

import pytest

from oomhero.config import WatchSettings
from oomhero.targets.node import NodeScanner, container_dirs, container_settings, memory_root
from tests.helpers import v1_dir, v2_dir

# Synthetic cgroup trees under the temp dir (parsing and policy), taken for cgroupfs.
pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")

UID1 = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
UID2 = "11111111-2222-3333-4444-555555555555"
CID = "ab" * 32
SYSTEMD_POD = (
    f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID1.replace('-', '_')}.slice"
)
CGROUPFS_POD = f"kubepods/besteffort/pod{UID2}"


@pytest.fixture
def apps():
    started = []

    def start(**env):
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"], env={"PATH": "/usr/bin", **env}
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_container_dirs_are_pod_children_in_both_drivers(tmp_path):
    root = v2_dir(tmp_path / "root")
    for path in (
        f"{SYSTEMD_POD}/cri-containerd-{CID}.scope",
        f"{SYSTEMD_POD}/cri-containerd-{CID[::-1]}.scope/nested",  # never below a container
        f"{CGROUPFS_POD}/{CID}",
        "kubepods.slice/kubepods-burstable.slice",  # a QoS level, not a pod
        "system.slice/docker.service",
    ):
        (root / path).mkdir(parents=True, exist_ok=True)
    found = [str(p.relative_to(root)) for p in map(type(root), container_dirs(str(root)))]
    assert sorted(found) == sorted(
        [
            f"{SYSTEMD_POD}/cri-containerd-{CID}.scope",
            f"{SYSTEMD_POD}/cri-containerd-{CID[::-1]}.scope",
            f"{CGROUPFS_POD}/{CID}",
        ]
    )


def test_memory_root_finds_v2_or_the_v1_memory_hierarchy(tmp_path):
    v2 = v2_dir(tmp_path / "v2")
    (v2 / "cgroup.controllers").write_text("memory\n")
    assert memory_root(str(v2)) == (str(v2), 2)
    v1 = tmp_path / "v1"
    v1_dir(v1 / "memory")
    assert memory_root(str(v1)) == (str(v1 / "memory"), 1)
    with pytest.raises(OSError, match="neither"):
        memory_root(str(tmp_path / "nothing"))


def test_container_settings_come_from_the_environment():
    environ = b"PATH=/bin\0OOMHERO_WARNING=40\0OOMHERO_CRITICAL_SIGNAL=SIGTERM\0WARNING=99\0"
    settings = container_settings(environ)
    assert {k: (v.name, v.raw) for k, v in settings.items()} == {
        "warning": ("OOMHERO_WARNING", "40"),
        "critical_signal": ("OOMHERO_CRITICAL_SIGNAL", "SIGTERM"),
    }


def make_tree(tmp_path, apps):
    root = tmp_path / "root"
    (root).mkdir()
    (root / "cgroup.controllers").write_text("memory\n")
    opted = apps(OOMHERO_WARNING="40")
    plain = apps()
    broken = apps(OOMHERO_WARNING="lots")
    v2_dir(root / SYSTEMD_POD / f"cri-containerd-{CID}.scope", pids=[opted.pid])
    v2_dir(root / SYSTEMD_POD / f"cri-containerd-{CID[::-1]}.scope", pids=[plain.pid])
    v2_dir(root / CGROUPFS_POD / CID, pids=[broken.pid])
    return root


def test_only_opted_in_containers_with_their_own_thresholds(tmp_path, apps, json_log):
    root = make_tree(tmp_path, apps)
    found = NodeScanner(str(root), WatchSettings()).scan()
    (item,) = found.values()
    assert item.name == f"/{SYSTEMD_POD}/cri-containerd-{CID}.scope"
    assert (item.settings.warning, item.settings.critical) == (40, 90)
    log = json_log.getvalue()
    assert "container settings invalid: not watched" in log and "OOMHERO_WARNING='lots'" in log


def test_all_with_exclude_and_include_globs(tmp_path, apps):
    root = make_tree(tmp_path, apps)
    everything = NodeScanner(str(root), WatchSettings(), watch_all=True).scan()
    assert len(everything) == 2  # the invalid one is never watched
    plain = NodeScanner(
        str(root), WatchSettings(), watch_all=True, exclude=[f"*{CID}.scope"]
    ).scan()
    (item,) = plain.values()
    assert item.name.endswith(f"{CID[::-1]}.scope") and item.settings == WatchSettings()
    included = NodeScanner(str(root), WatchSettings(), include=["/kubepods.slice/*"]).scan()
    assert len(included) == 2
