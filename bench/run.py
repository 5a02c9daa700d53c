"""The latency/overhead benchmark driver. Runs inside the qemu guest (cgroup v2), as root:

    guest/run --timeout 4500 -- .venv/bin/python bench/run.py            # full, ~40 min
    guest/run -- .venv/bin/python bench/run.py --quick                   # a few minutes
    guest/run -- .venv/bin/python bench/run.py --modes poll-1s,poll-100ms --rates 64 --runs 2

Latency: per mode, rate and run, a fresh 256 MiB cgroup, a fresh ``oomhero watch`` on it, and
bench/alloc (C) filling it at the rate until the OOM killer ends it. The eBPF modes compile their
probe at start (20-30 s under TCG), so each keeps ONE cgroup and ONE ``oomhero watch`` for all
its runs, in a block of its own (only one probe is ever attached). alloc records, on
CLOCK_MONOTONIC, when its cgroup's usage crossed 75 % and 90 % and when its SIGUSR1/SIGUSR2
handlers ran. Probe cost: alloc's unpaced throughput into a 512 MiB cgroup (256 MiB, no OOM)
without oomhero, with `--sources none`, with `--sources ebpf`. Overhead: oomhero's CPU and RSS
while watching 1, 10, 100 idle cgroups.

Writes raw samples and the summary (report.summarise) to JSON; bench/report.py renders them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]
# bench/ is not a package (report.py sits next to this file); the guest tests' kit is shared.
import report  # noqa: E402

from tests.conftest import guest_version  # noqa: E402
from tests.real_kernel.kit.guest import read_jsonl  # noqa: E402

MIB = 1 << 20
ALLOC_SRC = BENCH / "alloc.c"
ALLOC = BENCH / ".build" / "alloc"
CGROOT = Path("/sys/fs/cgroup")
BASE = CGROOT / "oomhero-bench"
WORK = Path("/tmp/oomhero-bench")  # the guest's tmpfs: fast, and gone after the boot
WARNING, CRITICAL = 75, 90
COMMON = ["--warning", str(WARNING), "--critical", str(CRITICAL), "--cooldown", "0"]
COMMON += ["--log-format", "json"]
CAPTURE = {"capture_output": True, "text": True}


@dataclass(frozen=True)
class Mode:
    name: str
    args: tuple[str, ...]
    needs: tuple[str, ...] = ()  # watch flags that must exist for the mode to mean anything
    probe: bool = False  # loads the eBPF probe: one watcher and cgroup for all its runs
    overhead: bool = True  # part of the idle-overhead measurement
    attach: str | None = None  # OOMHERO_BPF_ATTACH for a probe mode: fentry, kprobe or bcc
    before: bool = False  # runs oomhero as of BEFORE_COMMIT, not this tree


ADAPTIVE = ("--sources", "--poll-floor")
EBPF = (*ADAPTIVE, "--bpf-signal")


# The oomhero the issue-10 bars compare against (its default then: adaptive polling with the
# burst assumption, inotify and PSI; no probe by default), run from a copy of that commit.
BEFORE_COMMIT = "5120382"
POLL_1S = ("--interval", "1s", "--sources", "none")
# One line per configuration. `--sources none` is dropped where the flag does not exist yet:
# without event sources it changes nothing.
MODES = [
    Mode("before", (), needs=ADAPTIVE, before=True),
    Mode("before-poll-1s", POLL_1S, before=True),
    Mode("poll-1s", POLL_1S),
    Mode("poll-100ms", ("--interval", "100ms", "--sources", "none")),
    Mode("adaptive", ("--sources", "none"), needs=ADAPTIVE),
    # The default where the probe cannot load (the restricted sidecar): named, since where it
    # can (root in the guest) the default loads it.
    Mode("events", ("--sources", "inotify,psi"), needs=ADAPTIVE),
    Mode("core-fentry", ("--sources", "ebpf"), needs=EBPF, probe=True, attach="fentry"),
    Mode("core-kprobe", ("--sources", "ebpf"), needs=EBPF, probe=True, attach="kprobe"),
    Mode("ebpf", ("--sources", "ebpf"), needs=EBPF, probe=True, attach="bcc"),
    # Idle, it is `ebpf` to the byte: no second compile in the overhead part.
    Mode(
        "ebpf-signal",
        ("--sources", "ebpf", "--bpf-signal"),
        needs=EBPF,
        probe=True,
        overhead=False,
        attach="bcc",
    ),
]
PROBE_TIMEOUT = 600.0  # s: the probe's compile takes 20-30 s under TCG, more on a busy host
# Probe cost: alloc unpaced into a cgroup this big, COST_ALLOC MiB per repeat (never near OOM).
COST_LIMIT, COST_ALLOC = 512, 256
COST_CONFIGS = [  # (name, oomhero watch args or None: no oomhero, OOMHERO_BPF_ATTACH)
    ("none", None, None),
    ("adaptive", ("--sources", "none"), None),
    ("fentry", ("--sources", "ebpf"), "fentry"),
    ("kprobe", ("--sources", "ebpf"), "kprobe"),
    ("bcc", ("--sources", "ebpf"), "bcc"),
    ("none", None, None),  # again: drift over the measurement shows as a before/after difference
]
# After oomhero is ready, the workload waits SETTLE (start-up over, adaptive polling backed off to
# its ceiling) plus a random phase in [0, PHASE): started at a fixed delay after oomhero's first
# sample, every run would hit the same point of a 1 s poll cycle and poll-1s would look
# deterministic. One phase per run and rate, shared by the modes: a paired comparison.
SETTLE, PHASE = 1.0, 1.0
RATES = ["16", "64", "256", "1024", "max"]  # MiB/s; max: as fast as alloc can touch pages
QUICK_RATES = ["64", "max"]


def write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


SNAPSHOT = WORK / "snapshot"  # a copy of oomhero/ taken at start: edits made meanwhile stay out
BEFORE = WORK / "before"  # oomhero/ and bpf/ of BEFORE_COMMIT (git archive; same dependencies)


def oomhero_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "oomhero", *args]


def oomhero_tree(before: bool = False) -> Path:
    """Where the oomhero to run is: the snapshot (or the repo), or the copy of BEFORE_COMMIT."""
    if before:
        return BEFORE
    return SNAPSHOT if SNAPSHOT.exists() else REPO


def oomhero_env(before: bool = False, attach: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(oomhero_tree(before))}
    env.pop("OOMHERO_BPF_ATTACH", None)
    return env | ({"OOMHERO_BPF_ATTACH": attach} if attach else {})


def extract_before() -> None:
    """BEFORE_COMMIT's package and probe source, from git (no work tree, no venv: its
    dependencies are this tree's, see pyproject.toml)."""
    BEFORE.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", BEFORE_COMMIT, "oomhero", "bpf"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(BEFORE)], input=archive.stdout, check=True)


def snapshot_oomhero() -> str:
    """Copy the package (and bpf/, the probe's source, which oomhero/ebpf.py reads from next to
    the package) to the guest's tmpfs; return a digest of what was copied."""
    shutil.copytree(
        REPO / "oomhero", SNAPSHOT / "oomhero", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "bpf", SNAPSHOT / "bpf")
    digest = hashlib.sha256()
    for path in sorted([*(SNAPSHOT / "oomhero").rglob("*.py"), *(SNAPSHOT / "bpf").rglob("*.c")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def watch_flags() -> set[str]:
    """The long flags `oomhero watch` knows today (other work adds some while this exists)."""
    argv = oomhero_cmd("watch", "--help")
    help_ = subprocess.run(argv, env=oomhero_env(), cwd=oomhero_tree(), **CAPTURE)
    out = help_.stdout
    return {word.rstrip(",") for word in out.split() if word.startswith("--")}


def mode_argv(mode: Mode, flags: set[str]) -> list[str]:
    args = list(mode.args)
    if "--sources" not in flags and "--sources" in args:
        i = args.index("--sources")
        del args[i : i + 2]
    return args


def build_alloc() -> None:
    """Compile the workload if it is missing or older than its source (make bench does it on
    the host; gcc in the guest is the host's, so this works in either place)."""
    if ALLOC.exists() and ALLOC.stat().st_mtime >= ALLOC_SRC.stat().st_mtime:
        return
    ALLOC.parent.mkdir(exist_ok=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(ALLOC), str(ALLOC_SRC)], check=True)


# -- cgroups ---------------------------------------------------------------------------------


def make_cgroup(name: str, limit: int) -> Path:
    path = BASE / name
    path.mkdir()
    write(path / "memory.max", str(limit))
    if (path / "memory.swap.max").exists():
        write(path / "memory.swap.max", "0")
    return path


def kill_members(path: Path) -> None:
    for _ in range(100):
        pids = (path / "cgroup.procs").read_text().split()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.02)


def kill_and_remove(path: Path) -> None:
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


def spawn_in(path: Path, argv: list[str], **popen: object) -> subprocess.Popen:
    """Start argv inside the cgroup: it joins between fork and exec."""
    procs = str(path / "cgroup.procs")
    return subprocess.Popen(argv, preexec_fn=lambda: write(Path(procs), "0"), **popen)


# -- oomhero ---------------------------------------------------------------------------------


class Watcher:
    """One `oomhero watch` process logging JSON lines to a file."""

    def __init__(
        self,
        targets: list[Path],
        args: list[str],
        log: Path,
        before: bool = False,
        attach: str | None = None,
    ) -> None:
        """``before``: BEFORE_COMMIT's oomhero; ``attach``: OOMHERO_BPF_ATTACH for the probe."""
        self.log = log
        self.count = len(targets)
        argv = oomhero_cmd("watch", *map(str, targets), *COMMON, *args)
        tree, env = oomhero_tree(before), oomhero_env(before, attach)
        with open(log, "w") as f:
            # `python -m` puts the working directory first on sys.path: run in the tree.
            self.process = subprocess.Popen(
                argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=tree
            )

    @classmethod
    def of(cls, mode: Mode, flags: set[str], targets: list[Path], log: Path) -> Watcher:
        return cls(targets, mode_argv(mode, flags), log, mode.before, mode.attach)

    def wait_ready(self, timeout: float = 120, source: str | None = None) -> float:
        """Seconds until it logged "watching target" for every target and, given a source,
        "source ready" for it (the eBPF probe: compiled and attached). "source unavailable"
        for that source fails with its reason."""
        start = time.monotonic()
        self.ready_record: dict = {}
        while time.monotonic() - start < timeout:
            records = read_jsonl(self.log)
            watching = sum(r.get("msg") == "watching target" for r in records) >= self.count
            ready = source is None
            for r in records:
                if source is not None and r.get("source") == source:
                    if r.get("msg") == "source unavailable":
                        raise RuntimeError(f"source unavailable: {source}: {r.get('why')}")
                    if r.get("msg") == "source ready":
                        ready, self.ready_record = True, r
            if watching and ready:
                return time.monotonic() - start
            if self.process.poll() is not None:
                raise RuntimeError(f"oomhero exited {self.process.returncode}: {records}")
            time.sleep(0.02 if source is None else 0.2)
        raise RuntimeError(f"oomhero not ready after {timeout}s: {read_jsonl(self.log)}")

    def level(self) -> str:
        """The policy level it last logged for its (single) target: ok, warning or critical."""
        level = "ok"
        for r in read_jsonl(self.log):
            msg = r.get("msg", "")
            if msg.startswith(("rose to ", "fell to ")):
                level = msg.split()[2]
        return level

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def rss_mib(self) -> dict[str, float]:
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        kib = {k: int(v.split()[0]) for k, v in (s.split(":", 1) for s in status) if k[:2] == "Vm"}
        return {"rss": kib["VmRSS"] / 1024, "hwm": kib["VmHWM"] / 1024}

    def stop(self) -> list[dict]:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return read_jsonl(self.log)


# -- one latency run -------------------------------------------------------------------------


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


def crossing_ns(cross: dict, threshold: int) -> float:
    """When usage crossed the threshold: linear between the last reading below it (taken just
    before the chunk was touched) and the first at or above it."""
    t_lo, u_lo, t_hi, u_hi = cross["t_lo"], cross["u_lo"], cross["t_hi"], cross["u_hi"]
    if u_hi <= u_lo:
        return float(t_hi)
    return t_lo + (threshold - u_lo) / (u_hi - u_lo) * (t_hi - t_lo)


def wait_exit(process: subprocess.Popen, timeout: float) -> int | None:
    """Monotonic ns at which the process ended (pidfd: no polling delay), or None on timeout."""
    fd = os.pidfd_open(process.pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return time.monotonic_ns() if ready else None
    finally:
        os.close(fd)


@dataclass
class Shared:
    """One cgroup and one `oomhero watch` for every run of a probe mode: the probe compiles
    once. It is keyed by cgroup id (the directory's inode), so the cgroup stays too; between
    runs it is emptied (the OOM killer did that) and oomhero has fallen back to ok."""

    mode: Mode
    cgroup: Path
    watcher: Watcher
    ready_s: float

    @classmethod
    def start(cls, mode: Mode, flags: set[str], limit: int) -> Shared:
        cgroup = make_cgroup(f"lat-{mode.name}", limit)
        watcher = Watcher.of(mode, flags, [cgroup], WORK / f"{mode.name}.oomhero")
        try:
            ready = watcher.wait_ready(PROBE_TIMEOUT, source="ebpf")
        except BaseException:
            watcher.stop()
            kill_and_remove(cgroup)
            raise
        print(
            f"{mode.name}: probe ready after {ready:.1f}s "
            f"(compile {watcher.ready_record.get('load_seconds')}s)",
            flush=True,
        )
        return cls(mode, cgroup, watcher, ready)

    def describe(self) -> dict:
        return {
            "ready_s": round(self.ready_s, 3),
            "compile_s": self.watcher.ready_record.get("load_seconds"),
            "probe": self.watcher.ready_record.get("function"),
            "loader": self.watcher.ready_record.get("loader"),
            "attach": self.watcher.ready_record.get("attach"),
        }

    def wait_idle(self, limit: int, timeout: float = 60) -> float:
        """Seconds until the cgroup is empty, its usage far below warning, and oomhero back at
        ok (so the probe's thresholds are re-armed): the state a fresh watcher starts in."""
        start = time.monotonic()
        kill_members(self.cgroup)
        while time.monotonic() - start < timeout:
            if self.watcher.process.poll() is not None:
                raise RuntimeError(f"oomhero exited {self.watcher.process.returncode}")
            usage = int((self.cgroup / "memory.current").read_text())
            if usage < limit // 2 and self.watcher.level() == "ok":
                return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError(f"{self.mode.name}: oomhero not back at ok after {timeout}s")

    def close(self) -> None:
        self.watcher.stop()
        kill_and_remove(self.cgroup)


def latency_run(
    mode: Mode,
    flags: set[str],
    rate: str,
    run: int,
    limit: int,
    seq: int,
    phase: float,
    shared: Shared | None = None,
) -> dict:
    name = f"{mode.name}-{rate}-{run}"
    out = WORK / f"{name}.alloc"
    record: dict = {"mode": mode.name, "rate": rate, "run": run, "chunk": chunk_for(rate)}
    record["phase_s"] = round(phase, 3)
    if shared is None:
        cgroup = make_cgroup(f"lat{seq}", limit)
        watcher = Watcher.of(mode, flags, [cgroup], WORK / f"{name}.oomhero")
        first = 0
    else:
        cgroup, watcher = shared.cgroup, shared.watcher
        record["shared_watcher"] = True
        record["oomhero_idle_wait_s"] = round(shared.wait_idle(limit), 3)
        first = len(read_jsonl(watcher.log))  # this run's log records start here
    try:
        if shared is None:
            record["oomhero_ready_s"] = round(watcher.wait_ready(), 3)
        time.sleep(SETTLE + phase)
        if shared is not None and watcher.level() != "ok":  # a late sample of the last run
            shared.wait_idle(limit)
        events0 = memory_events(cgroup)
        cpu0, t0 = watcher.cpu_seconds(), time.monotonic()
        rate_arg = "0" if rate == "max" else rate
        argv = [str(ALLOC), str(cgroup / "memory.current"), str(limit), rate_arg]
        argv += [str(record["chunk"]), str(out), str(WARNING), str(CRITICAL)]
        alloc = spawn_in(cgroup, argv)
        expected = limit / MIB / (float(rate) if rate != "max" else 256)
        died_ns = wait_exit(alloc, timeout=3 * expected + 30)
        if died_ns is None:
            alloc.kill()
        record["exit"] = alloc.wait()
        record["timed_out"] = died_ns is None
        record["died_ns"] = died_ns
        record["oomhero_cpu_s"] = round(watcher.cpu_seconds() - cpu0, 3)
        record["oomhero_busy_s"] = round(time.monotonic() - t0, 3)
        # This run's events (the shared cgroup's counters run on across runs).
        events = memory_events(cgroup)
        record["memory_events"] = {k: v - events0.get(k, 0) for k, v in events.items()}
    finally:
        if shared is None:
            logs = watcher.stop()
            record["oomhero_exit"] = watcher.process.returncode
            kill_and_remove(cgroup)
    if shared is not None:
        # Everything this run made oomhero say is logged by the time it is back at ok.
        record["oomhero_back_to_ok_s"] = round(shared.wait_idle(limit), 3)
        logs = read_jsonl(watcher.log)[first:]
    record["oomhero_signals"] = [
        {k: r.get(k) for k in ("signal", "percent", "source", "usage_mib", "time")}
        | {"where": "kernel" if r["msg"] == "signal sent in the kernel" else "user"}
        | {k: r[k] for k in ("since_charge_ms", "probe_percent") if k in r}
        for r in logs
        if r.get("msg") in ("signal sent", "signal sent in the kernel")
    ]
    # What oomhero decided and whom it could signal (the target's processes are learnt by the
    # rescan, once a second: a crossing before that finds "no process to signal").
    record["oomhero_log"] = [
        {k: r.get(k) for k in ("time", "msg", "source", "percent", "since_charge_ms") if k in r}
        for r in logs
        if r.get("msg", "").startswith(("rose to ", "fell to ", "no process", "oom kill"))
    ]
    record["oomhero_problems"] = [r for r in logs if r.get("level") in ("error", "critical")]
    record["oomhero_problems"] += [r for r in logs if "raw" in r][:20]
    alloc_out = parse_alloc(out)
    record.update(alloc=alloc_out)
    for level, pct in (("warning", WARNING), ("critical", CRITICAL)):
        cross = alloc_out["cross"].get(level)
        handled = alloc_out["handled"].get(level)
        t_cross = crossing_ns(cross, limit * pct // 100) if cross else None
        record[f"{level}_cross_ns"] = t_cross
        record[f"{level}_latency_ms"] = (
            (handled["t_ns"] - t_cross) / 1e6 if handled and t_cross is not None else None
        )
        record[f"{level}_handled_pct"] = (
            round(handled["usage"] * 100 / limit, 2) if handled else None
        )
    crit = alloc_out["cross"].get("critical")
    if crit and "start_ns" in alloc_out and crit["t_hi"] > alloc_out["start_ns"]:
        grown = crit["u_hi"] - alloc_out["start_usage"]
        record["achieved_mibps"] = grown / MIB / ((crit["t_hi"] - alloc_out["start_ns"]) / 1e9)
    if died_ns is not None and record["critical_cross_ns"] is not None:
        record["critical_to_death_ms"] = (died_ns - record["critical_cross_ns"]) / 1e6
    record["caught"] = all(level in alloc_out["handled"] for level in ("warning", "critical"))
    return record


def describe(r: dict) -> str:
    def ms(v: float | None) -> str:
        return "miss" if v is None else f"{v:.0f}ms"

    if "error" in r:
        return f"{r['mode']:>11} {r['rate']:>4} MiB/s run {r['run']}: ERROR {r['error']}"[:400]
    rate = r.get("achieved_mibps")
    return (
        f"{r['mode']:>11} {r['rate']:>4} MiB/s run {r['run']}: achieved "
        f"{rate and round(rate)} MiB/s, warning {ms(r['warning_latency_ms'])}, critical "
        f"{ms(r['critical_latency_ms'])}, exit {r['exit']}, oom_kill "
        f"{r['memory_events'].get('oom_kill')}, crit→death {ms(r.get('critical_to_death_ms'))}"
    )


# -- probe cost ------------------------------------------------------------------------------


def alloc_throughput(cgroup: Path, limit: int, stop: int, out: Path) -> dict:
    """One unpaced alloc of `stop` bytes into the cgroup (never near its limit): MiB/s."""
    argv = [str(ALLOC), str(cgroup / "memory.current"), str(limit), "0", str(chunk_for("max"))]
    argv += [str(out), str(WARNING), str(CRITICAL), str(stop)]
    alloc = spawn_in(cgroup, argv)
    if wait_exit(alloc, timeout=300) is None:
        alloc.kill()
    code = alloc.wait()
    parsed = parse_alloc(out)
    if code != 0 or "done_ns" not in parsed:
        return {"error": f"alloc exited {code}", "memory_events": memory_events(cgroup)}
    seconds = (parsed["done_ns"] - parsed["start_ns"]) / 1e9
    return {"mibps": parsed["done_touched"] / MIB / seconds, "seconds": seconds}


def probe_cost(flags: set[str], repeats: int) -> dict:
    """The workload's unpaced allocation throughput without oomhero, with oomhero polling only,
    and with the probe attached and watching its cgroup (thresholds far above: every charge is
    checked, none crosses). Blocks in COST_CONFIGS order; each block `repeats` allocs."""
    limit, stop = COST_LIMIT * MIB, COST_ALLOC * MIB
    result: dict = {"limit_mib": COST_LIMIT, "alloc_mib": COST_ALLOC, "repeats": repeats}
    result |= {"chunk": chunk_for("max"), "samples": [], "watchers": {}}
    result["order"] = [config for config, _, _ in COST_CONFIGS]
    cgroup = make_cgroup("cost", limit)
    try:
        for block, (config, args, attach) in enumerate(COST_CONFIGS):
            watcher = None
            if args is not None:
                log = WORK / f"cost-{config}.oomhero"
                watcher = Watcher([cgroup], [*args], log, attach=attach)
                try:
                    if "ebpf" in args:
                        ready = watcher.wait_ready(PROBE_TIMEOUT, source="ebpf")
                    else:
                        ready = watcher.wait_ready()
                except RuntimeError as exc:
                    watcher.stop()
                    result["watchers"][config] = {"error": str(exc)[-2000:]}
                    print(f"probe cost {config}: ERROR {exc}"[:400], flush=True)
                    continue
                result["watchers"][config] = {"ready_s": round(ready, 3)}
                result["watchers"][config] |= {
                    k: watcher.ready_record[k]
                    for k in ("load_seconds", "function", "loader", "attach")
                    if k in watcher.ready_record
                }
                time.sleep(2)  # past start-up work
            try:
                # Repeat 0 is a warm-up, left out of the figures: the first alloc of a block
                # runs at half speed (guest memory the host has not backed yet, or just freed).
                for i in range(repeats + 1):
                    out = WORK / f"cost-{block}-{config}-{i}.alloc"
                    sample = {"config": config, "block": block, "repeat": i, "warmup": i == 0}
                    sample |= alloc_throughput(cgroup, limit, stop, out)
                    out.unlink(missing_ok=True)  # its tmpfs pages are charged to the cgroup
                    result["samples"].append(sample)
                    time.sleep(0.2)
            finally:
                if watcher is not None:
                    watcher.stop()
            mine = [x for x in result["samples"] if x["block"] == block and "mibps" in x]
            text = " ".join(f"{x['mibps']:.0f}" + "(warm-up)" * x["warmup"] for x in mine)
            print(
                f"probe cost {config:>8}: {text} MiB/s",
                flush=True,
            )
    finally:
        kill_and_remove(cgroup)
    return result


# -- overhead --------------------------------------------------------------------------------


def overhead(modes: list[Mode], flags: set[str], counts: list[int], window: float) -> list[dict]:
    """oomhero's CPU seconds per second and RSS watching N idle cgroups (one `sleep` each).
    Modes with overhead=False are left out (ebpf-signal: idle, the same process as ebpf)."""
    modes = [m for m in modes if m.overhead]
    idle = [make_cgroup(f"idle{i}", 256 * MIB) for i in range(max(counts))]
    sleepers = [spawn_in(cg, ["sleep", "100000"]) for cg in idle]
    results = []
    try:
        for count in counts:
            for mode in modes:
                watcher = Watcher.of(mode, flags, idle[:count], WORK / "overhead.log")
                try:
                    if mode.probe:  # the window starts once the probe is in, not while compiling
                        ready = watcher.wait_ready(PROBE_TIMEOUT, source="ebpf")
                    else:
                        ready = watcher.wait_ready()
                    time.sleep(2)  # past start-up work, and adaptive polling has backed off
                    cpu0, t0 = watcher.cpu_seconds(), time.monotonic()
                    time.sleep(window)
                    cpu = (watcher.cpu_seconds() - cpu0) / (time.monotonic() - t0)
                    mem = watcher.rss_mib()
                except RuntimeError as exc:  # e.g. the probe unavailable: keep the other rows
                    print(f"overhead {mode.name} {count}: ERROR {exc}"[:400], flush=True)
                    continue
                finally:
                    watcher.stop()
                row = {"mode": mode.name, "cgroups": count, "window_s": window}
                row |= {"cpu_s_per_s": cpu, "rss_mib": mem["rss"], "hwm_mib": mem["hwm"]}
                row["ready_s"] = round(ready, 3)
                results.append(row)
                print(
                    f"overhead {mode.name:>10} {count:>3} cgroups: {cpu:.4f} CPU s/s, "
                    f"RSS {mem['rss']:.1f} MiB (start-up {ready:.1f}s)",
                    flush=True,
                )
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
        for cg in idle:
            kill_and_remove(cg)
    return results


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    names = [m.name for m in MODES]
    p.add_argument("--modes", help=f"comma-separated subset of {','.join(names)} (default all)")
    p.add_argument("--rates", help=f"comma-separated MiB/s or max (default {','.join(RATES)})")
    p.add_argument("--runs", type=int, help="runs per mode and rate (default 5; --quick 2)")
    p.add_argument("--slow-runs", type=int, help="runs at rates below 64 MiB/s (default --runs)")
    p.add_argument("--counts", help="idle cgroups for the overhead part (default 1,10,100,300)")
    p.add_argument("--window", type=float, help="overhead window, seconds (default 10)")
    p.add_argument("--no-overhead", action="store_true", help="skip the overhead part")
    p.add_argument("--no-latency", action="store_true", help="skip the latency part")
    p.add_argument(
        "--no-probe-cost",
        action="store_true",
        help="skip the probe-cost part (it runs when an eBPF mode is selected)",
    )
    p.add_argument(
        "--cost-repeats", type=int, help="allocs per probe-cost block (default 7; --quick 5)"
    )
    p.add_argument(
        "--quick", action="store_true", help="rates 64,max; 2 runs; counts 1,10; 3 s; 5 repeats"
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the start phases (default 1)")
    p.add_argument("--limit", type=int, default=256, help="cgroup limit, MiB (default 256)")
    p.add_argument(
        "--out",
        type=Path,
        help="results file (default bench/results.json for a full run, "
        "bench/.build/results-dev.json when any selection flag is given)",
    )
    args = p.parse_args(argv)
    selections = (args.modes, args.rates, args.runs, args.counts, args.window, args.cost_repeats)
    partial = args.quick or any(v is not None for v in selections)
    partial = partial or args.no_overhead or args.no_latency or args.no_probe_cost
    partial = partial or args.limit != 256
    args.partial = partial
    if args.out is None:
        args.out = BENCH / (".build/results-dev.json" if partial else "results.json")
    args.rates = args.rates.split(",") if args.rates else (QUICK_RATES if args.quick else RATES)
    args.runs = args.runs or (2 if args.quick else 5)
    args.counts = [int(c) for c in args.counts.split(",")] if args.counts else None
    args.counts = args.counts or ([1, 10] if args.quick else [1, 10, 100, 300])
    args.window = args.window or (3.0 if args.quick else 10.0)
    args.cost_repeats = args.cost_repeats or (5 if args.quick else 7)
    wanted = args.modes.split(",") if args.modes else names
    unknown = set(wanted) - set(names)
    if unknown:
        p.error(f"unknown modes {sorted(unknown)}; known: {names}")
    args.modes = [m for m in MODES if m.name in wanted]
    return args


def save(path: Path, results: dict) -> None:
    results["summary"] = report.summarise(results)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if guest_version() != "v2":
        print("bench/run.py: run me in the qemu guest with cgroup v2 (guest/run -- ...)")
        return 2
    started = time.monotonic()
    build_alloc()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    oomhero_digest = snapshot_oomhero()
    if any(m.before for m in args.modes):
        extract_before()
    flags = watch_flags()
    modes = [m for m in args.modes if all(f in flags for f in m.needs)]
    skipped = [m.name for m in args.modes if m not in modes]
    if skipped:
        lacks = sorted({f for m in args.modes if m.name in skipped for f in m.needs} - flags)
        print(f"skipping {skipped}: oomhero watch lacks {lacks}")
    write(CGROOT / "cgroup.subtree_control", "+memory")
    BASE.mkdir(exist_ok=True)
    write(BASE / "cgroup.subtree_control", "+memory")
    limit = args.limit * MIB
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], **CAPTURE)
    results: dict = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "kernel": os.uname().release,
            "vcpus": os.cpu_count(),
            "guest_mem_mib": _mem_total_mib(),
            "python": sys.version.split()[0],
            "oomhero_commit": git.stdout.strip(),
            "oomhero_digest": oomhero_digest,
            "limit_mib": args.limit,
            "warning_pct": WARNING,
            "critical_pct": CRITICAL,
            "modes": {
                m.name: " ".join(["oomhero watch CGROUP", *COMMON, *mode_argv(m, flags)])
                for m in modes
            },
            "skipped_modes": skipped,
            "rates": args.rates,
            "runs": args.runs,
            "slow_runs": args.slow_runs or args.runs,
            "seed": args.seed,
            "settle_s": SETTLE,
            "phase_s": PHASE,
            "partial": args.partial,
            "argv": sys.argv[1:],
        },
        "latency": [],
        "overhead": [],
        "probe_cost": None,
        "probe_start": {},
    }
    if any(m.probe for m in modes) and not args.no_probe_cost:
        # First, on a quiet guest: no probe has been attached yet.
        results["probe_cost"] = probe_cost(flags, args.cost_repeats)
        save(args.out, results)
    if not args.no_latency:
        latency(args, modes, flags, limit, results)
    if not args.no_overhead:
        results["overhead"] = overhead(modes, flags, args.counts, args.window)
    results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    save(args.out, results)
    print(report.table(results))
    print(f"bench: {results['meta']['wall_s']:.0f}s in the guest; results in {args.out}")
    return 0


def latency(
    args: argparse.Namespace, modes: list[Mode], flags: set[str], limit: int, results: dict
) -> None:
    """The modes without the probe interleave within each run, so slow drift in the guest hits
    them all alike; each probe mode then runs as a block of its own, on one watcher (one
    compile), with the same phases. Only one probe is ever attached: every charge on the guest
    goes through it, and a second one would tax the first one's workload."""
    plan, rng = [], random.Random(args.seed)
    for run in range(1, args.runs + 1):
        for rate in args.rates:
            phase = rng.uniform(0, PHASE)
            slow = rate != "max" and float(rate) < 64
            if not (slow and run > (args.slow_runs or args.runs)):
                plan.append((run, rate, phase))

    def one(mode: Mode, run: int, rate: str, phase: float, seq: int, shared: Shared | None):
        try:
            record = latency_run(mode, flags, rate, run, limit, seq, phase, shared)
        except RuntimeError as exc:  # oomhero did not start or died: keep the other runs
            record = {"mode": mode.name, "rate": rate, "run": run, "error": str(exc)[-2000:]}
        results["latency"].append(record)
        print(describe(record), flush=True)
        save(args.out, results)

    seq = 0
    for run, rate, phase in plan:
        for mode in (m for m in modes if not m.probe):
            seq += 1
            one(mode, run, rate, phase, seq, None)
    for mode in (m for m in modes if m.probe):
        shared = None
        for run, rate, phase in plan:
            if shared is not None and shared.watcher.process.poll() is not None:
                print(f"{mode.name}: oomhero exited {shared.watcher.process.returncode}; again")
                shared.close()
                shared = None
            if shared is None:
                try:
                    shared = Shared.start(mode, flags, limit)
                    results["probe_start"].setdefault(mode.name, []).append(shared.describe())
                except RuntimeError as exc:  # e.g. "source unavailable": fail each run with it
                    results["probe_start"].setdefault(mode.name, []).append({"error": str(exc)})
                    for run_, rate_, _ in plan[plan.index((run, rate, phase)) :]:
                        record = {"mode": mode.name, "rate": rate_, "run": run_}
                        record["error"] = str(exc)[-2000:]
                        results["latency"].append(record)
                        print(describe(record), flush=True)
                    save(args.out, results)
                    break
            one(mode, run, rate, phase, 0, shared)
        if shared is not None:
            shared.close()


def _mem_total_mib() -> int:
    line = Path("/proc/meminfo").read_text().splitlines()[0]
    return int(line.split()[1]) // 1024


if __name__ == "__main__":
    sys.exit(main())
