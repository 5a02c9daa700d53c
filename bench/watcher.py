"""oomhero as the benchmark runs it: in a cgroup of its own (its CPU read from that cgroup's
cpu.stat, in microseconds, not the 10 ms ticks of /proc/PID/stat), logging JSON lines to a file.
Two deployments: ``watch`` (``oomhero watch CGROUP...``, as one runs it by hand) and
``sidecar`` (``oomhero`` with no command, inside a pod: pod.py; what users run)."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kit import (
    CRITICAL,
    WARNING,
    cpu_usage_s,
    kill_members,
    make_cgroup,
    members,
    oomhero_argv,
    oomhero_env,
    oomhero_tree,
    read_jsonl,
    remove_tree,
    spawn_in,
)

COMMON = ("--warning", str(WARNING), "--critical", str(CRITICAL), "--cooldown", "0")
COMMON += ("--log-format", "json")
PROBE_TIMEOUT = 600.0  # s: bcc compiles 20-30 s under TCG, more on a busy host


@dataclass(frozen=True)
class Mode:
    """One configuration of oomhero: its flags, and OOMHERO_BPF_ATTACH for a probe mode."""

    name: str
    args: tuple[str, ...]
    attach: str | None = None  # fentry, kprobe (CO-RE) or bcc: the mode loads the probe

    @property
    def probe(self) -> bool:
        return self.attach is not None

    @property
    def compiles(self) -> bool:
        """bcc compiles at start (20-30 s under TCG): one oomhero for a whole block of runs."""
        return self.attach == "bcc"


class Watcher:
    """One oomhero process (its cgroup's only member) and its log."""

    def __init__(self, cgroup: Path, log: Path, process: subprocess.Popen) -> None:
        self.cgroup, self.log, self.process = cgroup, log, process
        self.ready_record: dict = {}

    def records(self, since: int = 0) -> list[dict]:
        return read_jsonl(self.log)[since:]

    def watching(self) -> int:
        return sum(r.get("msg") == "watching target" for r in self.records())

    def alive(self) -> bool:
        return bool(members(self.cgroup))

    def wait_ready(self, targets: int, probe: bool, timeout: float = 120) -> float:
        """Seconds until it logged "watching target" ``targets`` times in all and, with the
        ``probe``, "source ready" for ebpf ("source unavailable" fails with its reason)."""
        start = time.monotonic()
        timeout = max(timeout, PROBE_TIMEOUT if probe else 0)
        while time.monotonic() - start < timeout:
            records = self.records()
            watching = sum(r.get("msg") == "watching target" for r in records) >= targets
            ready = not probe
            for r in records:
                if probe and r.get("source") == "ebpf":
                    if r.get("msg") in ("source unavailable", "source failed"):
                        raise RuntimeError(f"{r['msg']}: ebpf: {r.get('why')}")
                    if r.get("msg") == "source ready":
                        ready, self.ready_record = True, r
            if watching and ready:
                return time.monotonic() - start
            if not self.alive():
                raise RuntimeError(f"oomhero exited: {records[-20:]}")
            time.sleep(0.02)
        raise RuntimeError(f"oomhero not ready after {timeout:.0f}s: {self.records()[-20:]}")

    def cpu_s(self) -> float:
        return cpu_usage_s(self.cgroup)

    def rss_mib(self) -> float:
        (pid,) = members(self.cgroup)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise ValueError(f"no VmRSS for pid {pid}")

    def stop(self) -> list[dict]:
        """SIGTERM (SIGKILL after 20 s), then the log; the cgroup goes."""
        kill_members(self.cgroup, signal.SIGTERM)
        if self.process.poll() is None:
            self.process.wait(timeout=20)
        remove_tree(self.cgroup)
        return self.records()


def start_watch(mode: Mode, targets: list[Path], log: Path, name: str) -> Watcher:
    """``oomhero watch TARGETS`` in a cgroup of its own under the bench's."""
    cgroup = make_cgroup(f"oomhero-{name}")
    argv = oomhero_argv("watch", *map(str, targets), *COMMON, *mode.args)
    with open(log, "w") as out:
        # `python -m` puts the working directory first on sys.path: run in the tree.
        process = spawn_in(
            cgroup,
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=oomhero_env(mode.attach),
            cwd=oomhero_tree(),
        )
    return Watcher(cgroup, log, process)
