"""The probe's cost to the workload: alloc's unpaced allocation throughput (256 MiB into a
512 MiB cgroup: thresholds at 384 and 460 MiB, every charge goes through the probe, none
crosses) without oomhero, and with ``oomhero watch --sources ebpf`` ready on that cgroup, by
each probe point and way of attaching.

Run on the instruction clock (qemu ``-icount shift=0``), where the guest's time counts the
instructions it executes: a ratio of throughputs is a ratio of instructions per byte, whatever
else the host runs. The configurations are interleaved in rounds (round 1 of each, then round
2, …), a warm-up alloc first in each (left out: the first alloc of a block runs at about half
speed), so the spread between rounds shows too; bcc (a compile at each start) runs as one block
at the end."""

from __future__ import annotations

import time

from kit import (
    MIB,
    WORK,
    alloc_argv,
    chunk_for,
    make_cgroup,
    memory_events,
    parse_alloc,
    remove_tree,
    spawn_in,
    wait_exit,
)
from watcher import Mode, start_watch

LIMIT_MIB, ALLOC_MIB = 512, 256
# (name, OOMHERO_BPF_ATTACH or None: no oomhero). The per-page point is today's fallback.
CONFIGS = [
    ("none", None),
    ("fentry", "fentry:page_counter_try_charge"),
    ("kprobe", "kprobe:page_counter_try_charge"),
    ("fentry per page", "fentry:try_charge_memcg"),
    ("kprobe per page", "kprobe:try_charge_memcg"),
]
BCC = ("bcc", "bcc")


def _alloc(cgroup, out) -> dict:
    """One unpaced alloc of ALLOC_MIB into the cgroup: MiB/s on the guest's clock."""
    usage, limit, chunk = str(cgroup / "memory.current"), LIMIT_MIB * MIB, chunk_for("max")
    alloc = spawn_in(cgroup, alloc_argv(usage, limit, "max", chunk, out, stop=ALLOC_MIB * MIB))
    if wait_exit(alloc, timeout=600) is None:
        alloc.kill()
    code = alloc.wait()
    parsed = parse_alloc(out)
    out.unlink(missing_ok=True)  # its tmpfs pages are charged to the cgroup
    if code != 0 or "done_ns" not in parsed:
        return {"error": f"alloc exited {code}", "memory_events": memory_events(cgroup)}
    seconds = (parsed["done_ns"] - parsed["start_ns"]) / 1e9
    return {"mibps": parsed["done_touched"] / MIB / seconds, "seconds": seconds}


def _block(cgroup, name: str, attach: str | None, allocs: int, round_no: int) -> list[dict]:
    watcher, samples = None, []
    if attach is not None:
        mode = Mode(name, ("--sources", "ebpf"), attach)
        watcher = start_watch(mode, [cgroup], WORK / f"cost-{round_no}.oomhero", "cost")
    try:
        if watcher is not None:
            watcher.wait_ready(1, probe=True)
            time.sleep(1)  # past start-up work
        for i in range(allocs + 1):
            sample = {"config": name, "round": round_no, "repeat": i, "warmup": i == 0}
            samples.append(sample | _alloc(cgroup, WORK / f"cost-{round_no}-{i}.alloc"))
            time.sleep(0.2)
    except RuntimeError as exc:
        samples.append({"config": name, "round": round_no, "error": str(exc)[-1000:]})
    finally:
        if watcher is not None:
            ready = watcher.ready_record
            watcher.stop()
            for s in samples:
                s |= {k: ready[k] for k in ("function", "attach", "loader") if k in ready}
    shown = " ".join(f"{s['mibps']:.0f}" for s in samples if "mibps" in s and not s["warmup"])
    print(f"throughput {name:>16} round {round_no}: {shown} MiB/s", flush=True)
    return samples


def throughput(rounds: int, allocs: int, bcc: bool) -> list[dict]:
    """Every sample: config, round, repeat, MiB/s (warm-ups marked)."""
    cgroup = make_cgroup("cost", LIMIT_MIB * MIB)
    samples: list[dict] = []
    try:
        for round_no in range(1, rounds + 1):
            for name, attach in CONFIGS:
                samples += _block(cgroup, name, attach, allocs, round_no)
        if bcc:
            samples += _block(cgroup, *BCC, allocs, rounds + 1)
    finally:
        remove_tree(cgroup)
    return samples
