"""What every part of the benchmark uses, inside the guest: cgroups made and removed, processes
started in them, CPU read from a cgroup's cpu.stat, oomhero's JSON log read back."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MIB = 1 << 20
CGROOT = Path("/sys/fs/cgroup")
BASE = CGROOT / "oomhero-bench"
WORK = Path("/tmp/oomhero-bench")  # the guest's tmpfs: fast, and gone after the boot
SNAPSHOT = WORK / "snapshot"  # a copy of oomhero/ taken at start: edits made meanwhile stay out
ALLOC_SRC = BENCH / "alloc.c"
ALLOC = BENCH / ".build" / "alloc"
WARNING, CRITICAL = 75, 90


def write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def read_jsonl(path: Path) -> list[dict]:
    """JSON lines; any other line (a traceback, say) comes back as {"raw": line}."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append({"raw": line})
    return records


def make_cgroup(name: str, limit: int | None = None, parent: Path = BASE) -> Path:
    """A cgroup under ``parent`` (memory.max ``limit``, no swap), its children may limit
    memory too."""
    path = parent / name
    path.mkdir()
    if limit is not None:
        write(path / "memory.max", str(limit))
        if (path / "memory.swap.max").exists():
            write(path / "memory.swap.max", "0")
    return path


def members(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def kill_members(path: Path, sig: int = signal.SIGKILL, timeout: float = 20) -> None:
    """Signal every process of the cgroup until it is empty (``sig`` first, SIGKILL after
    ``timeout``)."""
    start = time.monotonic()
    while pids := members(path):
        late = time.monotonic() - start > timeout
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if late else sig)
        time.sleep(0.02)


def remove_tree(path: Path) -> None:
    """Empty and remove a cgroup and every cgroup below it."""
    if not path.exists():
        return
    for child in [p for p in path.iterdir() if p.is_dir()]:
        remove_tree(child)
    kill_members(path)
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def memory_events(path: Path) -> dict[str, int]:
    lines = (path / "memory.events").read_text().splitlines()
    return {k: int(v) for k, v in (line.split() for line in lines)}


def cpu_usage_s(path: Path) -> float:
    """CPU time of every process the cgroup has had (cpu.stat's usage_usec), seconds."""
    for line in (path / "cpu.stat").read_text().splitlines():
        key, value = line.split()
        if key == "usage_usec":
            return int(value) / 1e6
    raise ValueError(f"no usage_usec in {path}/cpu.stat")


def spawn_in(path: Path, argv: list[str], **popen: object) -> subprocess.Popen:
    """Start argv inside the cgroup: it joins between fork and exec."""
    procs = str(path / "cgroup.procs")
    return subprocess.Popen(argv, preexec_fn=lambda: write(Path(procs), "0"), **popen)


def wait_exit(process: subprocess.Popen, timeout: float) -> int | None:
    """Monotonic ns at which the process ended (pidfd: no polling delay), or None on timeout."""
    fd = os.pidfd_open(process.pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return time.monotonic_ns() if ready else None
    finally:
        os.close(fd)


def oomhero_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "oomhero", *args]


def oomhero_tree() -> Path:
    """Where the oomhero to run is: the snapshot taken at start, else the repository."""
    return SNAPSHOT if SNAPSHOT.exists() else REPO


def oomhero_env(attach: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of an oomhero under test: the snapshot first on the path, and
    OOMHERO_BPF_ATTACH only as the mode says."""
    env = {**os.environ, "PYTHONPATH": str(oomhero_tree()), **extra}
    env.pop("OOMHERO_BPF_ATTACH", None)
    return env | ({"OOMHERO_BPF_ATTACH": attach} if attach else {})


def build_alloc() -> None:
    """Compile the workload if it is missing or older than its source (make bench does it on
    the host; gcc in the guest is the host's, so this works in either place)."""
    if ALLOC.exists() and ALLOC.stat().st_mtime >= ALLOC_SRC.stat().st_mtime:
        return
    ALLOC.parent.mkdir(exist_ok=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(ALLOC), str(ALLOC_SRC)], check=True)


def alloc_argv(
    usage_file: str, limit: int, rate: str, chunk: int, out: Path, stop: int = 0
) -> list[str]:
    """bench/alloc's command line (see alloc.c); rate "max": unpaced."""
    argv = [str(ALLOC), usage_file, str(limit), "0" if rate == "max" else rate, str(chunk)]
    argv += [str(out), str(WARNING), str(CRITICAL)]
    return argv + ([str(stop)] if stop else [])


def chunk_for(rate: str) -> int:
    """Touch granularity: ~4 ms of allocation per chunk (finer timing at low rates), between
    64 KiB and 1 MiB; 256 KiB when unpaced."""
    if rate == "max":
        return 256 * 1024
    return max(64 * 1024, min(MIB, int(float(rate) * MIB / 256)))


def parse_alloc(path: Path) -> dict:
    """alloc's lines (see alloc.c) → start, crossings, first handler run per signal, last tick."""
    out: dict = {"cross": {}, "handled": {}, "ticks": 0, "nokill": False}
    for line in path.read_text().splitlines() if path.exists() else []:
        word, *rest = line.split()
        if word == "start":
            out["start_ns"], out["pid"], out["start_usage"] = map(int, rest[:3])
        elif word == "tick":
            out["ticks"] += 1
            out["last_tick_ns"], out["last_tick_usage"] = int(rest[0]), int(rest[1])
        elif word == "cross":
            t_lo, u_lo, t_hi, u_hi = map(int, rest[1:])
            out["cross"][rest[0]] = {"t_lo": t_lo, "u_lo": u_lo, "t_hi": t_hi, "u_hi": u_hi}
        elif word == "sig":
            level = "warning" if rest[0] == "USR1" else "critical"
            if level not in out["handled"]:
                out["handled"][level] = {"t_ns": int(rest[1]), "usage": int(rest[2])}
        elif word == "nokill":
            out["nokill"] = True
        elif word == "done":
            out["done_ns"], out["done_usage"], out["done_touched"] = map(int, rest[:3])
    return out
