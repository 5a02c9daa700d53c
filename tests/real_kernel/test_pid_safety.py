"""A process that exits, and a PID that the kernel hands to someone else, are never signalled:
oomhero holds a pidfd per process from discovery, so a stale PID cannot reach a newcomer."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from oomhero import log
from oomhero.config import WatchSettings
from oomhero.engine import Engine
from oomhero.kernel.cgroup import CgroupDir
from oomhero.targets.cgroups import CgroupScanner
from tests.helpers import sample_all
from tests.real_kernel.kit import MIB, Workload, make_cgroup, remove_test_cgroups, wait_for

pytestmark = pytest.mark.guest_v2

RECORDER = (
    "import signal, sys, time\n"
    "out = open(sys.argv[1], 'a')\n"
    "def rec(s, f): out.write(signal.Signals(s).name + '\\n'); out.flush()\n"
    "signal.signal(signal.SIGUSR1, rec)\n"
    "out.write('ready\\n'); out.flush()\n"
    "while True: time.sleep(1)\n"
)


def spawn_with_pid(wanted: int, argv: list[str]) -> subprocess.Popen:
    """Start argv as PID ``wanted`` (free again), steering the kernel's next PID."""
    for _ in range(20):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(wanted - 1))
        process = subprocess.Popen(argv)
        if process.pid == wanted:
            return process
        process.kill()
        process.wait()
    raise AssertionError(f"could not get pid {wanted} reused")


def test_exited_and_reused_pid_is_never_signalled(tmp_path):
    cgroup = make_cgroup("reuse", 128 * MIB)
    stream = io.StringIO()
    log.setup("json", stream)
    doomed = cgroup.spawn(["sleep", "600"])
    workload = Workload(cgroup, tmp_path / "workload.jsonl")
    engine = Engine(
        CgroupScanner([CgroupDir.open(str(cgroup.path), 2)]),
        WatchSettings(warning=50, critical=80, cooldown=0),
    )
    newcomer = None
    try:
        engine.watchlist.rescan()  # oomhero now tracks both processes of the cgroup
        tracked = set(next(iter(engine.targets.values())).processes.by_pid)
        assert tracked == {doomed.pid, workload.process.pid}

        doomed.kill()
        doomed.wait()  # exited and reaped: its PID is free
        marks = tmp_path / "newcomer.txt"
        newcomer = spawn_with_pid(doomed.pid, [sys.executable, "-c", RECORDER, str(marks)])
        wait_for(lambda: marks.exists() and "ready" in marks.read_text(), 60, "the newcomer")

        workload.to(55)
        sample_all(engine, "poll")  # the scan before signalling, then the pidfd, guard the newcomer
        wait_for(workload.signals, 30, "the workload's SIGUSR1")

        assert marks.read_text().split() == ["ready"], (
            "the newcomer with the reused PID got a signal"
        )
        assert newcomer.poll() is None
        assert [e["signal"] for e in workload.signals()] == ["SIGUSR1"]
        records = [json.loads(line) for line in stream.getvalue().splitlines()]
        sent = [r["pid"] for r in records if r["msg"] == "signal sent"]
        assert sent == [workload.process.pid]
        target = next(iter(engine.targets.values()))
        assert doomed.pid not in target.processes.by_pid, "the gone process was not forgotten"
    finally:
        engine.close()
        if newcomer:
            newcomer.kill()
            newcomer.wait()
        workload.stop()
        remove_test_cgroups()
