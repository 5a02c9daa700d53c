"""Shared helpers for the host tests: waiting, a signal-recording child, running the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIB = 1024**2
V1_UNLIMITED = "9223372036854771712"  # PAGE_COUNTER_MAX pages as v1 prints it on x86-64

# The child that records every signal it handles, one name per line, in the file argv[1].
# SIGWINCH is the "fence": it is numbered above SIGUSR1/SIGUSR2, and pending standard signals are
# handled lowest number first, so once SIGWINCH is recorded every signal sent before it is too.
# With argv[2] "late" it installs its handlers only once a line arrives on stdin (an app still
# starting up: SIGUSR1/SIGUSR2 would terminate it until then).
RECORDER = """
import signal, sys, time
out = sys.argv[1]
def handler(signum, frame):
    with open(out, "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
if sys.argv[2:] == ["late"]:
    print("starting", flush=True)
    sys.stdin.readline()
for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
    signal.signal(s, handler)
print("ready", flush=True)
while True:
    time.sleep(60)
"""
FENCE = signal.SIGWINCH


def tail(path: Path, lines: int = 40, most: int = 8 << 10) -> str:
    """The last ``lines`` lines of a log (at most ``most`` bytes of its end), for a failure's
    report: a CI run's output alone then explains it."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - most))
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])


def wait_until(
    predicate: Callable[[], object],
    what: str,
    timeout: float = 15.0,
    step: float = 0.01,
    explain: Callable[[], str] | None = None,
) -> object:
    """Poll until predicate() is truthy: a deadline against hangs, never a measure of time.
    ``explain()`` adds the state of things to the failure (what a CI log needs to explain it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{said}")
        time.sleep(step)


def received(pid: int, path: Path) -> list[str]:
    """Every signal the recorder ``pid`` wrote to ``path`` so far, after a fence: no signal sent
    before this call is missed. (Equal signals sent without a fence between them may merge.)"""

    def lines() -> list[str]:
        return path.read_text().split()

    fences = lines().count(FENCE.name)
    os.kill(pid, FENCE)
    wait_until(lambda: lines().count(FENCE.name) > fences, "the fence signal")
    return [name for name in lines() if name != FENCE.name]


class Recorder:
    """A live child process that records the signals it receives."""

    def __init__(self, tmp_path: Path, name: str = "recorder", late: bool = False) -> None:
        """``late``: the handlers are not installed until install()."""
        self.path = tmp_path / f"{name}.signals"
        self.path.touch()
        self.process = subprocess.Popen(
            [sys.executable, "-c", RECORDER, str(self.path), *(["late"] if late else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == ("starting" if late else "ready")

    def install(self) -> None:
        self.process.stdin.write("install\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def received(self) -> list[str]:
        return received(self.pid, self.path)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        self.process.stdin.close()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any oomhero setting, plus ``extra``."""
    settings = {"WARNING", "CRITICAL", "COOLDOWN", "WARNING_SIGNAL", "CRITICAL_SIGNAL"}
    env = {
        k: v for k, v in os.environ.items() if k not in settings and not k.startswith("OOMHERO_")
    }
    env.update(extra)
    return env


# The oomhero CLI, and the same taking synthetic trees under the temp dir for cgroupfs.
CLI = (sys.executable, "-m", "oomhero")
SYNTHETIC_CLI = (sys.executable, "-m", "tests.synthetic_cgroupfs")


def run_cli(
    *args: str, timeout: float = 60, synthetic: bool = False, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(SYNTHETIC_CLI if synthetic else CLI), *args],
        env=clean_env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def stat_line(pid=1234, comm="my (weird) app", ppid=1, flags=4194560, starttime=98765):
    """A /proc/<pid>/stat line with all 52 fields (proc(5)), the given ones in place."""
    fields = [str(pid), f"({comm})", "S"] + [str(n) for n in range(4, 53)]
    fields[4 - 1] = str(ppid)
    fields[9 - 1] = str(flags)
    fields[22 - 1] = str(starttime)
    assert len(fields) == 52
    return " ".join(fields) + "\n"


def _memory_controller_on_v1() -> bool:
    """True when /proc/cgroups shows the memory controller bound to a v1 hierarchy: then no cgroup
    v2 group can get it, and ``oomhero run`` / ``demo`` fall back to a soft limit, creating no
    cgroup. Read from /proc only, never from /sys/fs/cgroup."""
    try:
        with open("/proc/cgroups") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] == "memory":
                    return int(fields[1]) != 0 and fields[3] == "1"
    except (OSError, IndexError, ValueError):
        pass
    return False


# For ``run`` and ``demo``: elsewhere they would create a cgroup under /sys/fs/cgroup.
soft_limit_only = pytest.mark.skipif(
    not _memory_controller_on_v1(),
    reason="oomhero run would create a cgroup v2 group on this machine: guest tests cover it",
)


# -- synthetic cgroup directories (for parsing only) ----------------------------------------------
def write_files(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def v2_dir(directory, pids=(), current=96 * MIB, limit=str(128 * MIB), inactive=16 * MIB):
    return write_files(
        directory,
        {
            "memory.current": f"{current}\n",
            "memory.max": f"{limit}\n",
            "memory.stat": f"anon 1000\nfile 2000\ninactive_file {inactive}\nactive_file 5\n",
            "memory.events": "low 0\nhigh 3\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n",
            "memory.pressure": (
                "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n"
                "full avg10=0.75 avg60=0.00 avg300=0.00 total=678\n"
            ),
            "cgroup.procs": "".join(f"{pid}\n" for pid in pids),
        },
    )


def v1_dir(directory, pids=(), current=200 * MIB, hierarchical=64 * MIB):
    return write_files(
        directory,
        {
            "memory.usage_in_bytes": f"{current}\n",
            "memory.limit_in_bytes": f"{V1_UNLIMITED}\n",
            "memory.stat": (
                "cache 100\nrss 200\ninactive_file 4096\n"
                f"hierarchical_memory_limit {hierarchical}\n"
                f"total_inactive_file {50 * MIB}\ntotal_rss 300\n"
            ),
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 1\noom_kill 4\n",
            "memory.failcnt": "17\n",
            "cgroup.procs": "".join(f"{pid}\n" for pid in pids),
        },
    )


def sample_all(engine, source: str) -> None:
    """Sample every target of ``engine`` now, as if ``source`` had woken the loop for each."""
    from oomhero.sources.base import Wake

    now, wake = engine.clock(), Wake(set(), source)
    for target in list(engine.targets.values()):
        engine.sample_target(target, now, wake)
