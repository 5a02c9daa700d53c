"""Summary, Markdown table and plot of the benchmark's results (bench/run.py writes them).

    .venv/bin/python bench/report.py                        # bench/results.json → README, png
    .venv/bin/python bench/report.py bench/.build/results-dev.json --print   # table to stdout

summarise() is pure Python (run.py calls it in the guest); the plot needs matplotlib
(`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
LEVELS = ("warning", "critical")
# Checked against the bar (latency).
CANDIDATES = ("adaptive", "events", "core-fentry", "core-kprobe", "ebpf", "ebpf-signal")
# Idle CPU at this many cgroups, as a share of another mode's in the same run (issue 10's bars).
IDLE_BAR_CGROUPS = 100
IDLE_BARS = [  # (mode, against, at most this share of it)
    ("events", "before", 0.35),  # the sidecar without a probe vs the old default
    ("poll-1s", "before-poll-1s", 0.35),
    ("core-fentry", "poll-1s", 1.0),
    ("core-kprobe", "poll-1s", 1.0),
]
PROBE_CONFIGS = ("fentry", "kprobe", "bcc")  # probe-cost blocks with a probe attached
BASELINE = "poll-1s"
MARKERS = "os^Dv<>p"


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _stats(values: list[float], misses: int) -> dict:
    return {
        "n": len(values),
        "missed": misses,
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "max": max(values) if values else None,
    }


def _rate_key(rate: str) -> float:
    return math.inf if rate == "max" else float(rate)


def summarise(results: dict) -> dict:
    """Per mode and target rate: latency percentiles from the handled signals (a signal never
    handled is a miss, not a sample), catch rate, achieved rate; plus the acceptance check."""
    groups: dict[tuple[str, str], list[dict]] = {}
    errors = [r for r in results.get("latency", []) if "error" in r]
    for r in results.get("latency", []):
        if "error" in r:
            continue
        groups.setdefault((r["mode"], r["rate"]), []).append(r)
    rows = []
    for (mode, rate), runs in sorted(groups.items(), key=lambda kv: _rate_key(kv[0][1])):
        row: dict = {"mode": mode, "rate": rate, "runs": len(runs)}
        row["caught"] = sum(r["caught"] for r in runs)
        achieved = [r["achieved_mibps"] for r in runs if r.get("achieved_mibps")]
        row["achieved_mibps"] = statistics.median(achieved) if achieved else None
        row["achieved_range"] = [min(achieved), max(achieved)] if achieved else None
        combined: list[float] = []
        for level in LEVELS:
            values = [
                r[f"{level}_latency_ms"] for r in runs if r[f"{level}_latency_ms"] is not None
            ]
            row[level] = _stats(values, len(runs) - len(values))
            combined += values
        row["combined"] = _stats(combined, 2 * len(runs) - len(combined))
        deaths = [r["critical_to_death_ms"] for r in runs if r.get("critical_to_death_ms")]
        row["critical_to_death_ms"] = statistics.median(deaths) if deaths else None
        row["oom_killed"] = sum(r.get("memory_events", {}).get("oom_kill", 0) > 0 for r in runs)
        sources: dict[str, int] = {}
        for r in runs:
            for s in r.get("oomhero_signals", []):
                # --bpf-signal: sent by the probe itself, in the kernel, at the charge.
                source = "kernel" if s.get("where") == "kernel" else s["source"]
                sources[source] = sources.get(source, 0) + 1
        row["signal_sources"] = sources
        cpu = [r["oomhero_cpu_s"] / r["oomhero_busy_s"] for r in runs if r.get("oomhero_busy_s")]
        row["busy_cpu_s_per_s"] = statistics.median(cpu) if cpu else None
        rows.append(row)
    return {
        "latency": rows,
        "acceptance": _acceptance(rows),
        "errors": len(errors),
        "probe_cost": _probe_cost(results.get("probe_cost")),
        "idle": _idle_bars(results.get("overhead") or []),
    }


def _idle_bars(overhead: list[dict]) -> list[str]:
    """The idle-CPU bars at IDLE_BAR_CGROUPS, for the pairs of modes both present."""
    cpu = {o["mode"]: o["cpu_s_per_s"] for o in overhead if o["cgroups"] == IDLE_BAR_CGROUPS}
    lines = []
    for mode, against, bar in IDLE_BARS:
        if mode in cpu and cpu.get(against):
            share = cpu[mode] / cpu[against]
            lines.append(
                f"idle CPU at {IDLE_BAR_CGROUPS} cgroups: {mode} {cpu[mode]:.3f} vs {against} "
                f"{cpu[against]:.3f} CPU s/s = {share:.2f}x (bar ≤ {bar:g}x) — "
                f"{'PASS' if share <= bar else 'FAIL'}"
            )
    return lines


def _probe_cost(cost: dict | None) -> dict | None:
    """Median MiB/s per configuration (none = no oomhero; both `none` blocks, before and after,
    together), and the ratios to it: each probe's cost is its block's / none."""
    if not cost:
        return None
    configs: dict[str, dict] = {}
    for s in cost["samples"]:
        if s.get("warmup"):
            continue
        c = configs.setdefault(s["config"], {"mibps": [], "errors": 0, "blocks": {}})
        if "mibps" in s:
            c["mibps"].append(s["mibps"])
            c["blocks"].setdefault(str(s["block"]), []).append(s["mibps"])
        else:
            c["errors"] += 1
    rows = {}
    for name, c in configs.items():
        v = c["mibps"]
        rows[name] = {
            "n": len(v),
            "errors": c["errors"],
            "median": statistics.median(v) if v else None,
            "min": min(v) if v else None,
            "max": max(v) if v else None,
            "block_medians": {b: statistics.median(x) for b, x in c["blocks"].items()},
        }
    base = (rows.get("none") or {}).get("median")
    for row in rows.values():
        row["ratio_to_none"] = row["median"] / base if base and row["median"] else None
    return {
        "rows": rows,
        "probe_ratios": {
            name: rows[name]["ratio_to_none"]
            for name in PROBE_CONFIGS
            if rows.get(name, {}).get("ratio_to_none")
        },
        "watchers": cost.get("watchers", {}),
    }


def _acceptance(rows: list[dict]) -> list[str]:
    """The issue's bar, checked for each candidate mode present, in words."""
    by = {(r["mode"], r["rate"]): r for r in rows}
    lines = []
    for mode in CANDIDATES:
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        at256 = by.get((mode, "256"))
        if at256:
            ok = at256["caught"] == at256["runs"]
            lines.append(
                f"{mode}: both signals handled before the OOM kill at 256 MiB/s in "
                f"{at256['caught']}/{at256['runs']} runs — {'PASS' if ok else 'FAIL'}"
            )
        for row in mine:
            base = by.get((BASELINE, row["rate"]))
            if not base:
                continue
            p50, base_p50 = row["combined"]["p50"], base["combined"]["p50"]
            note = f" (poll-1s missed {base['combined']['missed']} signals)"
            note = note if base["combined"]["missed"] else ""
            if p50 is None:
                lines.append(f"{mode} @ {row['rate']}: no signal handled — FAIL")
            elif base_p50 is None:
                handled = row["combined"]["n"]
                lines.append(
                    f"{mode} @ {row['rate']}: p50 {p50:.0f} ms over {handled} handled signal(s)"
                    f" of {2 * row['runs']}; poll-1s handled none — no ratio"
                )
            else:
                ratio = base_p50 / max(p50, 1e-3)
                verdict = "PASS" if ratio >= 10 else "FAIL"
                lines.append(
                    f"{mode} @ {row['rate']}: p50 {p50:.0f} ms vs poll-1s {base_p50:.0f} ms = "
                    f"{ratio:.1f}x lower — {verdict}{note}"
                )
    return lines


# -- rendering -------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def _triple(s: dict) -> str:
    return " / ".join(_ms(s[k]) for k in ("p50", "p95", "max"))


def table(results: dict) -> str:
    meta, summary = results["meta"], results.get("summary") or summarise(results)
    out = [
        f"Run {meta['date']}: kernel {meta['kernel']}, {meta['vcpus']} vCPU(s), "
        f"{meta.get('guest_mem_mib', '?')} MiB guest RAM, qemu TCG; {meta['limit_mib']} MiB "
        f"cgroup, warning {meta['warning_pct']} %, critical {meta['critical_pct']} %; oomhero "
        f"{meta['oomhero_commit']}; {meta.get('wall_s', '?')} s in the guest"
        f"{' (partial run)' if meta.get('partial') else ''}.",
        "",
    ]
    if summary.get("errors"):
        out += [f"**{summary['errors']} run(s) failed to start oomhero** (see results.json).", ""]
    if meta.get("skipped_modes"):
        out += [f"Not run (flags missing in oomhero): {', '.join(meta['skipped_modes'])}.", ""]
    out += [
        "Detection latency, ms (threshold crossing → the workload's handler ran), p50 / p95 /"
        " max over the runs where the signal was handled; *missed* = never handled before the"
        " OOM kill; *caught* = runs where both were handled.",
        "",
        "| target MiB/s | achieved MiB/s | mode | warning | critical | missed W/C | caught "
        "| crit. → OOM kill ms | signals by source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["latency"]:
        rng = r["achieved_range"]
        achieved = "–" if not rng else f"{r['achieved_mibps']:.0f} ({rng[0]:.0f}–{rng[1]:.0f})"
        sources = ", ".join(f"{k} {v}" for k, v in sorted(r["signal_sources"].items())) or "–"
        out.append(
            f"| {r['rate']} | {achieved} | {r['mode']} | {_triple(r['warning'])} | "
            f"{_triple(r['critical'])} | {r['warning']['missed']}/{r['critical']['missed']} | "
            f"{r['caught']}/{r['runs']} | {_ms(r['critical_to_death_ms'])} | {sources} |"
        )
    if results.get("overhead"):
        out += [
            "",
            f"Overhead watching idle cgroups (one `sleep` each), over "
            f"{results['overhead'][0]['window_s']:g} s after a 2 s settle:",
            "",
            "| mode | cgroups | CPU s/s | vs poll-1s | RSS MiB | start-up s |",
            "|---|---|---|---|---|---|",
        ]
        base = {
            o["cgroups"]: o["cpu_s_per_s"] for o in results["overhead"] if o["mode"] == BASELINE
        }
        for o in results["overhead"]:
            ratio = (
                f"{o['cpu_s_per_s'] / base[o['cgroups']]:.2f}" if base.get(o["cgroups"]) else "–"
            )
            out.append(
                f"| {o['mode']} | {o['cgroups']} | {o['cpu_s_per_s']:.4f} | {ratio} | "
                f"{o['rss_mib']:.1f} | {o.get('ready_s', '–')} |"
            )
        out += [""] + [f"- {line}" for line in summary.get("idle", [])]
    starts = results.get("probe_start") or {}
    if starts:
        out += [
            "",
            "Probe start: from `oomhero watch` started to its `source ready` line (the probe "
            "loaded and attached), per start:",
            "",
            "| mode | loader | attach | ready s | load s |",
            "|---|---|---|---|---|",
        ]
        for mode, rows in starts.items():
            for row in rows:
                if "error" in row:
                    out.append(f"| {mode} | – | – | failed: {row['error'][:120]} | – |")
                    continue
                out.append(
                    f"| {mode} | {row.get('loader', '–')} | {row.get('attach', '–')} | "
                    f"{row['ready_s']:.2f} | {row.get('compile_s') or '–'} |"
                )
    cost = summary.get("probe_cost")
    if cost:
        raw = results["probe_cost"]
        out += [
            "",
            f"Probe cost: the workload's allocation throughput, unpaced, {raw['alloc_mib']} MiB "
            f"into a {raw['limit_mib']} MiB cgroup (no threshold crossed), {raw['repeats']} "
            f"allocs per block after one warm-up; blocks in the order "
            f"{', '.join(raw.get('order') or cost['rows'])}:",
            "",
            "| oomhero on the cgroup | allocs | MiB/s median (min–max) | vs none |",
            "|---|---|---|---|",
        ]
        what = {
            "none": "none (no oomhero; both blocks)",
            "adaptive": "`--sources none` (polling only)",
            "fentry": "`--sources ebpf`, CO-RE fentry attached",
            "kprobe": "`--sources ebpf`, CO-RE kprobe attached",
            "bcc": "`--sources ebpf`, bcc's kprobe attached",
            "ebpf": "`--sources ebpf` (probe attached)",
        }
        for name, row in cost["rows"].items():
            spread = (
                "–"
                if row["median"] is None
                else (f"{row['median']:.0f} ({row['min']:.0f}–{row['max']:.0f})")
            )
            ratio = "–" if row["ratio_to_none"] is None else f"{row['ratio_to_none']:.3f}"
            errors = f" ({row['errors']} failed)" if row["errors"] else ""
            out.append(f"| {what.get(name, name)} | {row['n']}{errors} | {spread} | {ratio} |")
        problems = {k: w["error"] for k, w in cost["watchers"].items() if "error" in w}
        for name, why in problems.items():
            out.append(f"\n{name}: not measured: {why[:300]}")
        if cost["probe_ratios"]:
            ratios = ", ".join(f"{k} {v:.3f}×" for k, v in cost["probe_ratios"].items())
            out += ["", f"With a probe attached the workload allocates at (vs none): {ratios}."]
    if summary["acceptance"]:
        out += ["", "Acceptance (the issue's bar; p50 over warning and critical together):", ""]
        out += [f"- {line}" for line in summary["acceptance"]]
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    rows = (results.get("summary") or summarise(results))["latency"]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    top = max([r[lv]["max"] or 0 for r in rows for lv in LEVELS] + [1000]) * 3
    low = min([r[lv]["p50"] for r in rows for lv in LEVELS if r[lv]["p50"] is not None] + [1])
    bottom = 1.0 if low >= 1 else 0.1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True, sharey=True)
    for ax, level in zip(axes, LEVELS, strict=True):
        for i, mode in enumerate(modes):
            mine = [r for r in rows if r["mode"] == mode and r["achieved_mibps"]]
            # Modes sit slightly apart on x so their bars do not hide each other.
            xs = [r["achieved_mibps"] * 1.05**i for r in mine]
            color = f"C{i}"
            # A sub-millisecond (or chunk-granularity negative) latency sits on the 0.1 ms floor.
            pts = [(x, r) for x, r in zip(xs, mine, strict=True) if r[level]["p50"] is not None]
            p50 = [max(r[level]["p50"], 0.1) for _, r in pts]
            p95 = [max(r[level]["p95"], 0.1) for _, r in pts]
            marker = MARKERS[i % len(MARKERS)]
            ax.plot([x for x, _ in pts], p50, marker + "-", color=color, label=mode)
            ax.vlines([x for x, _ in pts], p50, p95, color=color, alpha=0.5)
            for x, r in zip(xs, mine, strict=True):
                missed = r[level]["missed"]
                if missed:  # marked along the top edge: a miss has no latency to plot
                    ax.plot(x, 0.97, "x", color=color, transform=ax.get_xaxis_transform())
                    ax.annotate(
                        f"{missed}/{r['runs']}",
                        (x, 0.97),
                        xycoords=ax.get_xaxis_transform(),
                        xytext=(0, -12 - 8 * i),
                        textcoords="offset points",
                        fontsize=7,
                        color=color,
                        ha="center",
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(10, 2000)
        ax.set_ylim(bottom, top)
        ax.xaxis.set_major_locator(FixedLocator([16, 64, 256, 1024]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{level} ({results['meta'][level + '_pct']} %); x at top = missed (k/n)")
        ax.set_xlabel("achieved allocation rate, MiB/s (median)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("detection latency, ms (p50; bar to p95)")
    axes[0].legend()
    meta = results["meta"]
    fig.suptitle(
        f"oomhero detection latency, {meta['limit_mib']} MiB cgroup — qemu TCG, kernel "
        f"{meta['kernel']}, {meta['date']} (compare modes, not absolute times)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def update_readme(readme: Path, text: str) -> None:
    body = readme.read_text()
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="?", type=Path, default=BENCH / "results.json")
    p.add_argument("--print", action="store_true", help="print the table; write no files")
    p.add_argument("--plot", type=Path, help="plot path (default latency.png next to results)")
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    results["summary"] = summarise(results)  # always from the raw samples
    text = table(results)
    if args.print:
        print(text)
        return 0
    plot_path = args.plot or args.results.with_name("latency.png")
    plot(results, plot_path)
    if args.results.resolve() == (BENCH / "results.json").resolve():
        update_readme(BENCH / "README.md", text)
    print(text)
    print(f"\nwrote {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
