"""examples/: the Python, Go and Node.js apps, each in a memory cgroup beside a workload that fills
it (the bloat app), watched by a real `oomhero watch`: each prints its warning reaction on
SIGUSR1, then its critical one on SIGUSR2."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.real_kernel.kit import REPO, require_guest

pytestmark = pytest.mark.guest_v2

EXAMPLES = REPO / "examples"
CGROUP = Path("/sys/fs/cgroup/oomhero-examples")
# Room for node's own ~45 MiB (V8) below warning, so the first sample is not past it already.
LIMIT = 256 << 20
WARNING_LINE = "warning: dropped "
CRITICAL_LINE = "critical: readiness failing, shedding load"


def command(language: str, tmp: Path) -> list[str]:
    if language == "python":
        return ["/usr/bin/python3", str(EXAMPLES / "python" / "app.py")]
    if language == "node":
        return [shutil.which("node") or "node", str(EXAMPLES / "node" / "app.js")]
    binary = tmp / "go-app"
    env = {**os.environ, "GOCACHE": str(tmp / "gocache"), "GOFLAGS": "-mod=mod"}
    subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=EXAMPLES / "go", env=env, check=True
    )
    return [str(binary)]


def spawn_in(cgroup: Path, argv: list[str], out: Path) -> subprocess.Popen:
    procs = cgroup / "cgroup.procs"

    def join() -> None:
        procs.write_text("0")

    return subprocess.Popen(argv, stdout=open(out, "w"), stderr=subprocess.STDOUT, preexec_fn=join)


@pytest.mark.parametrize("language", ["python", "go", "node"])
def test_example_reacts_to_both_signals(language, tmp_path):
    require_guest()
    argv = command(language, tmp_path)
    (CGROUP.parent / "cgroup.subtree_control").write_text("+memory")
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "cgroup.subtree_control").write_text("+memory")
    group = CGROUP / language
    group.mkdir()
    (group / "memory.max").write_text(str(LIMIT))
    out = tmp_path / "app.out"
    # The workload that fills the cgroup: 4 MiB/s, nothing freed, no port. Both start before
    # oomhero does: a SIGUSR1 before a process has its handler would kill it.
    filler = [sys.executable, "-m", "oomhero", "bloat", "--rate", "4M", "--port", "0"]
    filler += ["--free-on-warning", "0", "--shed-on-critical"]
    processes = [spawn_in(group, argv, out), spawn_in(group, filler, tmp_path / "bloat.out")]
    try:
        deadline = time.monotonic() + 120
        while (
            "started" not in out.read_text()
            or '"start"' not in (tmp_path / "bloat.out").read_text()
        ):
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        watch = ["watch", str(group), "--warning", "50", "--critical", "80"]
        log = open(tmp_path / "oomhero.log", "w")
        processes.append(subprocess.Popen([sys.executable, "-m", "oomhero", *watch], stderr=log))
        deadline = time.monotonic() + 180
        while CRITICAL_LINE not in out.read_text():
            assert processes[0].poll() is None, out.read_text()
            assert time.monotonic() < deadline, (
                out.read_text(),
                (tmp_path / "oomhero.log").read_text(),
            )
            time.sleep(0.2)
        lines = out.read_text().splitlines()
        warning = next(i for i, line in enumerate(lines) if line.startswith(WARNING_LINE))
        assert lines.index(CRITICAL_LINE) > warning, lines
        events = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
        assert events["oom_kill"] == "0", events
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
        group.rmdir()
