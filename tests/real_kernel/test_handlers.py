"""A warning never kills: only processes whose /proc/<pid>/status SigCgt shows a handler for the
signal get it. SIGUSR1 and SIGUSR2 terminate a process without one (a shell, a helper, an app
still starting up), so the container's helper lives, and an app that installs its handler late
gets the next signal (a cooldown's repeat) once it has."""

from __future__ import annotations

import json
import sys

import pytest

from tests.real_kernel.kit import MIB, Watcher, Workload, make_cgroup, remove_test_cgroups, wait_for

pytestmark = [pytest.mark.guest_v2, pytest.mark.guest_v1]

# Installs its SIGUSR1/SIGUSR2 handlers only once argv[1] exists; records them to argv[2].
LATE_APP = (
    "import json, os, signal, sys, time\n"
    "trigger, out = sys.argv[1], open(sys.argv[2], 'a')\n"
    "def say(what): out.write(json.dumps(what) + '\\n'); out.flush()\n"
    "say('starting')\n"
    "while not os.path.exists(trigger): time.sleep(0.05)\n"
    "for s in (signal.SIGUSR1, signal.SIGUSR2):\n"
    "    signal.signal(s, lambda n, f: say(signal.Signals(n).name))\n"
    "say('installed')\n"
    "while True: time.sleep(1)\n"
)


def lines(path) -> list[str]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_only_handling_processes_are_signalled_and_a_late_handler_gets_the_next(tmp_path):
    cgroup = make_cgroup("handlers", 128 * MIB)
    helper = cgroup.spawn(["sleep", "600"])
    trigger, late_out = tmp_path / "install", tmp_path / "late.jsonl"
    late = cgroup.spawn([sys.executable, "-c", LATE_APP, str(trigger), str(late_out)])
    workload = Workload(cgroup, tmp_path / "app.jsonl")
    watcher = None
    try:
        wait_for(lambda: "starting" in lines(late_out), 60, "the late app to start")
        flags = ("--warning", "50", "--critical", "80", "--cooldown", "1s")
        watcher = Watcher([cgroup], tmp_path / "oomhero.log", *flags)

        def skipped(pid: int, level: str) -> list[dict]:
            return [
                r
                for r in watcher.records("not signalled")
                if r["pid"] == pid and r["threshold"] == level
            ]

        workload.to(55)
        wait_for(lambda: workload.signals(), 60, "the app's SIGUSR1")
        for process in (helper, late):
            wait_for(
                lambda p=process: skipped(p.pid, "warning") or p.poll() is not None,
                30,
                f"pid {process.pid} to be skipped",
            )
        assert helper.poll() is None and late.poll() is None, "a warning killed a process"

        trigger.touch()
        wait_for(lambda: "SIGUSR1" in lines(late_out), 60, "the late app's SIGUSR1 (a repeat)")
        assert lines(late_out).index("installed") < lines(late_out).index("SIGUSR1")

        workload.to(85)
        wait_for(lambda: "SIGUSR2" in lines(late_out), 60, "the late app's SIGUSR2")
        wait_for(lambda: skipped(helper.pid, "critical"), 30, "the helper skipped at critical")
        assert "SIGUSR2" in [e["signal"] for e in workload.signals()]
        assert helper.poll() is None, "the helper was killed"
        records = watcher.stop()
    finally:
        if watcher is not None and watcher.process.poll() is None:
            watcher.process.kill()
        workload.stop()
        for process in (helper, late):
            process.kill()
            process.wait()
        remove_test_cgroups()

    sent = {r["pid"] for r in records if r.get("msg") == "signal sent"}
    assert sent == {workload.process.pid, late.pid}
    # One line per process and level, however many repeats skipped it.
    skips = [r for r in records if r.get("msg") == "not signalled"]
    assert sorted((r["pid"], r["threshold"]) for r in skips) == sorted(
        [(helper.pid, "warning"), (helper.pid, "critical"), (late.pid, "warning")]
    )
    assert all("does not handle SIGUSR" in r["why"] for r in skips), skips
