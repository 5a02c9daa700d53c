"""`oomhero run` leaves nothing behind: what its command started goes with it (exit, SIGTERM),
and a group that a SIGKILLed run left is removed by the next run, never a live run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomhero.targets.run_group import LEFTOVER_AGE
from tests.real_kernel.kit import oomhero, read_jsonl, wait_for

pytestmark = pytest.mark.guest_v2

# argv: PIDFILE ignore-term|honour-term exit|stay. Starts a daemon (double fork, own session:
# out of the command's process tree at once) that writes its PID to PIDFILE, then exits or
# stays. An ignore-term daemon needs SIGKILL: only the group (cgroup.kill) reaches it.
DAEMONIZING = """
import os, signal, sys, time
pidfile, term, then = sys.argv[1:4]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        if term == "ignore-term":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
        while True:
            time.sleep(60)
    os._exit(0)
while not os.path.exists(pidfile):
    time.sleep(0.02)
if then == "exit":
    sys.exit(0)
while True:
    time.sleep(60)
"""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Run:
    """`oomhero run --memory 64M -- DAEMONIZING ...`, logging JSON to a file."""

    def __init__(self, workdir: Path, name: str, term: str, then: str) -> None:
        self.pidfile = workdir / f"{name}.pid"
        self.log = workdir / f"{name}.log"
        argv = oomhero("run", "--memory", "64M", "--log-format", "json", "--")
        argv += [sys.executable, "-c", DAEMONIZING, str(self.pidfile), term, then]
        self.process = subprocess.Popen(argv, stderr=open(self.log, "w"))
        started = wait_for(lambda: self.records("running under a cgroup v2 limit"), 60, "run")
        self.group = Path(started[0]["how"].split(" in ")[1])
        self.command = started[0]["pid"]
        self.daemon = int(wait_for(self.daemon_pid, 60, "the daemon"))

    def daemon_pid(self) -> str:
        return self.pidfile.read_text() if self.pidfile.exists() else ""

    def records(self, msg: str) -> list[dict]:
        return [r for r in read_jsonl(self.log) if r.get("msg") == msg]

    def kill_everything(self) -> None:
        for pid in (self.process.pid, self.command, self.daemon):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def runs(tmp_path):
    started: list[Run] = []

    def start(*args: str) -> Run:
        run = Run(tmp_path, f"run{len(started)}", *args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill_everything()
        if run.group.exists():
            subprocess.run(oomhero("run", "--memory", "64M", "--", "true"), timeout=120)


def test_a_daemon_the_command_left_goes_when_the_command_exits(runs):
    run = runs("ignore-term", "exit")
    assert run.process.wait(timeout=60) == 0
    assert not alive(run.daemon), "the daemon outlived oomhero run"
    assert not run.group.exists(), "run left its cgroup behind"
    (stopped,) = run.records("stopped what the command left")
    assert stopped["processes"] == 1


def test_sigterm_to_run_stops_the_command_and_its_daemons(runs):
    run = runs("honour-term", "stay")
    run.process.terminate()
    assert run.process.wait(timeout=60) == 128 + signal.SIGTERM  # the command's own death
    assert not alive(run.daemon) and not alive(run.command)
    assert not run.group.exists()


def test_the_next_run_removes_what_a_sigkilled_run_left(runs):
    killed = runs("ignore-term", "stay")
    killed.process.kill()
    killed.process.wait()
    # The kernel tells the command (PR_SET_PDEATHSIG); the daemon ignores SIGTERM and stays.
    wait_for(lambda: not alive(killed.command), 30, "the command to get its SIGTERM")
    assert alive(killed.daemon) and killed.group.exists()
    wait_for(
        lambda: time.time() - killed.group.stat().st_ctime > LEFTOVER_AGE,
        LEFTOVER_AGE + 30,
        "the leftover to be older than a group being set up",
    )
    later = subprocess.run(
        oomhero("run", "--memory", "64M", "--log-format", "json", "--", "true"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert later.returncode == 0, later.stderr
    assert not killed.group.exists()
    assert not alive(killed.daemon)
    removed = [r for r in map(json.loads, later.stderr.splitlines()) if r.get("group")]
    assert removed[0]["msg"] == "removed the group a killed oomhero run left"
    assert removed[0]["group"] == str(killed.group) and removed[0]["processes"] == 1


def test_a_live_run_is_never_taken_for_a_leftover(runs):
    live = runs("honour-term", "stay")
    wait_for(
        lambda: time.time() - live.group.stat().st_ctime > LEFTOVER_AGE,
        LEFTOVER_AGE + 30,
        "the live run's group to be older than a group being set up",
    )
    later = subprocess.run(
        oomhero("run", "--memory", "64M", "--", "true"), capture_output=True, timeout=120
    )
    assert later.returncode == 0
    assert live.group.exists() and alive(live.daemon) and alive(live.command)
    assert live.process.poll() is None
    live.process.terminate()
    live.process.wait(timeout=60)
    assert not live.group.exists() and not alive(live.daemon)
