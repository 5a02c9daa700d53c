"""Node mode's discovery over synthetic cgroup trees named as each runtime names them (parsing,
labels and opt-in rules only; the guest shows it on real cgroups, with real podman containers in
tests/image/test_node_podman.py)."""

import json
import os
import subprocess
import sys

import pytest

from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import LIST
from oomhero.targets.node import (
    ENVIRON_BOUND,
    Labels,
    NodeScanner,
    container_settings,
    find_containers,
    labels_of,
    memory_root,
)
from tests.helpers import V1_UNLIMITED, run_cli, v1_dir, v2_dir, write_files

# Synthetic cgroup trees under the temp dir (parsing and policy), taken for cgroupfs.
pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")

UID1 = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
UID2 = "11111111-2222-3333-4444-555555555555"
CID = "ab" * 32
CID2 = "cd" * 32
SYSTEMD_POD = (
    f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID1.replace('-', '_')}.slice"
)
CGROUPFS_POD = f"kubepods/besteffort/pod{UID2}"


@pytest.fixture
def apps():
    started = []

    def start(**env):
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
            env={"PATH": "/usr/bin", **env},
            stdout=subprocess.PIPE,
        )
        started.append(process)
        # Running: Popen may return while exec is still setting up its environment (vfork).
        assert process.stdout.readline() == b"ready\n"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()
        process.stdout.close()


def unlimited(directory, pids=(1,)):
    """A v2 cgroup with processes and memory accounting but no limit of its own."""
    return v2_dir(directory, pids=pids, limit="max")


def no_memory(directory, pids=(1,)):
    """A v2 cgroup whose parent does not enable the memory controller for it."""
    return write_files(directory, {"cgroup.procs": "".join(f"{p}\n" for p in pids)})


def found(root, version=2):
    walked, containers = find_containers(str(root), version)
    return walked, {c.name: c.labels for c in containers}


@pytest.mark.parametrize(
    ("path", "labels"),
    [
        (f"{SYSTEMD_POD}/cri-containerd-{CID}.scope", Labels("containerd", CID, UID1)),
        (f"{SYSTEMD_POD}/crio-{CID}.scope", Labels("cri-o", CID, UID1)),
        (f"{SYSTEMD_POD}/docker-{CID}.scope", Labels("docker", CID, UID1)),
        (f"{CGROUPFS_POD}/{CID}", Labels("", CID, UID2)),
        (f"{CGROUPFS_POD}/anything", Labels("", "", UID2)),  # a pod's child, whatever its name
        (f"machine.slice/libpod-{CID}.scope", Labels("podman", CID)),
        (
            f"machine.slice/machine-libpod_pod_{CID2}.slice/libpod-{CID}.scope",
            Labels("podman", CID),
        ),
        (f"libpod_parent/libpod-{CID}", Labels("podman", CID)),
        (f"libpod_parent/{CID2}/libpod-{CID}", Labels("podman", CID)),
        (f"system.slice/docker-{CID}.scope", Labels("docker", CID)),
        (f"docker/{CID}", Labels("docker", CID)),
        (f"system.slice/crio-{CID}.scope", Labels("cri-o", CID)),
        (f"system.slice/nerdctl-{CID}.scope", Labels("containerd", CID)),
        # kind/k3d: the kubelet's tree below a nested root, or inside the node's own container.
        (
            "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
            f"kubelet-kubepods-besteffort-pod{UID1.replace('-', '_')}.slice/"
            f"cri-containerd-{CID}.scope",
            Labels("containerd", CID, UID1),
        ),
        # Not containers by name: monitors, services, slices, a short or upper-case "id".
        (f"machine.slice/libpod-conmon-{CID}.scope", None),
        (f"{SYSTEMD_POD}/crio-conmon-{CID}.scope", None),
        ("libpod_parent/conmon", None),
        ("system.slice/docker.service", None),
        ("kubepods.slice/kubepods-burstable.slice", None),
        (f"system.slice/docker-{CID[:63]}.scope", None),
        (f"system.slice/docker-{CID.upper()}.scope", None),
        (f"notdocker/{CID}", None),
    ],
)
def test_labels_from_each_runtimes_names(path, labels):
    assert labels_of(tuple(path.split("/"))) == labels


def test_group_counts_pods_together_then_by_runtime():
    assert Labels("cri-o", CID, UID1).group == "kubepods"
    assert Labels("podman", CID).group == "podman"
    assert Labels("").group == "other"


def test_a_container_is_the_deepest_cgroup_with_processes_and_a_limit_or_a_runtimes_name(tmp_path):
    root = v2_dir(tmp_path / "root")
    (root / "cgroup.controllers").write_text("memory\n")
    # Kubernetes, systemd driver: the pod's slice has a limit too, its containers are below it.
    v2_dir(root / SYSTEMD_POD)
    v2_dir(root / SYSTEMD_POD / f"cri-containerd-{CID}.scope", pids=[11])
    # podman (systemd, crun): the process sits in the scope's "container" child, no limit there.
    unlimited(root / f"machine.slice/libpod-{CID2}.scope", pids=[])
    unlimited(root / f"machine.slice/libpod-{CID2}.scope/container", pids=[12])
    unlimited(root / f"machine.slice/libpod-conmon-{CID2}.scope", pids=[13])
    # Docker, cgroupfs driver, no limit: known by its name alone.
    unlimited(root / f"docker/{CID}", pids=[14])
    # A kind node: Docker's container, with the kubelet's tree (cgroupfs driver) inside it.
    node = f"system.slice/docker-{CID2}.scope"
    v2_dir(root / node, pids=[15])  # the node's systemd and kubelet
    v2_dir(root / node / f"kubepods/burstable/pod{UID2}/{CID}", pids=[16])
    v2_dir(root / node / f"kubepods/burstable/pod{UID2}/{CID2}", pids=[17])
    # Any runtime else: a limit and processes. A service without a limit is not a container,
    # nor a runtime-named cgroup with no process, nor one without memory accounting.
    v2_dir(root / "box/sandbox-7", pids=[18])
    unlimited(root / "system.slice/sshd.service", pids=[19])
    unlimited(root / f"machine.slice/libpod-{'ef' * 32}.scope", pids=[])
    no_memory(root / f"system.slice/docker-{'12' * 32}.scope", pids=[20])
    walked, containers = found(root)
    assert containers == {
        f"/{SYSTEMD_POD}/cri-containerd-{CID}.scope": Labels("containerd", CID, UID1),
        f"/machine.slice/libpod-{CID2}.scope": Labels("podman", CID2),
        f"/docker/{CID}": Labels("docker", CID),
        f"/{node}/kubepods/burstable/pod{UID2}/{CID}": Labels("", CID, UID2),
        f"/{node}/kubepods/burstable/pod{UID2}/{CID2}": Labels("", CID2, UID2),
        "/box/sandbox-7": Labels(""),
    }
    assert walked == sum(1 for _ in os.walk(root))
    by_name = {c.name: c for c in find_containers(str(root), 2)[1]}
    assert by_name[f"/machine.slice/libpod-{CID2}.scope"].pids == (12,)  # the subtree's


def test_the_top_is_never_a_container_and_a_subtree_root_narrows_the_scan(tmp_path):
    root = v2_dir(tmp_path / "root", pids=[1])  # a limit and processes: a container's own view
    (root / "cgroup.controllers").write_text("memory\n")
    assert found(root) == (1, {})
    unlimited(root / f"kubepods.slice/libpod-{CID}.scope", pids=[2])
    unlimited(root / f"machine.slice/libpod-{CID2}.scope", pids=[3])
    (root / "kubepods.slice/cgroup.controllers").write_text("memory\n")  # every v2 cgroup has it
    assert memory_root(str(root / "kubepods.slice")) == (str(root / "kubepods.slice"), 2)
    assert found(root / "kubepods.slice")[1] == {f"/libpod-{CID}.scope": Labels("podman", CID)}


def test_v1_limits_and_names(tmp_path):
    memory = tmp_path / "memory"
    v1_dir(memory)
    v1_dir(memory / f"{CGROUPFS_POD}/{CID}", pids=[5])  # no limit of its own: known by name
    limited = v1_dir(memory / "box/job", pids=[6])
    (limited / "memory.limit_in_bytes").write_text(f"{64 << 20}\n")
    v1_dir(memory / "user.slice/session-1.scope", pids=[7])  # unlimited, no runtime's name
    assert memory_root(str(tmp_path)) == (str(memory), 1)
    assert found(memory, 1)[1] == {
        f"/{CGROUPFS_POD}/{CID}": Labels("", CID, UID2),
        "/box/job": Labels(""),
    }
    assert V1_UNLIMITED  # the unlimited value v1_dir writes


def test_symlinks_are_never_followed(tmp_path):
    root = v2_dir(tmp_path / "root")
    (root / "cgroup.controllers").write_text("memory\n")
    elsewhere = v2_dir(tmp_path / "elsewhere" / f"docker-{CID}.scope", pids=[8])
    (root / "system.slice").mkdir()
    (root / "system.slice" / f"docker-{CID}.scope").symlink_to(elsewhere)
    box = unlimited(root / f"docker/{CID2}", pids=[])
    (box / "cgroup.procs").unlink()
    (box / "cgroup.procs").symlink_to(elsewhere / "cgroup.procs")  # read through it: pid 8
    assert found(root)[1] == {}


def test_a_fifo_a_huge_or_a_garbled_cgroup_procs_neither_blocks_nor_is_read(tmp_path):
    root = v2_dir(tmp_path / "root")
    (root / "cgroup.controllers").write_text("memory\n")
    box = unlimited(root / f"docker/{CID}", pids=[])
    (box / "cgroup.procs").unlink()
    os.mkfifo(box / "cgroup.procs")  # nobody writes it: a blocking open would hang
    huge = unlimited(root / f"docker/{CID2}", pids=[])
    (huge / "cgroup.procs").write_text("9\n" * (LIST // 2 + 1))  # past CgroupDir's bound
    garbled = unlimited(root / f"docker/{CID[::-1]}", pids=[])
    (garbled / "cgroup.procs").write_bytes(b"9\n\xff\x1b[2J\n")
    fine = unlimited(root / f"docker/{CID2[::-1]}", pids=[10])
    (container,) = find_containers(str(root), 2)[1]
    assert container.path == str(fine) and container.pids == (10,)


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
    podman = apps()
    v2_dir(root / SYSTEMD_POD / f"cri-containerd-{CID}.scope", pids=[opted.pid])
    v2_dir(root / SYSTEMD_POD / f"cri-containerd-{CID[::-1]}.scope", pids=[plain.pid])
    v2_dir(root / CGROUPFS_POD / CID, pids=[broken.pid])
    unlimited(root / f"machine.slice/libpod-{CID2}.scope", pids=[podman.pid])
    # The agent's own container, and a pod's sandbox: neither is watched nor counted.
    v2_dir(root / SYSTEMD_POD / "agent", pids=[os.getpid()])
    return root


def summaries(json_log) -> list[dict]:
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    return [line for line in lines if line["msg"] == "node scanned"]


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
    assert len(everything) == 3  # the invalid one is never watched
    plain = NodeScanner(
        str(root), WatchSettings(), watch_all=True, exclude=[f"*{CID}.scope", "/machine.slice/*"]
    ).scan()
    (item,) = plain.values()
    assert item.name.endswith(f"{CID[::-1]}.scope") and item.settings == WatchSettings()
    included = NodeScanner(str(root), WatchSettings(), include=["/kubepods.slice/*"]).scan()
    assert len(included) == 2


def test_one_summary_line_per_change_of_what_was_found(tmp_path, apps, json_log):
    root = make_tree(tmp_path, apps)
    scanner = NodeScanner(str(root), WatchSettings())
    scanner.scan()
    scanner.scan()
    (first,) = summaries(json_log)
    # 4 containers: 3 in pods (the agent's own not counted), 1 of podman's; 1 opted in.
    assert first["containers"] == 4 and first["watching"] == 1, first
    assert first["runtimes"] == "kubepods 3, podman 1" and first["level"] == "info", first
    assert first["cgroups"] == sum(1 for _ in os.walk(root)) and first["root"] == str(root)
    v2_dir(root / f"docker/{'ef' * 32}", pids=[apps().pid])
    scanner.scan()
    assert [s["runtimes"] for s in summaries(json_log)] == [
        "kubepods 3, podman 1",
        "kubepods 3, docker 1, podman 1",
    ]


def test_nothing_found_says_so_and_where_it_looked(tmp_path, json_log):
    root = v2_dir(tmp_path / "root")
    (root / "cgroup.controllers").write_text("memory\n")
    unlimited(root / "system.slice/sshd.service")
    assert NodeScanner(str(root), WatchSettings(), watch_all=True).scan() == {}
    (line,) = summaries(json_log)
    assert line["level"] == "warning" and line["containers"] == 0 and line["runtimes"] == "none"
    assert line["cgroups"] == 3 and "is the host's cgroup tree mounted there?" in line["hint"]


def test_an_environment_past_the_bound_is_read_up_to_it(tmp_path, apps):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cgroup.controllers").write_text("memory\n")
    # One string may be 128 KiB at most (MAX_ARG_STRLEN): pad with several.
    pad = {f"PAD{i}": "x" * (100 << 10) for i in range(ENVIRON_BOUND // (100 << 10) + 1)}
    padded = apps(**pad, OOMHERO_WARNING="40")  # past the bound: not seen
    early = apps(OOMHERO_WARNING="40", **pad)
    v2_dir(root / f"docker/{CID}", pids=[padded.pid])
    v2_dir(root / f"docker/{CID2}", pids=[early.pid])
    (item,) = NodeScanner(str(root), WatchSettings()).scan().values()
    assert item.name == f"/docker/{CID2}"


def test_list_prints_every_container_and_why_it_is_watched_or_not(tmp_path, apps):
    root = make_tree(tmp_path, apps)
    v2_dir(root / "box" / "evil\x1b[2J", pids=[apps().pid])  # a limit: "other"; a hostile name
    result = run_cli("node", "--list", "--cgroup-root", str(root))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["runtime", "container", "pod", "uid", "watched", "cgroup"]
    rows = {line.split()[-1]: line for line in lines[1:-1]}
    assert "watched: its own settings" in rows[f"/{SYSTEMD_POD}/cri-containerd-{CID}.scope"]
    assert "not opted in" in rows[f"/{SYSTEMD_POD}/cri-containerd-{CID[::-1]}.scope"]
    assert "invalid settings" in rows[f"/{CGROUPFS_POD}/{CID}"]
    podman = rows[f"/machine.slice/libpod-{CID2}.scope"]
    assert podman.split()[:3] == ["podman", CID2[:12], "-"], podman
    assert rows["/box/evil\\x1b[2J"].startswith("other"), rows
    assert "\x1b" not in result.stdout
    assert lines[-1] == (
        f"scanned {sum(1 for _ in os.walk(root))} cgroups below {root}: 6 containers, 1 watched"
    )
