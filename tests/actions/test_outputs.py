"""Metrics, readiness and the webhook, wired to a real engine over a synthetic cgroup directory
(parsing only; the guest shows the series moving with a real workload)."""

import http.server
import json
import threading
import urllib.error
import urllib.request

import pytest

from oomhero.actions.metrics import Metrics, container_labels, serve
from oomhero.actions.webhook import Webhook
from oomhero.config import WatchSettings
from oomhero.engine import Engine
from oomhero.kernel.cgroup import CgroupDir
from oomhero.targets.cgroups import CgroupScanner
from tests.helpers import MIB, run_cli, v2_dir, wait_until

QUIET = WatchSettings(warning=50, critical=80, sources=(), cooldown=0)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def series(text, name):
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def value(line):
    return float(line.rsplit(" ", 1)[1])


@pytest.fixture
def watched(tmp_path, recorder):
    directory = v2_dir(
        tmp_path / "cg", pids=[recorder.pid], current=10 * MIB, limit=str(100 * MIB), inactive=0
    )
    cgroup = CgroupDir(str(directory), 2)
    engine = Engine(CgroupScanner([cgroup]), QUIET)
    yield engine, directory
    engine.close()
    cgroup.close()


def test_metrics_move_with_the_samples_and_healthz_waits_for_the_first_scan(watched):
    engine, directory = watched
    metrics = Metrics()
    engine.listeners.append(metrics)
    server = serve(metrics, lambda: engine.watchlist.scanned_once, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert get(base + "/healthz")[0] == 503
        engine.watchlist.rescan()
        engine.sample_all("poll")
        assert get(base + "/healthz")[0] == 200
        text = get(base + "/metrics")[1]
        (usage,) = series(text, "oomhero_memory_usage_bytes")
        assert f'cgroup="{directory}"' in usage and value(usage) == 10 * MIB
        assert value(series(text, "oomhero_target_level")[0]) == 0

        (directory / "memory.current").write_text(f"{60 * MIB}\n")
        engine.sample_all("poll")
        text = get(base + "/metrics")[1]
        assert value(series(text, "oomhero_memory_usage_bytes")[0]) == 60 * MIB
        assert value(series(text, "oomhero_memory_usage_ratio")[0]) == 0.6
        assert value(series(text, "oomhero_target_level")[0]) == 1
        sent = series(text, "oomhero_signals_sent_total")
        assert sent == ['oomhero_signals_sent_total{level="warning",signal="SIGUSR1"} 1.0']
        assert 'oomhero_wakeups_total{source="poll"} 2.0' in text
        assert "pid" not in text.split("# HELP")[0] + "".join(series(text, "oomhero_memory"))
        assert get(base + "/nothing")[0] == 404
    finally:
        server.shutdown()


def test_container_labels_from_kubelet_cgroup_paths():
    uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    cid = "ab" * 32
    systemd = (
        "/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{uid.replace('-', '_')}.slice/cri-containerd-{cid}.scope"
    )
    assert container_labels(systemd) == (systemd, uid, cid[:12])
    cgroupfs = f"/kubepods/besteffort/pod{uid}/{cid}"
    assert container_labels(cgroupfs) == (cgroupfs, uid, cid[:12])
    assert container_labels("/../app") == ("/../app", "", "")


class Receiver(http.server.ThreadingHTTPServer):
    """A local webhook endpoint that records bodies; ``gate`` holds replies back."""

    def __init__(self):
        self.bodies = []
        self.gate = threading.Event()
        self.gate.set()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.gate.wait(30)
                receiver.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def test_webhook_posts_each_crossing_without_holding_up_the_loop(watched, recorder):
    engine, directory = watched
    receiver = Receiver()
    receiver.gate.clear()  # the endpoint is slow: it answers only when the test says so
    webhook = Webhook(receiver.url, timeout=10, retries=0)
    engine.listeners.append(webhook)
    try:
        engine.watchlist.rescan()
        (directory / "memory.current").write_text(f"{90 * MIB}\n")
        engine.sample_all("poll")
        # The signal went out while the webhook is still waiting for its endpoint.
        assert recorder.received() == ["SIGUSR2"]
        assert webhook.delivered == 0
        receiver.gate.set()
        wait_until(lambda: webhook.delivered == 1, "the webhook delivery")
    finally:
        webhook.close()
        receiver.shutdown()
    (body,) = receiver.bodies
    assert body["target"] == str(directory)
    assert (body["level"], body["reason"], body["usage"], body["limit"]) == (
        "critical",
        "jumped",
        90 * MIB,
        100 * MIB,
    )
    assert body["percent"] == 90.0 and body["time"] > 0


def test_webhook_retries_then_gives_up_with_one_line(watched, json_log):
    engine, directory = watched
    dead = Receiver()
    url = dead.url
    dead.shutdown()
    dead.server_close()  # nothing listens there now
    webhook = Webhook(url, timeout=1, retries=2)
    engine.listeners.append(webhook)
    try:
        engine.watchlist.rescan()
        (directory / "memory.current").write_text(f"{60 * MIB}\n")
        engine.sample_all("poll")
        wait_until(lambda: webhook.failed == 1, "the webhook to give up", timeout=30)
    finally:
        webhook.close()
    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    failures = [r for r in records if r["msg"] == "webhook delivery failed"]
    assert len(failures) == 1 and failures[0]["attempts"] == 3


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--webhook", "ftp://example/x"], "--webhook='ftp://example/x' is not an http"),
        (["--metrics-port", "http"], "--metrics-port='http' is not a TCP port"),
        (["--metrics-port", "70000"], "is not a TCP port"),
        (["--webhook-timeout", "1s"], "--webhook-timeout needs a webhook URL"),
        (["--metrics-address", "127.0.0.1"], "needs a metrics port"),
    ],
)
def test_bad_output_settings_exit_2(tmp_path, args, words):
    directory = v2_dir(tmp_path / "cg")
    result = run_cli("watch", str(directory), "--sources", "none", *args)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
