"""The bloat example app as a subprocess: its JSON events, signals, /healthz and exit codes."""

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from tests.helpers import REPO, clean_env, wait_until

MIB = 1024**2


class Bloat:
    def __init__(self, *args):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oomhero.demo.bloat", *args],
            cwd=REPO,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_event(self):
        line = self.lines.get(timeout=20)
        assert line is not None, f"bloat ended: {self.process.wait()} {self.process.stderr.read()}"
        return json.loads(line)

    def rss(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def signal(self, sig):
        self.process.send_signal(sig)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture
def bloat():
    started = []

    def start(*args):
        app = Bloat(*args)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz(port, path="/healthz"):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_start_event_names_the_rate(bloat):
    app = bloat("--rate", "64M", "--port", "0", "--stop-at", "1M")
    start = app.next_event()
    assert start["event"] == "start"
    assert start["rate"] == 64 * MIB
    assert start["pid"] == app.process.pid
    assert start["held"] == 0
    assert {"t", "cgroup_usage"} <= set(start)


def test_sigusr1_frees_the_cache_once(bloat):
    app = bloat("--rate", "64M", "--port", "0", "--free-on-warning", "8M", "--stop-at", "64M")
    assert app.next_event()["event"] == "start"
    baseline = app.rss()
    # More than the 8 MiB cache is held once its RSS grew by 12 MiB.
    wait_until(lambda: app.rss() - baseline >= 12 * MIB, "bloat to grow 12 MiB")

    app.signal(signal.SIGUSR1)
    first = app.next_event()
    assert (first["event"], first["signal"]) == ("signal", "SIGUSR1")
    assert first["freed"] == 8 * MIB

    app.signal(signal.SIGUSR1)
    second = app.next_event()
    assert (second["event"], second["signal"]) == ("signal", "SIGUSR1")
    assert second["freed"] == 0


def test_free_on_warning_zero_frees_nothing(bloat):
    app = bloat("--rate", "64M", "--port", "0", "--free-on-warning", "0", "--stop-at", "8M")
    assert app.next_event()["event"] == "start"
    baseline = app.rss()
    wait_until(lambda: app.rss() - baseline >= 4 * MIB, "bloat to grow 4 MiB")
    app.signal(signal.SIGUSR1)
    assert app.next_event()["freed"] == 0


def test_sigusr2_turns_healthz_to_500(bloat):
    port = free_port()
    app = bloat("--rate", "1M", "--port", str(port), "--stop-at", "1M")
    assert app.next_event()["event"] == "start"
    assert healthz(port) == 200
    assert healthz(port, "/other") == 404
    app.signal(signal.SIGUSR2)
    event = app.next_event()
    assert (event["event"], event["signal"], event["healthz"]) == ("signal", "SIGUSR2", 500)
    assert healthz(port) == 500


def test_sigterm_exits_0_after_an_exit_event(bloat, tmp_path):
    events = tmp_path / "events.jsonl"
    app = bloat("--rate", "1M", "--port", "0", "--stop-at", "1M", "--events", str(events))
    assert app.next_event()["event"] == "start"
    app.signal(signal.SIGTERM)
    assert app.next_event()["event"] == "exit"
    assert app.process.wait(timeout=20) == 0
    assert [json.loads(line)["event"] for line in events.read_text().splitlines()] == [
        "start",
        "exit",
    ]


def test_exit_on_critical_ends_a_batch_job_with_0(bloat):
    app = bloat("--rate", "1M", "--port", "0", "--stop-at", "1M", "--exit-on-critical")
    assert app.next_event()["event"] == "start"
    app.signal(signal.SIGUSR1)  # a warning changes nothing about it
    assert app.next_event()["signal"] == "SIGUSR1"
    app.signal(signal.SIGUSR2)
    assert (app.next_event()["signal"], app.next_event()["event"]) == ("SIGUSR2", "exit")
    assert app.process.wait(timeout=20) == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--rate", "12X"], "--rate='12X'"),
        (["--rate", "0"], "--rate='0'"),
        (["--free-on-warning", "lots"], "--free-on-warning='lots'"),
        (["--stop-at", "1Q"], "--stop-at='1Q'"),
    ],
)
def test_bad_size_exits_2_with_one_line(args, words):
    result = subprocess.run(
        [sys.executable, "-m", "oomhero.demo.bloat", "--port", "0", *args],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("oomhero bloat: error: ")
    assert words in lines[0]
    assert result.stdout == ""


def test_bad_rate_through_the_oomhero_command_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "oomhero", "bloat", "--rate", "12X", "--port", "0"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--rate='12X'" in result.stderr
    assert "Traceback" not in result.stderr


def test_busy_port_exits_2(bloat):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        app = bloat("--port", str(busy.getsockname()[1]), "--stop-at", "1M")
        assert app.process.wait(timeout=20) == 2
        assert "cannot serve /healthz" in app.process.stderr.read()
