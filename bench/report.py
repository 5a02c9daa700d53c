"""Markdown tables and the plot of the benchmark's results (bench/run.py writes them; the rows
and goals come from summary.py).

    .venv/bin/python bench/report.py                        # bench/results.json → README, png
    .venv/bin/python bench/report.py bench/.build/results-dev.json --print   # tables to stdout

The plot needs matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from summary import CRITICAL, LEVELS, WARNING, summarise

BENCH = Path(__file__).resolve().parent
MARKERS = "os^Dv<>p"


def _ms(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _triple(s: dict | None, digits: int = 0) -> str:
    if not s:
        return "–"
    return " / ".join(_ms(s[k], digits) for k in ("p50", "p95", "max"))


def _rows(summary: dict, figure: str, **match: object) -> list[dict]:
    return [
        r
        for r in summary["rows"]
        if r["figure"] == figure and all(r.get(k) == v for k, v in match.items())
    ]


def header(meta: dict) -> str:
    wall = f"{meta['wall_s']} s in the guest" if "wall_s" in meta else "its length not recorded"
    line = (
        f"Run {meta['date']}: kernel {meta['kernel']}, {meta['vcpus']} vCPU, qemu TCG on the "
        f"{meta['clock']} clock; oomhero {meta['oomhero_commit']} (digest "
        f"{meta['oomhero_digest']}); {wall}{' (partial run)' if meta.get('partial') else ''}."
    )
    idle = meta.get("idle_run")  # the idle part taken again in a run of its own
    if idle:
        line += (
            f" Idle rows: run {idle['date']}, oomhero {idle['oomhero_commit']} (digest "
            f"{idle['oomhero_digest']}), {idle['clock']} clock: {idle['note']}."
        )
    return line


def goals_table(summary: dict) -> list[str]:
    out = ["| goal | where | measured | verdict |", "|---|---|---|---|"]
    for g in summary["goals"]:
        out.append(f"| {g['goal']} | {g['where']} | {g['measured'] or '–'} | {g['verdict']} |")
    return out


def latency_table(summary: dict, deployment: str) -> list[str]:
    rows = _rows(summary, "latency", deployment=deployment)
    if not rows:
        return []
    out = [
        "| target MiB/s | achieved MiB/s | mode | warning ms | critical ms | missed W/C | caught "
        "| hand-off ms | crit. → OOM kill ms | signals by source |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rng = r["achieved_range"]
        achieved = "–" if not rng else f"{r['achieved_mibps']:.0f} ({rng[0]:.0f}–{rng[1]:.0f})"
        sources = ", ".join(f"{k} {v}" for k, v in sorted(r["signal_sources"].items())) or "–"
        errors = f" ({r['errors']} failed)" if r["errors"] else ""
        out.append(
            f"| {r['rate']} | {achieved} | {r['mode']} | {_triple(r['warning'])} | "
            f"{_triple(r['critical'])} | {r['warning']['missed']}/{r['critical']['missed']} | "
            f"{r['caught']}/{r['runs']}{errors} | {_triple(r['handoff_ms'], 2)} | "
            f"{_ms(r['critical_to_death_ms'])} | {sources} |"
        )
    return out


def idle_table(summary: dict) -> list[str]:
    rows = _rows(summary, "idle_cpu")
    if not rows:
        return []
    out = [
        "| deployment | mode | cgroups | CPU s/s median (min–max) | vs poll-1s | RSS MiB | "
        "ready s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["cgroups"], r["deployment"])):
        cpu = "–"
        if r["cpu_s_per_s"] is not None:
            lo, hi = r["cpu_range"]
            cpu = f"{r['cpu_s_per_s']:.4f} ({lo:.4f}–{hi:.4f})"
        errors = f" ({r['errors']} failed)" if r["errors"] else ""
        out.append(
            f"| {r['deployment']} | {r['mode']} | {r['cgroups']} | {cpu}{errors} | "
            f"{_ms(r['vs_poll_1s'], 2)} | {_ms(r['rss_mib'], 1)} | {_ms(r['ready_s'], 2)} |"
        )
    return out


def throughput_table(summary: dict) -> list[str]:
    rows = _rows(summary, "throughput")
    if not rows:
        return []
    out = [
        "| probe | attached to | allocs | MiB/s median (min–max) | vs none (per round) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        mibps = "–"
        if r["mibps"] is not None:
            mibps = f"{r['mibps']:.1f} ({r['mibps_range'][0]:.1f}–{r['mibps_range'][1]:.1f})"
        ratio = "1" if r["config"] == "none" else _ms(r["vs_none"], 3)
        if r["config"] != "none" and r["vs_none_range"]:
            ratio += f" ({r['vs_none_range'][0]:.3f}–{r['vs_none_range'][1]:.3f})"
        where = "–" if not r["function"] else f"{r['function']} ({r['loader']}, {r['attach']})"
        errors = f" ({r['errors']} failed)" if r["errors"] else ""
        out.append(f"| {r['config']} | {where} | {r['allocs']}{errors} | {mibps} | {ratio} |")
    return out


def table(summary: dict) -> str:
    out = [header(summary["meta"]), "", "Goals (issue 17):", "", *goals_table(summary)]
    for deployment, what in (
        ("sidecar", "as the sidecar of a pod (bench/pod.py)"),
        ("watch", "as `oomhero watch CGROUP`"),
    ):
        lines = latency_table(summary, deployment)
        if lines:
            out += [
                "",
                f"Latency, oomhero {what}: ms from the threshold crossing to the workload's "
                "handler, p50 / p95 / max over the runs where it was handled; hand-off: the "
                "probe's event read → `pidfd_send_signal`, p50 / p95 / max over the signals.",
                "",
                *lines,
            ]
    if lines := idle_table(summary):
        out += ["", "Idle: oomhero's CPU (its cgroup's cpu.stat) watching idle cgroups:", ""]
        out += lines
    if lines := throughput_table(summary):
        out += ["", "Throughput: the workload's unpaced allocation, probe attached or none:", ""]
        out += lines
    starts = _rows(summary, "probe_start")
    if starts:
        out += [
            "",
            "| block (bcc) | loader | attach | function | ready s |",
            "|---|---|---|---|---|",
        ]
        for r in starts:
            out.append(
                f"| {r['mode']} | {r.get('loader')} | {r.get('attach')} | {r.get('function')} "
                f"| {r.get('ready_s')} |"
            )
    return "\n".join(out)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    rows = _rows(summary, "latency", deployment="sidecar") or _rows(summary, "latency")
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    top = max([r[lv]["max"] or 0 for r in rows for lv in LEVELS] + [1000]) * 3
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
                if missed := r[level]["missed"]:  # along the top edge: a miss has no latency
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
        ax.set_ylim(0.1, top)
        ax.xaxis.set_major_locator(FixedLocator([16, 64, 256, 1024]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        pct = WARNING if level == "warning" else CRITICAL
        ax.set_title(f"{level} ({pct} %); x at top = missed (k/n)")
        ax.set_xlabel("achieved allocation rate, MiB/s (median)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("detection latency, ms (p50; bar to p95)")
    axes[0].legend(fontsize=8)
    meta = summary["meta"]
    fig.suptitle(
        f"oomhero as a pod's sidecar: crossing → handler, 256 MiB container — qemu TCG, "
        f"{meta['clock']} clock, kernel {meta['kernel']}, {meta['date']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def update_readme(readme: Path, parts: dict[str, str]) -> None:
    """Replace each generated part of the README (between ``<!-- NAME:begin -->`` and
    ``<!-- NAME:end -->``)."""
    body = readme.read_text()
    for name, text in parts.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        head, rest = body.split(begin, 1)
        _, tail = rest.split(end, 1)
        body = f"{head}{begin}\n{text}\n{end}{tail}"
    readme.write_text(body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="?", type=Path, default=BENCH / "results.json")
    p.add_argument("--raw", type=Path, help="summarise these samples again (raw.json) first")
    p.add_argument("--print", action="store_true", help="print the tables; write no files")
    p.add_argument("--plot", type=Path, help="plot path (default latency.png next to results)")
    args = p.parse_args(argv)
    if args.raw:
        summary = summarise(json.loads(args.raw.read_text()))
        args.results.write_text(json.dumps(summary, indent=1) + "\n")
    else:
        summary = json.loads(args.results.read_text())
    text = table(summary)
    if args.print:
        print(text)
        return 0
    plot_path = args.plot or args.results.with_name("latency.png")
    plot(summary, plot_path)
    if args.results.resolve() == (BENCH / "results.json").resolve():
        goals = "\n".join([header(summary["meta"]), "", *goals_table(summary)])
        update_readme(BENCH / "README.md", {"goals": goals, "results": text})
    print(text)
    print(f"\nwrote {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
