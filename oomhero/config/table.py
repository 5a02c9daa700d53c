"""The settings table: each setting's flag, env var, metavar and help, in one place.

The CLI builds its parsers from it, and ``given`` reads what the user set (flags beat env vars).
The first five env names are OOMHero's, so its pod.yaml works unchanged.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass

from oomhero.config.settings import METRICS, SIGNAL_TARGETS, Setting

THRESHOLDS, WAKE_UPS, OUTPUTS = "thresholds and signals", "wake-ups", "metrics and webhook"


@dataclass(frozen=True)
class Flag:
    key: str  # the WatchSettings field (or output setting) it sets
    flag: str
    env: str | None
    metavar: str | None
    help: str  # may name defaults as {warning:g}, filled from the command's defaults
    group: str
    const: str | None = None  # a switch: sets this value when given
    repeat: bool = False  # may be given more than once: the values are lines of one setting

    def given(self, args: argparse.Namespace, use_env: bool, environ: Mapping[str, str]):
        value = getattr(args, self.key, None)
        if value is not None:
            return Setting(self.flag, "\n".join(value) if self.repeat else value)
        if use_env and self.env in environ:
            return Setting(self.env, environ[self.env])
        return None

    def overridden(self, args: argparse.Namespace, use_env: bool, environ: Mapping[str, str]):
        """The env var's setting when the flag is given too: unused, but still checked (a
        broken value in a deployment is broken, whatever overrides it today)."""
        if use_env and getattr(args, self.key, None) is not None and self.env in environ:
            return Setting(self.env, environ[self.env])
        return None


def _f(key: str, metavar: str | None, help: str, group: str = THRESHOLDS, **kw) -> Flag:
    env = kw.pop("env", "OOMHERO_" + key.upper())
    return Flag(key, "--" + key.replace("_", "-"), env, metavar, help, group, **kw)


WATCH_FLAGS = (
    _f("warning", "PCT", "warning threshold, percent of the limit (default {warning:g})",
       env="WARNING"),
    _f("critical", "PCT", "critical threshold, percent of the limit (default {critical:g})",
       env="CRITICAL"),
    _f("cooldown", "DUR", "repeat the signal this often while usage stays above (500ms, 10s, "
       "2m, or whole seconds; 0: once per crossing; default 30s)", env="COOLDOWN"),
    _f("hysteresis", "PTS",
       "re-arm a level only below its threshold minus this many points (default 5)"),
    _f("warning_signal", "SIG",
       "signal at warning: a name (SIGUSR1, usr1) or number (default SIGUSR1)",
       env="WARNING_SIGNAL"),
    _f("critical_signal", "SIG", "signal at critical (default SIGUSR2)", env="CRITICAL_SIGNAL"),
    _f("interval", "DUR",
       "fixed polling every DUR, as OOMHero does (1s); default: adaptive polling", WAKE_UPS),
    _f("poll_floor", "DUR",
       "adaptive polling: never sample more often than this (default 10ms)", WAKE_UPS),
    _f("poll_ceiling", "DUR",
       "adaptive polling: sample at least this often, unless the eBPF probe watches the next "
       "threshold (see --safety-net) (default 1s)", WAKE_UPS),
    _f("safety_net", "DUR", "adaptive polling: while the eBPF probe watches a target's next "
       "threshold, sample it only this often, for what the probe cannot see (a changed limit, a "
       "fall below a threshold that re-arms it, a probe that stopped) (default {safety_net:g}s)",
       WAKE_UPS),
    _f("poll_burst", "RATE", "adaptive polling: assume a target may start growing this fast "
       "(bytes/s) unseen, and sample a small one often enough to catch that (default 1G; 0: "
       "follow only the measured rate, one sample per ceiling while idle)", WAKE_UPS),
    _f("sources", "LIST", "kernel event sources: a list of inotify (v2 memory.events), psi "
       "(memory.pressure trigger), eventfd (v1 thresholds), ebpf (a probe on the charge path: "
       "needs CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN, and kernel BTF, or else bcc and kernel "
       "headers), or all, or none (default all: each that cannot work here says why once, and "
       "ebpf falls back to bcc only when named)",
       WAKE_UPS),
    _f("bpf_signal", None, "the eBPF probe sends the critical signal itself, to the process "
       "whose allocation crosses the threshold, before that allocation returns (implies the "
       "ebpf source)", WAKE_UPS, const="1"),
    _f("psi", "TRIGGER",
       "the PSI trigger, some|full:STALL/WINDOW (default some:150ms/1s), or off", WAKE_UPS),
    _f("warning_psi", "COND",
       "memory pressure that counts as warning too, e.g. some_avg10>20", WAKE_UPS),
    _f("critical_psi", "COND",
       "memory pressure that counts as critical too, e.g. some_avg10>40", WAKE_UPS),
    _f("metric", "|".join(METRICS), "usage: memory.current; working-set: usage minus "
       "inactive_file, as kubelet counts it (default usage)"),
    _f("signal_target", "|".join(SIGNAL_TARGETS),
       "all: every process of the container; main: its topmost process (default all)"),
    _f("signal_uncaught", None, "also signal processes that have no handler for the signal, as "
       "OOMHero does (SIGUSR1/SIGUSR2 then terminate them); default: only those whose "
       "/proc/PID/status SigCgt catches it", const="1"),
    _f("dry_run", None, "decide and log as usual, send no signal: each line that would have "
       "been a signal says dry_run=true (permission and handler still checked, with signal 0)",
       const="1"),
)  # fmt: skip

LOG_FLAGS = (
    _f("log_format", "text|json", "log line format (default text)"),
    _f("log_level", "info|debug", "debug adds a line per sample, with what woke it and when "
       "the next is due (default info)"),
)  # fmt: skip

OUTPUT_FLAGS = (
    _f("metrics_port", "PORT", "serve Prometheus /metrics and /healthz (200 while the loop "
       "turns; 503 before the first scan or when it has stalled) on this port (default: off)",
       OUTPUTS, env="METRICS_PORT"),
    _f("metrics_address", "ADDR", "the IP address to serve them on (default: 0.0.0.0 in sidecar "
       "and node mode, scraped from outside the pod, and readable by whoever reaches the pod; "
       "127.0.0.1 for commands run by hand)", OUTPUTS),
    _f("webhook", "URL", "POST a JSON body (version, target, level, usage, limit, time; "
       "README) for every crossing, beside the signals; an http:// or https:// URL, redirects "
       "not followed (a 3xx is a failed delivery)", OUTPUTS),
    _f("webhook_timeout", "DUR", "each attempt, from connecting to the last byte of the answer, "
       "takes at most this long (default 2s)", OUTPUTS),
    _f("webhook_retries", "N", "retries after a failed attempt (not after a 3xx or a 4xx other "
       "than 408 and 429), with backoff 0.5s, 1s, 2s… (default 3)", OUTPUTS),
    _f("webhook_header", "'NAME: VALUE'", "a header sent with every delivery, e.g. 'X-Team: "
       "payments'; give the flag once per header (env: one per line)", OUTPUTS,
       env="OOMHERO_WEBHOOK_HEADERS", repeat=True),
    _f("webhook_token_file", "PATH", "send 'Authorization: Bearer <the file's content>', read "
       "again at every delivery (a mounted Secret that rotates); or the token itself in env "
       "OOMHERO_WEBHOOK_TOKEN (no flag: a command line shows in ps)", OUTPUTS),
)  # fmt: skip
# The bearer token itself: an env var only (from a Secret), never a flag.
WEBHOOK_TOKEN_ENV = "OOMHERO_WEBHOOK_TOKEN"

NODE_ROOT_ENV = "OOMHERO_NODE_CGROUP_ROOT"
# The sidecar's pod, from the downward API (deploy/pod.yaml): labels on every target's series.
POD_ENV = ("OOMHERO_POD_NAMESPACE", "OOMHERO_POD_NAME", "OOMHERO_POD_UID")
# Forces one way of attaching the eBPF probe (bpf/README.md); no flag: it is for comparing them.
BPF_ATTACH_ENV = "OOMHERO_BPF_ATTACH"
KNOWN_ENV = {f.env for f in (*WATCH_FLAGS, *LOG_FLAGS, *OUTPUT_FLAGS)} | {NODE_ROOT_ENV}
KNOWN_ENV |= {BPF_ATTACH_ENV, WEBHOOK_TOKEN_ENV, *POD_ENV}


def given(
    args: argparse.Namespace,
    flags: tuple[Flag, ...],
    use_env: bool,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Setting]:
    """What the user set of ``flags``: flags first, then (if allowed) env vars."""
    found = {flag.key: flag.given(args, use_env, environ) for flag in flags}
    return {key: setting for key, setting in found.items() if setting is not None}


def overridden(
    args: argparse.Namespace,
    flags: tuple[Flag, ...],
    use_env: bool,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, tuple[Setting, Flag]]:
    """The env vars of ``flags`` that a flag given beside them overrides, with that flag."""
    found = {flag.key: (flag.overridden(args, use_env, environ), flag) for flag in flags}
    return {key: (s, flag) for key, (s, flag) in found.items() if s is not None}
