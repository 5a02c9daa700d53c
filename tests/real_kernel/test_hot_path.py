"""Between the decision and the signal: the known processes are signalled at once, then the
target's cgroup.procs (read through its open directory, no /proc walk) gives the newcomers,
which get the signal too; each one's handlers are read from the status kept since discovery."""

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
from tests.helpers import RECORDER, sample_all
from tests.real_kernel.kit import MIB, Workload, make_cgroup, remove_test_cgroups, wait_for

pytestmark = [pytest.mark.guest_v2, pytest.mark.guest_v1]


def test_a_process_started_since_the_last_scan_gets_the_signal_after_the_known_ones(tmp_path):
    cgroup = make_cgroup("hot", 128 * MIB)
    stream = io.StringIO()
    log.setup("json", stream)
    workload = Workload(cgroup, tmp_path / "workload.jsonl")
    engine = Engine(
        CgroupScanner([CgroupDir.open(str(cgroup.path), cgroup.version)]),
        WatchSettings(warning=50, critical=80, cooldown=0, sources=()),
    )
    marks = tmp_path / "late.signals"
    marks.touch()
    late = None
    try:
        engine.watchlist.rescan()  # oomhero tracks the workload only
        (target,) = engine.targets.values()
        assert set(target.processes.by_pid) == {workload.process.pid}
        late = cgroup.spawn(
            [sys.executable, "-c", RECORDER, str(marks)], stdout=subprocess.PIPE, text=True
        )
        assert late.stdout.readline().strip() == "ready"  # its handlers are installed
        workload.to(55)
        sample_all(engine, "poll")  # crosses warning with no rescan since the newcomer came
        wait_for(workload.signals, 30, "the workload's SIGUSR1")
        wait_for(lambda: "SIGUSR1" in marks.read_text(), 30, "the newcomer's SIGUSR1")
    finally:
        engine.close()
        workload.stop()
        if late is not None:
            late.kill()
            late.wait()
        remove_test_cgroups()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    sent = [r for r in records if r["msg"] == "signal sent"]
    # Known first, newcomer after; each line written after its signal left.
    assert [r["pid"] for r in sent] == [workload.process.pid, late.pid], sent
    levels = [r["msg"] for r in records if r["msg"] in ("rose to warning", "signal sent")]
    assert levels == ["rose to warning", "signal sent", "signal sent"], records
