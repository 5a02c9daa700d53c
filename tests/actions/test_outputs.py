"""Metrics, readiness and the webhook, wired to a real engine over a synthetic cgroup directory
(parsing only; the guest shows the series moving with a real workload)."""

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest

from oomhero.actions import endpoint
from oomhero.actions.endpoint import Liveness, serve
from oomhero.actions.metrics import Metrics, PodIdentity, container_labels
from oomhero.actions.webhook import QUEUE_SIZE, Webhook
from oomhero.config import WatchSettings
from oomhero.engine import Engine
from oomhero.kernel.cgroup import CgroupDir
from oomhero.targets.cgroups import CgroupScanner
from tests.helpers import (
    MIB,
    REPO,
    SYNTHETIC_CLI,
    clean_env,
    run_cli,
    sample_all,
    v2_dir,
    wait_until,
)

# Synthetic cgroup trees under the temp dir (parsing and policy), taken for cgroupfs.
pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")

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
def watched(tmp_path, recorder, sleeper):
    """The recorder handles the signals; the sleeper does not: it is never signalled."""
    directory = v2_dir(
        tmp_path / "cg",
        pids=[recorder.pid, sleeper.pid],
        current=10 * MIB,
        limit=str(100 * MIB),
        inactive=0,
    )
    cgroup = CgroupDir.open(str(directory), 2)
    engine = Engine(CgroupScanner([cgroup]), QUIET)
    yield engine, directory
    engine.close()
    cgroup.close()


def test_metrics_move_with_the_samples_and_healthz_waits_for_the_first_scan(watched):
    engine, directory = watched
    metrics = Metrics()
    liveness = Liveness(lambda: engine.watchlist.scanned_once, stalled_after=60)
    engine.listeners.extend((metrics, liveness))
    server = serve(metrics.registry, liveness, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(base + "/healthz")[0] == 503
        engine.watchlist.rescan()
        sample_all(engine, "poll")
        assert get(base + "/healthz")[0] == 200
        text = get(base + "/metrics")[1]
        (usage,) = series(text, "oomhero_memory_usage_bytes")
        assert f'cgroup="{directory}"' in usage and value(usage) == 10 * MIB
        assert value(series(text, "oomhero_target_level")[0]) == 0

        (directory / "memory.current").write_text(f"{60 * MIB}\n")
        sample_all(engine, "poll")
        text = get(base + "/metrics")[1]
        assert value(series(text, "oomhero_memory_usage_bytes")[0]) == 60 * MIB
        assert value(series(text, "oomhero_memory_usage_ratio")[0]) == 0.6
        assert value(series(text, "oomhero_target_level")[0]) == 1
        target = f'cgroup="{directory}",'
        (sent,) = series(text, "oomhero_signals_sent_total")
        assert target in sent and 'level="warning",' in sent and 'signal="SIGUSR1"} 1.0' in sent
        assert 'oomhero_wakeups_total{source="poll"} 2.0' in text
        (skipped,) = series(text, "oomhero_signals_skipped_total")
        assert target in skipped and 'level="warning",' in skipped
        assert 'signal="SIGUSR1"} 1.0' in skipped
        assert value(series(text, "oomhero_warning_threshold_ratio")[0]) == 0.5
        assert value(series(text, "oomhero_critical_threshold_ratio")[0]) == 0.8
        assert value(series(text, "oomhero_memory_pressure_some_avg10_ratio")[0]) == 0.015
        assert value(series(text, "oomhero_memory_pressure_full_avg10_ratio")[0]) == 0.0075
        assert "_created" not in text
        assert 'oomhero_build_info{version="' in text
        for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds"):
            assert name in text
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
    assert container_labels(systemd) == ("", "", uid, cid, systemd)
    cgroupfs = f"/kubepods/besteffort/pod{uid}/{cid}"
    assert container_labels(cgroupfs) == ("", "", uid, cid, cgroupfs)
    assert container_labels("/../app") == ("", "", "", "", "/../app")
    # A sidecar knows its pod from the downward API; the container id from the path it sees.
    pod = PodIdentity("shop", "cart-7d9f", uid)
    assert container_labels(f"/../{cid}", pod) == ("shop", "cart-7d9f", uid, cid, f"/../{cid}")


def named(engine, path):
    """The target watched under ``path`` (targets are keyed by what they are)."""
    (target,) = [t for t in engine.targets.values() if t.name == str(path)]
    return target


def test_a_targets_series_go_with_it_and_the_others_stay(tmp_path, recorder):
    """A node agent's containers come and go for weeks: none may leave series behind."""
    dirs = {
        name: v2_dir(tmp_path / name, pids=[recorder.pid], current=90 * MIB, limit=str(100 * MIB))
        for name in ("a", "b")
    }
    cgroups = {name: CgroupDir.open(str(d), 2) for name, d in dirs.items()}
    scanner = CgroupScanner(list(cgroups.values()))
    engine = Engine(scanner, QUIET)
    metrics = Metrics()
    engine.listeners.append(metrics)
    try:
        engine.watchlist.rescan()
        sample_all(engine, "poll")
        engine.actions.oom_killed(named(engine, dirs["a"]), 1, 1)
        before = generate_latest(metrics.registry).decode()
        assert f'cgroup="{dirs["a"]}"' in "".join(series(before, "oomhero_oom_kills_total"))
        assert len(series(before, "oomhero_signals_sent_total")) == 2  # critical, each target
        scanner.paths = [str(dirs["b"])]
        engine.watchlist.rescan()
        after = generate_latest(metrics.registry).decode()
    finally:
        engine.close()
        for cgroup in cgroups.values():
            cgroup.close()
    per_target = [line for line in after.splitlines() if "cgroup=" in line]
    assert per_target and all(f'cgroup="{dirs["b"]}"' in line for line in per_target), per_target
    assert f'cgroup="{dirs["a"]}"' not in after


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(
    not PROMTOOL and not os.environ.get("CI"),
    reason="promtool not installed (Debian's prometheus package; .ci/run installs it)",
)
def test_promtool_finds_nothing_to_say_about_the_exposition(tmp_path, recorder):
    # Labels from a hostile cgroup path: quotes, a backslash, a newline, not UTF-8.
    hostile = tmp_path / os.fsdecode(b'a "b" \\ c\nd \xff')
    directory = v2_dir(hostile, pids=[recorder.pid], current=90 * MIB, limit=str(100 * MIB))
    cgroup = CgroupDir.open(str(directory), 2)
    engine = Engine(CgroupScanner([cgroup]), QUIET)
    metrics = Metrics(PodIdentity("shop", "cart", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"))
    engine.listeners.append(metrics)
    try:
        engine.watchlist.rescan()
        sample_all(engine, "poll")
        engine.actions.oom_killed(named(engine, directory), 1, 1)
        metrics.detected(named(engine, directory), "ebpf", 0.003)
        text = generate_latest(metrics.registry)
    finally:
        engine.close()
        cgroup.close()
    assert PROMTOOL, "promtool is missing: apt-get install prometheus"
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout + result.stderr, result


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
        sample_all(engine, "poll")
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
    assert body["version"] == 1 and body["source"] == "poll"


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
        sample_all(engine, "poll")
        wait_until(lambda: webhook.failed == 1, "the webhook to give up", timeout=30)
    finally:
        webhook.close()
    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    failures = [r for r in records if r["msg"] == "webhook delivery failed"]
    assert len(failures) == 1 and failures[0]["attempts"] == 3


def test_webhook_close_is_prompt_against_a_hanging_endpoint_and_counts_the_dropped(json_log):
    hanging = Receiver()
    hanging.gate.clear()  # it reads each body, then never answers
    webhook = Webhook(hanging.url, timeout=30, retries=3)
    try:
        for _ in range(QUEUE_SIZE + 1):  # one taken, in flight for good; then the queue full
            webhook.queue.put(b"{}", timeout=5)
        started = time.monotonic()
        webhook.close()
        took = time.monotonic() - started
    finally:
        hanging.gate.set()
        hanging.shutdown()
    assert took <= 1.2, took
    (stopped,) = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert stopped["msg"] == "webhook stopped" and stopped["delivered"] == 0
    assert (stopped["dropped"], stopped["in_flight"]) == (QUEUE_SIZE, 1)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def threads_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def closed_by_server(sock, within):
    """True when the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_flood_of_idle_slow_and_busy_clients_is_bounded_and_the_signal_still_arrives(
    tmp_path, recorder
):
    """Local traffic only (127.0.0.1), bounded: 300 idle connections, 20 that trickle a byte
    every 0.2 s, one client scraping in a loop, for about REQUEST_DEADLINE seconds."""
    directory = v2_dir(
        tmp_path / "cg", pids=[recorder.pid], current=10 * MIB, limit=str(100 * MIB), inactive=0
    )
    port, log = free_port(), tmp_path / "oomhero.log"
    flags = ["--sources", "none", "--interval", "100ms", "--warning", "50", "--critical", "80"]
    watcher = subprocess.Popen(
        [
            *SYNTHETIC_CLI,
            "watch",
            str(directory),
            *flags,
            "--metrics-port",
            str(port),
        ],
        env=clean_env(),
        cwd=REPO,
        stderr=open(log, "w"),
    )
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    scrapes = []

    def scrape_in_a_loop():
        while not stop.is_set() and len(scrapes) < 5000:
            with contextlib.suppress(OSError):
                scrapes.append(get(base + "/metrics")[0])

    def trickle(sock):
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            while not stop.wait(0.2):
                sock.sendall(b"X")

    idle, slow, workers = [], [], []
    try:
        wait_until(lambda: _answers(base + "/healthz"), "the metrics server")
        opened = time.monotonic()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        workers = [threading.Thread(target=trickle, args=(s,)) for s in slow]
        workers.append(threading.Thread(target=scrape_in_a_loop))
        for worker in workers:
            worker.start()
        most_threads = 0
        for _ in range(20):
            most_threads = max(most_threads, threads_of(watcher.pid))
            time.sleep(0.05)
        # The crossing, in the middle of the flood: the loop still samples and signals.
        (directory / "memory.current").write_text(f"{90 * MIB}\n")
        wait_until(lambda: recorder.received() == ["SIGUSR2"], "the signal", timeout=10)
        # Each is cut REQUEST_DEADLINE after its accept, or sooner to make room for newer ones.
        end = opened + endpoint.REQUEST_DEADLINE + 3
        still_open = [
            s for s in idle + slow if not closed_by_server(s, max(end - time.monotonic(), 0.1))
        ]
        stop.set()
        for worker in workers:
            worker.join(10)
        assert get(base + "/metrics")[0] == 200, "the server did not recover"
    finally:
        stop.set()
        for sock in idle + slow:
            sock.close()
        watcher.terminate()
        assert watcher.wait(timeout=30) == 0
    # The loop's thread, the server's and the renderer's, whatever the clients do.
    assert most_threads == 3, most_threads
    assert not still_open, f"{len(still_open)} connections outlived the request deadline"
    assert scrapes.count(200) >= 1


def _answers(url):
    with contextlib.suppress(OSError):
        return get(url)[0] in (200, 503)
    return False


def test_metrics_bind_this_machine_only_unless_in_a_pod():
    from oomhero.commands.common import default_metrics_address

    for command in ("watch", "top", "run"):
        assert default_metrics_address(command) == "127.0.0.1"
    for command in ("sidecar", "node"):
        assert default_metrics_address(command) == "0.0.0.0"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--webhook", "ftp://example/x"], "--webhook='ftp://example/x' is not a usable"),
        (["--metrics-port", "http"], "--metrics-port='http' is not a TCP port"),
        (["--metrics-port", "70000"], "is not a TCP port"),
        (["--metrics-port", "٥٠"], "--metrics-port='٥٠' is not a TCP port"),
        (["--metrics-port", "²"], "--metrics-port='²' is not a TCP port"),
        (["--metrics-port", " 9090"], "--metrics-port=' 9090' is not a TCP port"),
        (
            ["--webhook", "http://127.0.0.1:9/x", "--webhook-retries", "99"],
            "--webhook-retries='99' is not a whole number from 0 to 10",
        ),
        (
            ["--webhook", "http://127.0.0.1:9/x", "--webhook-timeout", "1h"],
            "--webhook-timeout='1h' must be from 100ms to 1m",
        ),
        (["--webhook-timeout", "1s"], "--webhook-timeout needs --webhook"),
        (["--metrics-address", "127.0.0.1"], "needs --metrics-port"),
    ],
)
def test_bad_output_settings_exit_2(tmp_path, args, words):
    directory = v2_dir(tmp_path / "cg")
    result = run_cli("watch", str(directory), "--sources", "none", *args, synthetic=True)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
