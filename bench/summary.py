"""From every sample (bench/.build/raw.json) to what results.json keeps: one row per mode and
figure, and the issue's goals checked against them. Pure Python: run.py calls it in the guest.

Figures: ``latency`` (per deployment, mode and rate: crossing → handler, the probe's hand-off,
catch rate), ``idle_cpu`` (per deployment, mode and count), ``throughput`` (per configuration),
``probe_start`` (per compiling mode's block)."""

from __future__ import annotations

import math
import statistics

WARNING, CRITICAL = 75, 90
LEVELS = ("warning", "critical")
BASELINE = "poll-1s"
IDLE_AT = 100  # cgroups: the idle goal's count
GOALS = {
    "handoff": 1.0,  # ms, p50: the probe's event read → pidfd_send_signal
    "throughput": 0.99,  # × none, with the probe attached (fentry and kprobe)
    "idle": 1.0,  # × poll-1s, CPU at IDLE_AT idle cgroups, with the probe
}
PROBE_MODES = ("core-fentry", "core-kprobe")  # the CO-RE probe: what the goals are about


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _stats(values: list[float], misses: int = 0) -> dict:
    return {
        "n": len(values),
        "missed": misses,
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "max": max(values) if values else None,
    }


def _rate_key(rate: str) -> float:
    return math.inf if rate == "max" else float(rate)


def latency_rows(results: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["deployment"], r["mode"], r["rate"]), []).append(r)
    rows = []
    for (deployment, mode, rate), runs in sorted(
        groups.items(), key=lambda kv: _rate_key(kv[0][2])
    ):
        ok = [r for r in runs if "error" not in r]
        row: dict = {"figure": "latency", "deployment": deployment, "mode": mode, "rate": rate}
        row |= {"runs": len(runs), "errors": len(runs) - len(ok)}
        row["caught"] = sum(r["caught"] for r in ok)
        achieved = [r["achieved_mibps"] for r in ok if r.get("achieved_mibps")]
        row["achieved_mibps"] = statistics.median(achieved) if achieved else None
        row["achieved_range"] = [min(achieved), max(achieved)] if achieved else None
        for level in LEVELS:
            values = [r[f"{level}_latency_ms"] for r in ok if r[f"{level}_latency_ms"] is not None]
            row[level] = _stats(values, len(runs) - len(values))
        handoff = [s["handoff_ms"] for r in ok for s in r["oomhero_signals"] if "handoff_ms" in s]
        row["handoff_ms"] = _stats(handoff) if handoff else None
        deaths = [r["critical_to_death_ms"] for r in ok if r.get("critical_to_death_ms")]
        row["critical_to_death_ms"] = statistics.median(deaths) if deaths else None
        sources: dict[str, int] = {}
        for r in ok:
            for s in r["oomhero_signals"]:
                # --bpf-signal: sent by the probe itself, in the kernel, at the charge.
                source = "kernel" if s.get("where") == "kernel" else s["source"]
                sources[source] = sources.get(source, 0) + 1
        row["signal_sources"] = sources
        rows.append(row)
    return rows + handoff_rows(results)


def handoff_rows(results: list[dict]) -> list[dict]:
    """Per deployment and mode with the probe: the hand-off of every signal user space sent
    on a probe's event, over all rates."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in results:
        for s in r.get("oomhero_signals", []):
            if "handoff_ms" in s:
                groups.setdefault((r["deployment"], r["mode"]), []).append(s["handoff_ms"])
    return [
        {"figure": "handoff", "deployment": d, "mode": m, "ms": _stats(values)}
        for (d, m), values in groups.items()
    ]


def idle_rows(samples: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for s in samples:
        groups.setdefault((s["deployment"], s["mode"], s["cgroups"]), []).append(s)
    rows = []
    for (deployment, mode, count), windows in groups.items():
        cpu = [w["cpu_s_per_s"] for w in windows if "cpu_s_per_s" in w]
        row = {"figure": "idle_cpu", "deployment": deployment, "mode": mode, "cgroups": count}
        row |= {"windows": len(cpu), "errors": len(windows) - len(cpu)}
        row["cpu_s_per_s"] = statistics.median(cpu) if cpu else None
        row["cpu_range"] = [min(cpu), max(cpu)] if cpu else None
        rss = [w["rss_mib"] for w in windows if "rss_mib" in w]
        row["rss_mib"] = statistics.median(rss) if rss else None
        ready = [w["ready_s"] for w in windows if "ready_s" in w]
        row["ready_s"] = statistics.median(ready) if ready else None
        rows.append(row)
    base = {
        (r["deployment"], r["cgroups"]): r["cpu_s_per_s"] for r in rows if r["mode"] == BASELINE
    }
    for row in rows:
        against = base.get((row["deployment"], row["cgroups"]))
        row["vs_poll_1s"] = row["cpu_s_per_s"] / against if against and row["cpu_s_per_s"] else None
    return rows


def throughput_rows(samples: list[dict]) -> list[dict]:
    """Per configuration: MiB/s median and range over its allocs, and the ratio to no
    oomhero: of the medians, and per round (each round's median over that round's none)."""
    measured = [s for s in samples if "mibps" in s and not s["warmup"]]
    rounds: dict[tuple[str, int], list[float]] = {}
    for s in measured:
        rounds.setdefault((s["config"], s["round"]), []).append(s["mibps"])
    none = {n: statistics.median(v) for (c, n), v in rounds.items() if c == "none"}
    none_all = [s["mibps"] for s in measured if s["config"] == "none"]
    base = statistics.median(none_all) if none_all else None
    rows = []
    for config in dict.fromkeys(s["config"] for s in samples):
        mine = [s for s in measured if s["config"] == config]
        values = [s["mibps"] for s in mine]
        row: dict = {"figure": "throughput", "config": config, "allocs": len(values)}
        row["errors"] = sum("error" in s for s in samples if s["config"] == config)
        where = next((s for s in mine if "function" in s), {})
        row |= {k: where.get(k) for k in ("function", "attach", "loader")}
        row["mibps"] = statistics.median(values) if values else None
        row["mibps_range"] = [min(values), max(values)] if values else None
        row["vs_none"] = row["mibps"] / base if base and row["mibps"] else None
        # A round without its own none (bcc's block, at the end) is compared to the median.
        per_round = [
            statistics.median(v) / none.get(n, base)
            for (c, n), v in rounds.items()
            if c == config and (none.get(n) or base)
        ]
        row["vs_none_range"] = [min(per_round), max(per_round)] if per_round else None
        rows.append(row)
    return rows


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "missed")


def goals(rows: list[dict]) -> list[dict]:
    """The four goals of issue 17, each with the figure measured beside it."""
    out = []
    # 1. Hand-off: the probe's event read → pidfd_send_signal, over every signal sent.
    for r in rows:
        if r["figure"] == "handoff" and r["mode"] in PROBE_MODES:
            p50, most = r["ms"]["p50"], r["ms"]["max"]
            out.append(
                {
                    "goal": "hand-off ≤ 1 ms p50 (probe event read → pidfd_send_signal)",
                    "where": f"{r['deployment']}, {r['mode']} ({r['ms']['n']} signals)",
                    "measured": f"p50 {p50:.3f} ms, p95 {r['ms']['p95']:.3f}, max {most:.3f}",
                    "value": p50,
                    "verdict": _verdict(p50 <= GOALS["handoff"]),
                }
            )
    # 2. Throughput with the probe, per-batch point, both attach kinds.
    for r in rows:
        if r["figure"] == "throughput" and r["config"] in ("fentry", "kprobe"):
            ratio, spread = r["vs_none"], r["vs_none_range"]
            out.append(
                {
                    "goal": "throughput with the probe ≥ 0.99× none",
                    "where": f"{r['attach']} on {r['function']}",
                    "measured": None
                    if ratio is None
                    else f"{ratio:.3f}× (rounds {spread[0]:.3f}–{spread[1]:.3f})",
                    "value": ratio,
                    "verdict": _verdict(None if ratio is None else ratio >= GOALS["throughput"]),
                }
            )
    # 3. Idle CPU at IDLE_AT cgroups, against poll-1s of the same deployment.
    for r in rows:
        if r["figure"] == "idle_cpu" and r["mode"] in PROBE_MODES and r["cgroups"] == IDLE_AT:
            ratio = r["vs_poll_1s"]
            out.append(
                {
                    "goal": f"idle CPU at {IDLE_AT} cgroups ≤ 1.0× poll-1s",
                    "where": f"{r['deployment']}, {r['mode']}",
                    "measured": None if ratio is None else f"{ratio:.2f}× poll-1s",
                    "value": ratio,
                    "verdict": _verdict(None if ratio is None else ratio <= GOALS["idle"]),
                }
            )
    # 4. Both signals before the OOM kill in every run, at every rate, as the sidecar.
    latency = [r for r in rows if r["figure"] == "latency"]
    for mode in dict.fromkeys(r["mode"] for r in latency if r["deployment"] == "sidecar"):
        mine = [r for r in latency if (r["deployment"], r["mode"]) == ("sidecar", mode)]
        caught, runs = sum(r["caught"] for r in mine), sum(r["runs"] for r in mine)
        worst = min(mine, key=lambda r: r["caught"] / r["runs"])
        out.append(
            {
                "goal": "catch 5/5 at every rate, sidecar",
                "where": f"sidecar, {mode}",
                "measured": f"{caught}/{runs} runs; worst {worst['caught']}/{worst['runs']} "
                f"at {worst['rate']}",
                "value": caught / runs if runs else None,
                "verdict": _verdict(caught == runs),
            }
        )
    return out


def summarise(raw: dict) -> dict:
    rows = latency_rows(raw.get("latency", []))
    rows += idle_rows(raw.get("idle", []))
    rows += throughput_rows(raw.get("throughput", []))
    for mode, start in (raw.get("probe_start") or {}).items():
        rows.append({"figure": "probe_start", "mode": mode, **start})
    return {"meta": raw["meta"], "goals": goals(rows), "rows": rows}
