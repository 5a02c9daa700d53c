"""The node agent from the image, run as deploy/daemonset.yaml runs it (host PID namespace, the
host's cgroup tree read-only, UID 0 with only KILL and SYS_PTRACE), against real podman
containers: two on their own and two in a pod, one of each opting in by its environment. It must
say what it scanned, and signal exactly the opted-in ones at their own thresholds.

podman here uses the cgroupfs manager (libpod_parent/libpod-<id>, libpod_parent/<pod>/...):
the guest has no systemd, and podman's systemd manager needs its bus ("crun: cannot open
sd-bus"); the systemd names (machine.slice/libpod-<id>.scope) are covered by the host tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.image import podman as pm
from tests.image.test_pod import handled, record_peak

pytestmark = pytest.mark.guest_v2

IMAGE = "localhost/oomhero:0.1.0"
LIMIT = 128 << 20
# An app that is not oomhero (the image's entrypoint would reject OOMHERO_* it does not know):
# the bloat module run by the image's Python.
BLOAT = ["/opt/oomhero/bin/python", "-m", "oomhero.demo.bloat", "--rate", "8M", "--port", "0"]
OPTED = {"OOMHERO_WARNING": "50", "OOMHERO_CRITICAL": "80"}


def run_alone(name: str, env: dict[str, str], *bloat_args: str) -> str:
    options = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    pm.podman(
        "run", "-d", "--name", name, "--network", "none", "--memory", str(LIMIT),
        *options, "--entrypoint", BLOAT[0], IMAGE, *BLOAT[1:], *bloat_args,
    )  # fmt: skip
    return pm.inspect(name, "{{.Id}}")


def pod_manifest(path: Path) -> Path:
    def app(name: str, env: dict[str, str], *bloat_args: str) -> dict:
        return {
            "name": name,
            "image": IMAGE,
            "command": [*BLOAT, *bloat_args],
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "resources": {"limits": {"memory": "128Mi"}},
        }

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "apps"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                app("opted", OPTED, "--shed-on-critical"),
                app("plain", {}, "--stop-at", "32M"),
            ],
        },
    }
    path.write_text(yaml.safe_dump(pod))
    return path


def start_agent() -> str:
    pm.podman(
        "run", "-d", "--name", "agent", "--network", "none", "--pid", "host",
        "--user", "0:0", "--cap-drop", "all", "--cap-add", "KILL,SYS_PTRACE", "--read-only",
        "--security-opt", "no-new-privileges",
        "-v", "/sys/fs/cgroup:/host/sys/fs/cgroup:ro",
        "--env", "OOMHERO_NODE_CGROUP_ROOT=/host/sys/fs/cgroup",
        "--env", "WARNING=75", "--env", "CRITICAL=90",
        IMAGE, "node", "--log-format", "json", "--cooldown", "0",
    )  # fmt: skip
    return "agent"


def agent_records() -> list[dict]:
    return pm.json_records(pm.logs("agent", check=False))


def summaries() -> list[dict]:
    return [r for r in agent_records() if r.get("msg") == "node scanned"]


def test_node_agent_finds_and_signals_podman_containers(pods, tmp_path):
    # The agent first, as a DaemonSet is there before the pods: it says it found nothing.
    agent = start_agent()
    first = pm.wait_for(summaries, 180, "the agent's first scan")[0]
    assert first["containers"] == 0 and first["level"] == "warning" and "hint" in first, first
    ids = {
        "alone-opted": run_alone("alone-opted", OPTED, "--shed-on-critical"),
        "alone-plain": run_alone("alone-plain", {}, "--stop-at", "32M"),
    }
    pod = pm.play(pod_manifest(tmp_path / "apps.yaml"), network="none")
    for name in ("opted", "plain"):
        ids[f"pod-{name}"] = pm.inspect(f"{pod}-{name}", "{{.Id}}")

    def scanned() -> dict | None:
        found = [r for r in summaries() if r["containers"] == 4]
        return found[-1] if found else None

    summary = pm.wait_for(scanned, 180, "the agent to find the four containers")
    # The infra container (catatonit), conmon and the agent itself are not counted.
    assert summary["runtimes"] == "podman 4" and summary["watching"] == 2, summary
    assert summary["cgroups"] > 4 and summary["root"] == "/host/sys/fs/cgroup", summary
    apps = {"alone-opted": "alone-opted", "pod-opted": f"{pod}-opted"}
    for name, container in apps.items():
        pm.wait_for(
            lambda c=container: "SIGUSR2" in handled(pm.logs(c, check=False)),
            180,
            f"{name}: SIGUSR2",
        )
    records = agent_records()
    record_peak("node agent (4 containers)", agent)
    watched = {r["target"] for r in records if r.get("msg") == "watching target"}
    assert watched == {
        f"/libpod_parent/libpod-{ids['alone-opted']}",
        f"/libpod_parent/{pm.podman('pod', 'inspect', pod, '--format', '{{.Id}}').stdout.strip()}"
        f"/libpod-{ids['pod-opted']}",
    }, watched
    sent = [r for r in records if r.get("msg") == "signal sent"]
    for name, container in apps.items():
        mine = [r for r in sent if ids[name] in r["target"]]
        assert [r["signal"] for r in mine][:1] == ["SIGUSR1"] and "SIGUSR2" in [
            r["signal"] for r in mine
        ], (name, sent)
        # Its own thresholds (50 / 80), not the agent's (75 / 90).
        warning = next(r for r in mine if r["signal"] == "SIGUSR1")
        critical = next(r for r in mine if r["signal"] == "SIGUSR2")
        assert 50 <= warning["percent"] < 75, warning
        assert 80 <= critical["percent"] < 90, critical
        assert pm.inspect(container, "{{.State.Status}} {{.State.OOMKilled}}") == "running false"
    for plain in ("alone-plain", f"{pod}-plain"):
        assert not handled(pm.logs(plain, check=False)), plain
    assert not [r for r in records if r.get("level") == "error"], records
    assert pm.inspect(agent, "{{.State.Status}}") == "running"
    # What it sees, as a user would ask it (in its container: after its memory peak was read).
    listed = pm.podman("exec", agent, "oomhero", "node", "--list").stdout
    print(listed)
    for name, container_id in ids.items():
        (row,) = [line for line in listed.splitlines() if container_id[:12] in line]
        verdict = "watched: its own settings" if name.endswith("opted") else "not opted in"
        assert row.startswith("podman") and verdict in row, (name, row)
