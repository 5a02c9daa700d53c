"""The latency/overhead benchmark driver. Runs inside the qemu guest (cgroup v2), as root:

    guest/run --timeout 3000 -- .venv/bin/python bench/run.py            # full, ~20 min
    guest/run -- .venv/bin/python bench/run.py --quick                   # a few minutes
    guest/run -- .venv/bin/python bench/run.py --modes poll-1s,poll-100ms --rates 64 --runs 2

Latency: per mode, rate and run, a fresh 256 MiB cgroup, a fresh ``oomhero watch`` on it, and
bench/alloc (C) filling it at the rate until the OOM killer ends it. alloc records, on
CLOCK_MONOTONIC, when its cgroup's usage crossed 75 % and 90 % and when its SIGUSR1/SIGUSR2
handlers ran. Overhead: oomhero's CPU and RSS while watching 1, 10, 100 idle cgroups.

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
sys.path.insert(0, str(BENCH))
import report  # noqa: E402  (bench/ is not a package; report.py sits next to this file)

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


# One line per configuration. `--sources none` is dropped where the flag does not exist yet:
# without event sources it changes nothing.
MODES = [
    Mode("poll-1s", ("--interval", "1s", "--sources", "none")),
    Mode("poll-100ms", ("--interval", "100ms", "--sources", "none")),
    Mode("adaptive", ("--sources", "none"), needs=("--sources", "--poll-floor")),
    Mode("events", (), needs=("--sources", "--poll-floor")),
]
# After oomhero is ready, the workload waits SETTLE (start-up over, adaptive polling backed off to
# its ceiling) plus a random phase in [0, PHASE): started at a fixed delay after oomhero's first
# sample, every run would hit the same point of a 1 s poll cycle and poll-1s would look
# deterministic. One phase per run and rate, shared by the modes: a paired comparison.
SETTLE, PHASE = 1.0, 1.0
RATES = ["16", "64", "256", "1024", "max"]  # MiB/s; max: as fast as alloc can touch pages
QUICK_RATES = ["64", "max"]


def guest_version() -> str | None:
    """v2 or v1 inside the oomhero qemu guest (its kernel command line says so), else None."""
    try:
        words = Path("/proc/cmdline").read_text().split()
    except OSError:
        return None
    return next((w.split("=", 1)[1] for w in words if w.startswith("oomhero.guest=")), None)


def write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


SNAPSHOT = WORK / "snapshot"  # a copy of oomhero/ taken at start: edits made meanwhile stay out


def oomhero_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "oomhero", *args]


def oomhero_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SNAPSHOT)} if SNAPSHOT.exists() else dict(os.environ)


def oomhero_cwd() -> Path:
    """`python -m` puts the working directory first on sys.path: run where the snapshot is."""
    return SNAPSHOT if SNAPSHOT.exists() else REPO


def snapshot_oomhero() -> str:
    """Copy the package to the guest's tmpfs; return a digest of what was copied."""
    shutil.copytree(
        REPO / "oomhero", SNAPSHOT / "oomhero", ignore=shutil.ignore_patterns("__pycache__")
    )
    digest = hashlib.sha256()
    for path in sorted((SNAPSHOT / "oomhero").rglob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def watch_flags() -> set[str]:
    """The long flags `oomhero watch` knows today (other work adds some while this exists)."""
    argv = oomhero_cmd("watch", "--help")
    help_ = subprocess.run(argv, env=oomhero_env(), cwd=oomhero_cwd(), **CAPTURE)
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


def kill_and_remove(path: Path) -> None:
    for _ in range(100):
        pids = (path / "cgroup.procs").read_text().split()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.02)
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


def read_jsonl(path: Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append({"raw": line})
    return records


class Watcher:
    """One `oomhero watch` process logging JSON lines to a file."""

    def __init__(self, targets: list[Path], args: list[str], log: Path) -> None:
        self.log = log
        self.count = len(targets)
        argv = oomhero_cmd("watch", *map(str, targets), *COMMON, *args)
        with open(log, "w") as f:
            self.process = subprocess.Popen(
                argv, stdout=f, stderr=subprocess.STDOUT, env=oomhero_env(), cwd=oomhero_cwd()
            )

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds until it logged "watching target" for every target."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            records = read_jsonl(self.log)
            if sum(r.get("msg") == "watching target" for r in records) >= self.count:
                return time.monotonic() - start
            if self.process.poll() is not None:
                raise RuntimeError(f"oomhero exited {self.process.returncode}: {records}")
            time.sleep(0.02)
        raise RuntimeError(f"oomhero not ready after {timeout}s: {read_jsonl(self.log)}")

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


def latency_run(
    mode: Mode, flags: set[str], rate: str, run: int, limit: int, seq: int, phase: float
) -> dict:
    name = f"{mode.name}-{rate}-{run}"
    cgroup = make_cgroup(f"lat{seq}", limit)
    out = WORK / f"{name}.alloc"
    watcher = Watcher([cgroup], mode_argv(mode, flags), WORK / f"{name}.oomhero")
    record: dict = {"mode": mode.name, "rate": rate, "run": run, "chunk": chunk_for(rate)}
    record["phase_s"] = round(phase, 3)
    try:
        record["oomhero_ready_s"] = round(watcher.wait_ready(), 3)
        time.sleep(SETTLE + phase)
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
        record["memory_events"] = memory_events(cgroup)
    finally:
        logs = watcher.stop()
        record["oomhero_exit"] = watcher.process.returncode
        kill_and_remove(cgroup)
    record["oomhero_signals"] = [
        {k: r.get(k) for k in ("signal", "percent", "source", "usage_mib", "time")}
        for r in logs
        if r.get("msg") == "signal sent"
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

    rate = r.get("achieved_mibps")
    return (
        f"{r['mode']:>10} {r['rate']:>4} MiB/s run {r['run']}: achieved "
        f"{rate and round(rate)} MiB/s, warning {ms(r['warning_latency_ms'])}, critical "
        f"{ms(r['critical_latency_ms'])}, exit {r['exit']}, oom_kill "
        f"{r['memory_events'].get('oom_kill')}, crit→death {ms(r.get('critical_to_death_ms'))}"
    )


# -- overhead --------------------------------------------------------------------------------


def overhead(modes: list[Mode], flags: set[str], counts: list[int], window: float) -> list[dict]:
    """oomhero's CPU seconds per second and RSS watching N idle cgroups (one `sleep` each)."""
    idle = [make_cgroup(f"idle{i}", 256 * MIB) for i in range(max(counts))]
    sleepers = [spawn_in(cg, ["sleep", "100000"]) for cg in idle]
    results = []
    try:
        for count in counts:
            for mode in modes:
                watcher = Watcher(idle[:count], mode_argv(mode, flags), WORK / "overhead.log")
                try:
                    ready = watcher.wait_ready()
                    time.sleep(2)  # past start-up work, and adaptive polling has backed off
                    cpu0, t0 = watcher.cpu_seconds(), time.monotonic()
                    time.sleep(window)
                    cpu = (watcher.cpu_seconds() - cpu0) / (time.monotonic() - t0)
                    mem = watcher.rss_mib()
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
    p.add_argument("--counts", help="idle cgroups for the overhead part (default 1,10,100)")
    p.add_argument("--window", type=float, help="overhead window, seconds (default 10)")
    p.add_argument("--no-overhead", action="store_true", help="skip the overhead part")
    p.add_argument("--no-latency", action="store_true", help="skip the latency part")
    p.add_argument("--quick", action="store_true", help="rates 64,max; 2 runs; counts 1,10; 3 s")
    p.add_argument("--seed", type=int, default=1, help="seed of the start phases (default 1)")
    p.add_argument("--limit", type=int, default=256, help="cgroup limit, MiB (default 256)")
    p.add_argument(
        "--out",
        type=Path,
        help="results file (default bench/results.json for a full run, "
        "bench/.build/results-dev.json when any selection flag is given)",
    )
    args = p.parse_args(argv)
    partial = args.quick or any(
        v is not None for v in (args.modes, args.rates, args.runs, args.counts, args.window)
    )
    partial = partial or args.no_overhead or args.no_latency or args.limit != 256
    args.partial = partial
    if args.out is None:
        args.out = BENCH / (".build/results-dev.json" if partial else "results.json")
    args.rates = args.rates.split(",") if args.rates else (QUICK_RATES if args.quick else RATES)
    args.runs = args.runs or (2 if args.quick else 5)
    args.counts = [int(c) for c in args.counts.split(",")] if args.counts else None
    args.counts = args.counts or ([1, 10] if args.quick else [1, 10, 100])
    args.window = args.window or (3.0 if args.quick else 10.0)
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
    flags = watch_flags()
    modes = [m for m in args.modes if all(f in flags for f in m.needs)]
    skipped = [m.name for m in args.modes if m not in modes]
    if skipped:
        print(f"skipping {skipped}: oomhero watch lacks {sorted({*MODES[2].needs} - flags)}")
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
    }
    if not args.no_latency:
        # Modes interleave within each run so slow drift in the guest hits them all alike.
        seq, rng = 0, random.Random(args.seed)
        for run in range(1, args.runs + 1):
            for rate in args.rates:
                phase = rng.uniform(0, PHASE)
                slow = rate != "max" and float(rate) < 64
                if slow and run > (args.slow_runs or args.runs):
                    continue
                for mode in modes:
                    seq += 1
                    try:
                        record = latency_run(mode, flags, rate, run, limit, seq, phase)
                    except RuntimeError as exc:  # oomhero did not start: keep the other runs
                        record = {"mode": mode.name, "rate": rate, "run": run}
                        record["error"] = str(exc)[-2000:]
                        print(f"{mode.name} {rate} run {run}: ERROR {exc}"[:400], flush=True)
                        results["latency"].append(record)
                        continue
                    results["latency"].append(record)
                    print(describe(record), flush=True)
                    save(args.out, results)
    if not args.no_overhead:
        results["overhead"] = overhead(modes, flags, args.counts, args.window)
    results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    save(args.out, results)
    print(report.table(results))
    print(f"bench: {results['meta']['wall_s']:.0f}s in the guest; results in {args.out}")
    return 0


def _mem_total_mib() -> int:
    line = Path("/proc/meminfo").read_text().splitlines()[0]
    return int(line.split()[1]) // 1024


if __name__ == "__main__":
    sys.exit(main())
