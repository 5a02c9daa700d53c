"""oomhero's own memory need, measured: the sidecar in a pod (metrics on, scraped) watching an
app through warning and critical, with and without the CO-RE probe. Its container's cgroup
memory.peak — what the kernel charges it: anonymous memory, the page cache of the files it
reads first (the caches are dropped before), kernel memory and BPF maps — must leave the
manifests' request and limit their headroom. The figures go to test-results/footprint.json.
"""

from __future__ import annotations

import json
import shlex
import sys
import urllib.request

import pytest
import yaml

from tests.real_kernel.kit import (
    MIB,
    REPO,
    Container,
    Pod,
    bloat_argv,
    read_jsonl,
    remove_test_cgroups,
    wait_for,
)

pytestmark = pytest.mark.guest_v2

PORT = 19092
# The manifests ask for this much more than the peak measured: a request the container uses at
# most 1/1.25 of, a limit of at least 1.5 times the peak (the kernel OOM-kills at the limit).
REQUEST_HEADROOM, LIMIT_HEADROOM = 1.25, 1.5
RESULTS = REPO / "test-results" / "footprint.json"
_UNITS = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}


def quantity(text: str) -> int:
    number, unit = text[:-2], text[-2:]
    return int(number) * _UNITS[unit]


def manifest_resources() -> dict[str, dict[str, int]]:
    """The oomhero container's memory request and limit in each sidecar manifest."""
    found = {}
    for name in ("pod.yaml", "pod-ebpf.yaml", "pod-different-uid.yaml"):
        for document in yaml.safe_load_all((REPO / "deploy" / name).read_text()):
            for container in document["spec"]["containers"]:
                if container["name"] == "oomhero":
                    resources = container["resources"]
                    found[name] = {
                        "request": quantity(resources["requests"]["memory"]),
                        "limit": quantity(resources["limits"]["memory"]),
                    }
    return found


def sidecar(sources: str) -> Container:
    settings = {
        "WARNING": "65",
        "CRITICAL": "90",
        "METRICS_PORT": str(PORT),
        "OOMHERO_SOURCES": sources,
        "OOMHERO_LOG_FORMAT": "json",
    }
    run = shlex.join(
        ["env", *(f"{k}={v}" for k, v in settings.items()), sys.executable, "-m", "oomhero"]
    )
    return Container("sidecar", ["sh", "-c", f"exec {run}"])


def scrape(path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=10) as reply:
            return reply.read().decode()
    except OSError:
        return ""


@pytest.mark.parametrize("sources", ["all", "inotify,psi"], ids=["co-re-probe", "no-probe"])
def test_the_sidecars_peak_leaves_the_manifests_their_headroom(tmp_path, sources):
    trigger, events = tmp_path / "start-app", tmp_path / "app.jsonl"
    # The app waits for the sidecar to be up: the files both read (Python, oomhero) are then
    # charged to the sidecar, as its image's own files would be in a pod.
    app = shlex.join(bloat_argv(events, "16M"))
    waiting_app = f"while [ ! -e {shlex.quote(str(trigger))} ]; do sleep 0.1; done; exec {app}"
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")
    pod = Pod(
        "footprint",
        [sidecar(sources), Container("app", ["sh", "-c", waiting_app], memory_max=128 * MIB)],
        tmp_path,
    )
    try:
        wait_for(lambda: scrape("/healthz") == "ok\n", 120, "the sidecar's first scan")
        trigger.touch()
        wait_for(
            lambda: [e for e in read_jsonl(events) if e.get("signal") == "SIGUSR2"],
            120,
            "the app to get SIGUSR2",
        )
        for _ in range(5):
            assert "oomhero_memory_usage_bytes" in scrape("/metrics")
        cgroup = pod.containers["sidecar"].cgroup
        peak = int(cgroup.read("memory.peak"))
        stat = dict(line.split() for line in cgroup.read("memory.stat").splitlines())
        (pid,) = cgroup.pids()
        with open(f"/proc/{pid}/status") as f:
            status = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)
                      if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}  # fmt: skip
        log = (tmp_path / "sidecar.out").read_text()
    finally:
        pod.stop()
        remove_test_cgroups()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    probe_loaded = any(r["msg"] == "source ready" and r["source"] == "ebpf" for r in records)
    # The need: the cgroup's peak, or the process's peak RSS where that is more (file pages it
    # maps that another cgroup touched first, Python's own binary among them, are charged
    # there; in a pod its image's files are its own).
    need = max(peak, status["VmHWM"])
    figures = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    figures[sources] = {
        "need_bytes": need,
        "cgroup_peak_bytes": peak,
        "process_bytes": status,
        "cgroup_now": {k: int(stat[k]) for k in ("anon", "file", "kernel", "sock", "percpu")},
        "log": log[-3000:],
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=1))
    print(f"\n{sources}: memory.peak {peak / MIB:.1f} MiB, VmHWM {status['VmHWM'] / MIB:.1f} MiB")
    if sources == "all":
        assert probe_loaded, log
    for manifest, wanted in manifest_resources().items():
        assert wanted["request"] >= need * REQUEST_HEADROOM, (manifest, wanted, need)
        assert wanted["limit"] >= need * LIMIT_HEADROOM, (manifest, wanted, need)
