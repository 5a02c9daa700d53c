"""deploy/pod.yaml and deploy/pod-different-uid.yaml, run by podman from the image built from the
Dockerfile: the sidecar finds the app through the pod's shared PID namespace, reads its limit
through /proc/<pid>/root, and gets SIGUSR1 then SIGUSR2 to it before any OOM kill."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tests.image import podman as pm

pytestmark = pytest.mark.guest_v2

DEPLOY = pm.REPO / "deploy"
LIMIT = 128 << 20  # the app's limit in both manifests
WARNING, CRITICAL = 0.65, 0.90


@pytest.fixture
def pods():
    pm.remove_pods()
    yield
    pm.remove_pods()


def wait_for_lines(container: str, wanted, timeout: float, what: str) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = pm.logs(container)
        if wanted(lines):
            return lines
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {lines}\n{pm.state()}")


def handled(lines: list[str]) -> list[str]:
    return [e["signal"] for e in pm.json_records(lines) if e.get("event") == "signal"]


def probe(manifest: Path, container: str) -> int:
    """The manifest's own liveness probe, an exec probe (bloat's /healthz is on 127.0.0.1), run
    in the container: podman 4.3 has no kubelet to run it (its healthchecks need systemd timers)."""
    spec = yaml.safe_load(manifest.read_text())["spec"]
    (bloat,) = [c for c in spec["containers"] if c["name"] == "bloat"]
    command = bloat["livenessProbe"]["exec"]["command"]
    result = pm.podman("exec", container, *command, check=False, timeout=120)
    print(f"probe: exit {result.returncode}: {result.stderr[-400:]}")
    return result.returncode


def run_pod(manifest: Path) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Plays the pod, waits for both signals to be handled; returns (sidecar, app) log records."""
    pod = pm.play(manifest)
    app, sidecar = f"{pod}-bloat", f"{pod}-oomhero"
    wait_for_lines(sidecar, lambda ls: "watching target" in "\n".join(ls), 180, "the sidecar")
    assert probe(manifest, app) == 0, "the app's /healthz should answer 200 before SIGUSR2"
    app_lines = wait_for_lines(app, lambda ls: "SIGUSR2" in handled(ls), 180, "SIGUSR2")
    assert probe(manifest, app) == 1, "the app's /healthz should answer 500 after SIGUSR2"

    cgroup = Path("/sys/fs/cgroup" + pm.inspect(app, "{{.State.CgroupPath}}"))
    events = dict(line.split() for line in (cgroup / "memory.events").read_text().splitlines())
    assert events["oom_kill"] == "0", events
    assert int((cgroup / "memory.max").read_text()) == LIMIT
    for name in (app, sidecar):
        assert pm.inspect(name, "{{.State.Status}} {{.State.OOMKilled}}") == "running false"
    infra = pm.podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}").stdout.strip()
    assert pm.inspect(infra, "{{.State.Status}}") == "running"
    ids = {
        "app": pm.inspect(app, "{{.Id}}"),
        "sidecar": pm.inspect(sidecar, "{{.Id}}"),
        "infra": infra,
    }
    return pm.text_records(pm.logs(sidecar)), pm.json_records(app_lines), ids


def assert_signalled_only_the_app(
    sidecar: list[dict], app: list[dict], ids: dict[str, str]
) -> None:
    (start,) = [e for e in app if e["event"] == "start"]
    # The app's container, never the sidecar's own. Kubernetes' pause (comm "pause") is skipped;
    # podman's infra runs catatonit, which oomhero watches as a container without a limit.
    watched = {r["target"] for r in sidecar if r["msg"] == "watching target"}
    assert [t for t in watched if ids["app"] in t] and not [
        t for t in watched if ids["sidecar"] in t
    ]
    assert all(ids["app"] in t or ids["infra"] in t for t in watched), (watched, ids)
    sent = [r for r in sidecar if r["msg"] == "signal sent"]
    assert [r["signal"] for r in sent[:2]] == ["SIGUSR1", "SIGUSR2"], sent
    assert {int(r["pid"]) for r in sent} == {start["pid"]}, (sent, start)
    # Handled by the app in that order, each before the limit was reached.
    signals = [e for e in app if e["event"] == "signal"]
    assert [e["signal"] for e in signals[:2]] == ["SIGUSR1", "SIGUSR2"], signals
    warning, critical = signals[:2]
    assert WARNING * LIMIT <= warning["usage_at_signal"] < CRITICAL * LIMIT, warning
    assert CRITICAL * LIMIT <= critical["cgroup_usage"] < LIMIT, critical
    assert critical["healthz"] == 500


def test_pod_yaml(pods):
    assert_signalled_only_the_app(*run_pod(DEPLOY / "pod.yaml"))


def test_pod_different_uid_with_its_two_capabilities(pods):
    assert_signalled_only_the_app(*run_pod(DEPLOY / "pod-different-uid.yaml"))
