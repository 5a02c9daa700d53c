"""The benchmark driver. Runs inside the qemu guest (cgroup v2), as root; ``make bench`` boots
the guest on the instruction clock (``-icount shift=0``) and renders the results:

    make bench                                            # everything, one boot
    make bench BENCH_ARGS=--quick                         # a few minutes
    guest/run -- .venv/bin/python bench/run.py --modes poll-1s,core-fentry --rates 64 --runs 2 \\
        --no-idle --no-throughput

Parts, in this order (the probe's cost first, before any probe has been attached):
- throughput (cost.py): the workload's allocation speed without oomhero and with each probe;
- latency (latency.py): crossing → the workload's handler, per deployment (``watch``, and
  ``sidecar``: pod.py), mode and rate, with the probe's hand-off (event read → signal sent);
- idle (idle.py): oomhero's CPU and RSS watching N idle cgroups.

Writes every sample to bench/.build/raw.json and the summary (summary.summarise: one row per
mode and figure, and the goals) to the results file; bench/report.py renders them.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH)]  # bench/ is not a package: its modules sit next to this file
from cost import throughput  # noqa: E402
from idle import idle  # noqa: E402
from kit import BASE, CGROOT, MIB, REPO, SNAPSHOT, WORK, build_alloc, remove_tree, write  # noqa: E402
from latency import QUICK_RATES, RATES, plan, run_all  # noqa: E402
from report import table  # noqa: E402
from summary import CRITICAL, WARNING, summarise  # noqa: E402
from watcher import COMMON, Mode  # noqa: E402

POLL = ("--sources", "none")
# One line per configuration of oomhero.
MODES = [
    Mode("poll-1s", ("--interval", "1s", *POLL)),  # OOMHero's behaviour
    Mode("poll-10ms", ("--interval", "10ms", *POLL)),  # a plain fast poller
    Mode("adaptive", POLL),  # adaptive polling only (10 ms floor, 1 s ceiling)
    Mode("events", ("--sources", "inotify,psi")),  # the default where the probe cannot load
    Mode("core-fentry", ("--sources", "ebpf"), "fentry"),  # the default where it can
    Mode("core-kprobe", ("--sources", "ebpf"), "kprobe"),
    Mode("ebpf", ("--sources", "ebpf"), "bcc"),  # bcc's kprobe: kernels without BTF
    Mode("ebpf-signal", ("--sources", "ebpf", "--bpf-signal"), "bcc"),
    # Idle only: the probe with a safety net as often as poll-1s samples (the default is 5 s).
    Mode("core-fentry-net1s", ("--sources", "ebpf", "--safety-net", "1s"), "fentry"),
]
# `oomhero watch` beside the sidecar: the modes that start per run (bcc shares one pod).
WATCH_MODES = ("poll-1s", "poll-10ms", "adaptive", "core-fentry", "core-kprobe")
IDLE_MODES = ("poll-1s", "adaptive", "events", "core-fentry", "core-kprobe", "core-fentry-net1s")
IDLE_ONLY = "core-fentry-net1s"
RAW = BENCH / ".build" / "raw.json"


def snapshot_oomhero() -> str:
    """Copy the package (and bpf/, the probe's source, which the bcc loader reads beside the
    package) to the guest's tmpfs; return a digest of what was copied."""
    shutil.copytree(
        REPO / "oomhero", SNAPSHOT / "oomhero", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "bpf", SNAPSHOT / "bpf")
    digest = hashlib.sha256()
    files = [*(SNAPSHOT / "oomhero").rglob("*.py"), *(SNAPSHOT / "oomhero").rglob("*.bpf.o")]
    for path in sorted([*files, *(SNAPSHOT / "bpf").rglob("*.[ch]")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    names = [m.name for m in MODES]
    p.add_argument("--modes", help=f"comma-separated subset of {','.join(names)} (default all)")
    p.add_argument("--deployments", help="watch,sidecar (default both)")
    p.add_argument("--rates", help=f"comma-separated MiB/s or max (default {','.join(RATES)})")
    p.add_argument("--runs", type=int, help="runs per mode and rate (default 5; --quick 2)")
    p.add_argument("--slow-runs", type=int, help="runs at rates below 64 MiB/s (default --runs)")
    p.add_argument("--counts", help="idle cgroups for the idle part (default 10,100)")
    p.add_argument("--window", type=float, help="idle window, seconds (default 10)")
    p.add_argument("--windows", type=int, help="idle windows per mode (default 3; --quick 2)")
    p.add_argument("--rounds", type=int, help="throughput rounds (default 3; --quick 2)")
    p.add_argument("--allocs", type=int, help="allocs per throughput round (default 3)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency part")
    p.add_argument("--no-idle", action="store_true", help="skip the idle part")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput part")
    p.add_argument(
        "--quick",
        action="store_true",
        help="rates 64,max; 2 runs; 10 cgroups; 5 s windows; 2 rounds",
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
    chosen = (args.modes, args.deployments, args.rates, args.runs, args.counts, args.window)
    chosen += (args.windows, args.rounds, args.allocs)
    partial = args.quick or any(v is not None for v in chosen) or args.limit != 256
    args.partial = partial or args.no_latency or args.no_idle or args.no_throughput
    if args.out is None:
        args.out = BENCH / (".build/results-dev.json" if args.partial else "results.json")
    args.rates = args.rates.split(",") if args.rates else (QUICK_RATES if args.quick else RATES)
    args.runs = args.runs or (2 if args.quick else 5)
    args.counts = [int(c) for c in args.counts.split(",")] if args.counts else None
    args.counts = args.counts or ([10] if args.quick else [10, 100])
    args.window = args.window or (5.0 if args.quick else 10.0)
    args.windows = args.windows or (2 if args.quick else 3)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.allocs = args.allocs or 3
    wanted = args.modes.split(",") if args.modes else names
    unknown = set(wanted) - set(names)
    if unknown:
        p.error(f"unknown modes {sorted(unknown)}; known: {names}")
    args.modes = [m for m in MODES if m.name in wanted]
    args.deployments = (args.deployments or "watch,sidecar").split(",")
    if set(args.deployments) - {"watch", "sidecar"}:
        p.error(f"unknown deployments in {args.deployments}: watch, sidecar")
    return args


def setups(args: argparse.Namespace, among: tuple[str, ...] | None = None) -> list:
    """(deployment, mode) pairs: every chosen mode as the sidecar, the WATCH_MODES also as
    `oomhero watch`; ``among``: only those modes (default: all but the idle-only ones)."""
    pairs = []
    for deployment in ("sidecar", "watch"):
        for mode in args.modes:
            if mode.name not in (among or [m.name for m in MODES if m.name != IDLE_ONLY]):
                continue
            if deployment in args.deployments and (
                deployment == "sidecar" or mode.name in WATCH_MODES
            ):
                pairs.append((deployment, mode))
    return pairs


def save(path: Path, raw: dict) -> None:
    RAW.parent.mkdir(exist_ok=True)
    for target, content in ((RAW, raw), (path, summarise(raw))):
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(content, indent=1) + "\n")
        tmp.replace(target)


def guest_cgroup() -> str | None:
    with open("/proc/cmdline") as f:
        return next(
            (w.split("=", 1)[1] for w in f.read().split() if w.startswith("oomhero.guest=")), None
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if guest_cgroup() != "v2":
        print("bench/run.py: run me in the qemu guest with cgroup v2 (guest/run -- ...)")
        return 2
    started = time.monotonic()
    build_alloc()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    digest = snapshot_oomhero()
    write(CGROOT / "cgroup.subtree_control", "+memory")
    remove_tree(BASE)
    BASE.mkdir()
    write(BASE / "cgroup.subtree_control", "+memory")
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    raw: dict = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "kernel": os.uname().release,
            "vcpus": os.cpu_count(),
            "clock": os.environ.get("BENCH_CLOCK", "wall (TCG)"),
            "python": sys.version.split()[0],
            "oomhero_commit": git.stdout.strip(),
            "oomhero_digest": digest,
            "limit_mib": args.limit,
            "warning_pct": WARNING,
            "critical_pct": CRITICAL,
            "modes": {m.name: " ".join([*COMMON, *m.args]) for m in args.modes},
            "attach": {m.name: m.attach for m in args.modes if m.attach},
            "rates": args.rates,
            "runs": args.runs,
            "idle": {"counts": args.counts, "window_s": args.window, "windows": args.windows},
            "throughput": {"rounds": args.rounds, "allocs": args.allocs},
            "partial": args.partial,
            "argv": sys.argv[1:],
        },
        "throughput": [],
        "latency": [],
        "probe_start": {},
        "idle": [],
    }
    if not args.no_throughput:
        bcc = any(m.compiles for m in args.modes)
        raw["throughput"] = throughput(args.rounds, args.allocs, bcc)
        save(args.out, raw)
    if not args.no_latency:
        steps = plan(args.runs, args.rates, args.slow_runs or args.runs, args.seed)

        def keep(result: dict) -> None:
            raw["latency"].append(result)
            save(args.out, raw)

        raw["probe_start"] = run_all(setups(args), steps, args.limit * MIB, keep)
    if not args.no_idle:
        raw["idle"] = idle(setups(args, IDLE_MODES), args.counts, args.window, args.windows)
    raw["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    save(args.out, raw)
    remove_tree(BASE)
    print(table(summarise(raw)))
    print(f"bench: {raw['meta']['wall_s']:.0f}s in the guest; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
