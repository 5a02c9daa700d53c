"""Idle cost: oomhero's CPU (its own cgroup's cpu.stat) and RSS while it watches N idle cgroups
(one ``sleep`` each), per deployment and mode, in interleaved windows (window 1 of every mode,
then window 2, …): the spread between a mode's windows says how far its figure can be trusted.
Each window starts 2 s after oomhero watches every cgroup (and its probe is ready)."""

from __future__ import annotations

import time

from kit import MIB, WORK, make_cgroup, remove_tree, spawn_in
from pod import Pod
from watcher import Mode, Watcher, start_watch

SETTLE = 2.0  # s after ready: start-up work over, adaptive polling backed off


def _measure(watcher: Watcher, count: int, mode: Mode, window: float) -> dict:
    ready = watcher.wait_ready(count, mode.probe)
    time.sleep(SETTLE)
    cpu0, t0 = watcher.cpu_s(), time.monotonic()
    time.sleep(window)
    cpu = (watcher.cpu_s() - cpu0) / (time.monotonic() - t0)
    return {"cpu_s_per_s": cpu, "rss_mib": watcher.rss_mib(), "ready_s": round(ready, 3)}


def idle(
    setups: list[tuple[str, Mode]], counts: list[int], window: float, windows: int
) -> list[dict]:
    """One row per (deployment, mode, count, window). A mode that compiles (bcc) is left out:
    idle, its probe costs what CO-RE's does, and each start would cost a compile."""
    setups = [(d, m) for d, m in setups if not m.compiles]
    rows = []
    for count in counts:
        idle_cgroups, sleepers, pod, containers = [], [], None, []
        try:
            if any(d == "watch" for d, _ in setups):
                idle_cgroups = [make_cgroup(f"idle{i}", 256 * MIB) for i in range(count)]
                sleepers = [spawn_in(cg, ["sleep", "100000"]) for cg in idle_cgroups]
            if any(d == "sidecar" for d, _ in setups):
                pod = Pod(f"idle-pod{count}")
                for i in range(count):
                    containers.append(pod.container(f"app{i}", 256 * MIB, "exec sleep 100000"))
            for window_no in range(1, windows + 1):
                for deployment, mode in setups:
                    log = WORK / f"idle-{deployment}-{mode.name}-{count}-{window_no}.oomhero"
                    if deployment == "watch":
                        watcher = start_watch(mode, idle_cgroups, log, f"idle-{mode.name}")
                    else:
                        watcher = pod.sidecar(mode, log)
                    row = {"deployment": deployment, "mode": mode.name, "cgroups": count}
                    row |= {"window": window_no, "window_s": window}
                    try:
                        row |= _measure(watcher, count, mode, window)
                    except RuntimeError as exc:  # e.g. the probe unavailable: keep the others
                        row["error"] = str(exc)[-1000:]
                    finally:
                        watcher.stop()
                    rows.append(row)
                    print(
                        f"idle {deployment:>7} {mode.name:>11} {count:>3} cgroups, window "
                        f"{window_no}: "
                        + (
                            f"{row['cpu_s_per_s']:.4f} CPU s/s, RSS {row['rss_mib']:.1f} MiB"
                            if "error" not in row
                            else f"ERROR {row['error']}"[:300]
                        ),
                        flush=True,
                    )
        finally:
            for sleeper in sleepers:
                sleeper.kill()
                sleeper.wait()
            for cgroup in idle_cgroups:
                remove_tree(cgroup)
            for container in containers:
                container.close()
            if pod is not None:
                pod.close()
    return rows
