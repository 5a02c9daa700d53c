"""Latency runs: from a threshold crossing to the workload's signal handler, per deployment
(``watch``, ``sidecar``), mode, rate and run.

Each run: a fresh 256 MiB cgroup (watch) or a fresh pod with an app container (sidecar), a
fresh oomhero on it, and once oomhero watches it (and its probe is ready), SETTLE plus a random
phase later, bench/alloc filling it at the rate until the OOM killer ends it. A mode that
compiles its probe (bcc: 20-30 s under TCG) keeps one pod and one sidecar for all its runs, in
a block of its own after the others: each run is a new app container in it (a restarted
container is a new cgroup), found by the sidecar's rescan as any other.
"""

from __future__ import annotations

import os
import random
import select
import time
from dataclasses import dataclass

from kit import (
    CRITICAL,
    MIB,
    WARNING,
    WORK,
    alloc_argv,
    chunk_for,
    make_cgroup,
    memory_events,
    parse_alloc,
    remove_tree,
    spawn_in,
)
from pod import Pod, go, waiting
from watcher import Mode, Watcher, start_watch

# After oomhero is ready, the workload waits SETTLE (start-up over, adaptive polling backed off to
# its ceiling) plus a random phase in [0, PHASE): started at a fixed delay after oomhero's first
# sample, every run would hit the same point of a 1 s poll cycle and poll-1s would look
# deterministic. One phase per run and rate, shared by the modes: a paired comparison.
SETTLE, PHASE = 1.0, 1.0
RATES = ["16", "64", "256", "1024", "max"]  # MiB/s; max: as fast as alloc can touch pages
QUICK_RATES = ["64", "max"]
APP_USAGE = "/sys/fs/cgroup/memory.current"  # the app container's own view of its cgroup


def plan(runs: int, rates: list[str], slow_runs: int, seed: int) -> list[tuple[int, str, float]]:
    """(run, rate, phase) in the order run: run 1 of every rate, then run 2, …"""
    steps, rng = [], random.Random(seed)
    for run in range(1, runs + 1):
        for rate in rates:
            phase = rng.uniform(0, PHASE)
            slow = rate != "max" and float(rate) < 64
            if not (slow and run > slow_runs):
                steps.append((run, rate, phase))
    return steps


def crossing_ns(cross: dict, threshold: int) -> float:
    """When usage crossed the threshold: linear between the last reading below it (taken just
    before the chunk was touched) and the first at or above it."""
    t_lo, u_lo, t_hi, u_hi = cross["t_lo"], cross["u_lo"], cross["t_hi"], cross["u_hi"]
    if u_hi <= u_lo:
        return float(t_hi)
    return t_lo + (threshold - u_lo) / (u_hi - u_lo) * (t_hi - t_lo)


def wait_pid_exit(pidfd: int, timeout: float) -> int | None:
    """Monotonic ns at which the process of ``pidfd`` ended, or None on timeout."""
    ready, _, _ = select.select([pidfd], [], [], timeout)
    return time.monotonic_ns() if ready else None


@dataclass
class Block:
    """One pod and one sidecar for every run of a mode that compiles its probe."""

    pod: Pod
    watcher: Watcher
    ready_s: float

    @classmethod
    def start(cls, mode: Mode) -> Block:
        pod = Pod(f"block-{mode.name}")
        try:
            watcher = pod.sidecar(mode, WORK / f"sidecar-{mode.name}.oomhero")
            ready = watcher.wait_ready(0, mode.probe)
        except BaseException:
            pod.close()
            raise
        print(f"{mode.name}: probe ready after {ready:.1f}s", flush=True)
        return cls(pod, watcher, ready)

    def close(self) -> None:
        self.watcher.stop()
        self.pod.close()


def one_run(
    deployment: str,
    mode: Mode,
    rate: str,
    run: int,
    limit: int,
    seq: int,
    phase: float,
    block: Block | None = None,
) -> dict:
    """One run; the record holds what alloc and oomhero said about it."""
    name = f"{deployment}-{mode.name}-{rate}-{run}"
    out, chunk = WORK / f"{name}.alloc", chunk_for(rate)
    record: dict = {"deployment": deployment, "mode": mode.name, "rate": rate, "run": run}
    record |= {"chunk": chunk, "phase_s": round(phase, 3)}
    pod = container = watcher = cgroup = None
    try:
        if deployment == "watch":
            cgroup = make_cgroup(f"lat{seq}", limit)
            watcher = start_watch(mode, [cgroup], WORK / f"{name}.oomhero", name)
            record["oomhero_ready_s"] = round(watcher.wait_ready(1, mode.probe), 3)
            first = 0
        else:
            pod = block.pod if block else Pod(f"pod{seq}")
            fifo = WORK / f"{name}.go"
            argv = alloc_argv(APP_USAGE, limit, rate, chunk, out)
            watching = block.watcher.watching() if block else 0
            container = pod.container(f"app{seq}", limit, waiting(fifo, " ".join(argv)))
            cgroup = container.cgroup
            watcher = block.watcher if block else pod.sidecar(mode, WORK / f"{name}.oomhero")
            first = len(watcher.records()) if block else 0
            ready = watcher.wait_ready(watching + 1, mode.probe)
            record["oomhero_ready_s"] = round(ready, 3)
        time.sleep(SETTLE + phase)
        events0 = memory_events(cgroup)
        cpu0, t0 = watcher.cpu_s(), time.monotonic()
        if container is None:
            argv = alloc_argv(str(cgroup / "memory.current"), limit, rate, chunk, out)
            pidfd = os.pidfd_open(spawn_in(cgroup, argv).pid)
        else:
            pidfd = os.pidfd_open(container.pid)
            go(fifo)
        try:
            expected = limit / MIB / (float(rate) if rate != "max" else 256)
            died_ns = wait_pid_exit(pidfd, timeout=3 * expected + 30)
        finally:
            os.close(pidfd)
        record["timed_out"] = died_ns is None
        record["died_ns"] = died_ns
        record["oomhero_cpu_s"] = round(watcher.cpu_s() - cpu0, 4)
        record["oomhero_busy_s"] = round(time.monotonic() - t0, 3)
        events = memory_events(cgroup)
        record["memory_events"] = {k: v - events0.get(k, 0) for k, v in events.items()}
        logs = watcher.records(first) if block else watcher.stop()
    finally:
        if block is None and watcher is not None and watcher.alive():
            watcher.stop()
        if container is not None:
            container.close()
        if pod is not None and block is None:
            pod.close()
        if deployment == "watch" and cgroup is not None:
            remove_tree(cgroup)
    record |= _from_logs(logs)
    record |= _from_alloc(parse_alloc(out), limit, died_ns)
    out.unlink(missing_ok=True)
    return record


def _from_logs(logs: list[dict]) -> dict:
    """What oomhero said: each signal (its source, and the probe's hand-off), its decisions."""
    signals = [
        {k: r.get(k) for k in ("signal", "percent", "source", "time")}
        | {"where": "kernel" if r["msg"] == "signal sent in the kernel" else "user"}
        | {k: r[k] for k in ("since_charge_ms", "probe_percent", "handoff_ms") if k in r}
        for r in logs
        if r.get("msg") in ("signal sent", "signal sent in the kernel")
    ]
    decisions = [
        {k: r.get(k) for k in ("time", "msg", "source", "percent", "since_charge_ms") if k in r}
        for r in logs
        if r.get("msg", "").startswith(("rose to ", "fell to ", "no process", "not signalled"))
    ]
    problems = [r for r in logs if r.get("level") in ("error", "critical") or "raw" in r]
    # How it read the target: "<path> (v2, root view)" as the sidecar, "host view" as watch.
    watched = [r.get("cgroup") for r in logs if r.get("msg") == "watching target"]
    return {
        "oomhero_signals": signals,
        "oomhero_log": decisions,
        "oomhero_problems": problems[:20],
        "oomhero_watched": watched,
    }


def _from_alloc(alloc: dict, limit: int, died_ns: int | None) -> dict:
    """Latency per level (handler time − interpolated crossing), the rate achieved, the window
    from the critical crossing to the kill, and whether both signals were handled."""
    record: dict = {"alloc": alloc}
    for level, pct in (("warning", WARNING), ("critical", CRITICAL)):
        cross, handled = alloc["cross"].get(level), alloc["handled"].get(level)
        t_cross = crossing_ns(cross, limit * pct // 100) if cross else None
        record[f"{level}_cross_ns"] = t_cross
        record[f"{level}_latency_ms"] = (
            (handled["t_ns"] - t_cross) / 1e6 if handled and t_cross is not None else None
        )
    crit = alloc["cross"].get("critical")
    if crit and "start_ns" in alloc and crit["t_hi"] > alloc["start_ns"]:
        grown = crit["u_hi"] - alloc["start_usage"]
        record["achieved_mibps"] = grown / MIB / ((crit["t_hi"] - alloc["start_ns"]) / 1e9)
    if died_ns is not None and record["critical_cross_ns"] is not None:
        record["critical_to_death_ms"] = (died_ns - record["critical_cross_ns"]) / 1e6
    record["caught"] = all(level in alloc["handled"] for level in ("warning", "critical"))
    return record


def describe(r: dict) -> str:
    def ms(v: float | None) -> str:
        return "miss" if v is None else f"{v:.1f}ms"

    head = f"{r['deployment']:>7} {r['mode']:>11} {r['rate']:>4} MiB/s run {r['run']}"
    if "error" in r:
        return f"{head}: ERROR {r['error']}"[:400]
    rate = r.get("achieved_mibps")
    handoff = [s["handoff_ms"] for s in r["oomhero_signals"] if "handoff_ms" in s]
    return (
        f"{head}: achieved {rate and round(rate)} MiB/s, warning {ms(r['warning_latency_ms'])},"
        f" critical {ms(r['critical_latency_ms'])}, oom_kill "
        f"{r['memory_events'].get('oom_kill')}, hand-off {handoff or '-'} ms"
    )


def run_all(
    setups: list[tuple[str, Mode]],
    steps: list[tuple[int, str, float]],
    limit: int,
    record,
) -> dict[str, list]:
    """Every (deployment, mode) over ``steps``: those that start oomhero per run interleaved
    within each step, so slow drift hits them alike; each compiling mode then in a block of its
    own with the same steps. ``record(r)`` takes each result as it comes. Returns each block's
    start-up."""
    seq, starts = 0, {}

    def one(deployment: str, mode: Mode, step: tuple[int, str, float], block: Block | None):
        nonlocal seq
        seq += 1
        run, rate, phase = step
        try:
            result = one_run(deployment, mode, rate, run, limit, seq, phase, block)
        except RuntimeError as exc:  # oomhero did not start or died: keep the other runs
            result = {"deployment": deployment, "mode": mode.name, "rate": rate, "run": run}
            result["error"] = str(exc)[-2000:]
        record(result)
        print(describe(result), flush=True)

    for step in steps:
        for deployment, mode in setups:
            if not mode.compiles:
                one(deployment, mode, step, None)
    for deployment, mode in setups:
        if not mode.compiles:
            continue
        assert deployment == "sidecar", "a compiling mode runs as the sidecar of one pod"
        try:
            block = Block.start(mode)
        except RuntimeError as exc:  # e.g. "source unavailable": every run fails with it
            for run, rate, _ in steps:
                result = {"deployment": deployment, "mode": mode.name, "rate": rate, "run": run}
                record(result | {"error": str(exc)[-2000:]})
            continue
        starts[mode.name] = {"ready_s": round(block.ready_s, 3)} | {
            k: block.watcher.ready_record.get(k) for k in ("loader", "attach", "function")
        }
        try:
            for step in steps:
                one(deployment, mode, step, block)
        finally:
            block.close()
    return starts
