"""deploy/job.yaml and pod-native-sidecar.yaml under podman 4.3, which runs neither as a cluster
would: it has no Job kind and no native sidecars (it refuses an init container with a probe, and
would wait for one without a probe to exit before starting the app). So this checks what it can:
podman's refusal, said plainly; then the Job's pod in the kubelet's order — the sidecar first,
the app once the sidecar's startup probe passes (oomhero has scanned) — for the two things a
Job's completion rests on: the app ends with 0 once oomhero's SIGUSR2 tells it to, and oomhero,
stopped as the kubelet stops a native sidecar once the app has ended (SIGTERM), exits 0."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.image import podman as pm
from tests.image.test_pod import DEPLOY, handled, in_order, record_peak

pytestmark = pytest.mark.guest_v2

# podman 4.3's words for a native sidecar (an init container with a probe).
REFUSED = "cannot create an init container that has either of"


def as_pod(spec: dict, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def sidecar_alone(spec: dict) -> dict:
    """The pod with only its native sidecar, as a plain container (podman runs no init
    container beside the others), started first as the kubelet starts it."""
    spec = json.loads(json.dumps(spec))
    (sidecar,) = spec.pop("initContainers")
    sidecar.pop("restartPolicy")
    sidecar.pop("startupProbe")  # run by hand below: podman 4.3 runs no probes
    spec["containers"] = [sidecar]
    return spec


def start_app(pod: str, app: dict, security: dict) -> str:
    """The app's container of the manifest, added to the running pod."""
    name = f"{pod}-{app['name']}"
    pm.podman(
        "run", "-d", "--pod", pod, "--name", name,
        "--memory", str(int(app["resources"]["limits"]["memory"].removesuffix("Mi")) << 20),
        "--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--read-only",
        "--cap-drop", "all", "--security-opt", "no-new-privileges",
        app["image"], *app["args"],
    )  # fmt: skip
    return name


def test_podman_refuses_the_native_sidecar_in_words(pods, tmp_path):
    manifest = tmp_path / "native.yaml"
    manifest.write_text((DEPLOY / "pod-native-sidecar.yaml").read_text())
    result = pm.podman(
        "kube", "play", "--start=false", "--network", "none", str(manifest), check=False
    )
    if result.returncode == 0:
        pytest.fail("this podman takes native sidecars: run the pod for real here")
    assert REFUSED in result.stderr, result.stderr


def test_job_pod_ends_with_its_app_and_the_sidecar_stops_on_sigterm(pods, tmp_path):
    (job,) = yaml.safe_load_all((DEPLOY / "job.yaml").read_text())
    spec = job["spec"]["template"]["spec"]
    manifest = tmp_path / "job-pod.yaml"
    manifest.write_text(yaml.safe_dump(as_pod(sidecar_alone(spec), "batch")))
    pod = pm.play(manifest)
    sidecar = f"{pod}-oomhero"
    probe = spec["initContainers"][0]["startupProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    pm.wait_for(lambda: pm.healthy(sidecar), 180, "the sidecar's startup probe")
    app = start_app(pod, spec["containers"][0], spec["securityContext"])
    pm.wait_for(lambda: pm.inspect(app, "{{.State.Status}}") == "exited", 240, "the app to end")
    assert pm.inspect(app, "{{.State.ExitCode}} {{.State.OOMKilled}}") == "0 false"
    events = pm.json_records(pm.logs(app))
    assert in_order(handled(pm.logs(app))) and events[-1]["event"] == "exit", events
    # oomhero saw the app go, and runs on: it is the kubelet that stops a native sidecar.
    pm.wait_for(
        lambda: "target gone" in "\n".join(pm.logs(sidecar, check=False)), 60, "target gone"
    )
    assert pm.inspect(sidecar, "{{.State.Status}}") == "running"
    record_peak("sidecar of job.yaml", sidecar)
    pm.podman("stop", "--time", "30", sidecar)  # SIGTERM, then SIGKILL after 30 s
    assert pm.inspect(sidecar, "{{.State.ExitCode}}") == "0"
    stopped = [r for r in pm.text_records(pm.logs(sidecar)) if r["msg"] == "oomhero stopped"]
    assert stopped and stopped[-1]["by"] == "SIGTERM", stopped
