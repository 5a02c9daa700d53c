"""The watch settings: one frozen value built from raw settings, checked as a whole."""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace

from oomhero.config.values import (
    DEFAULT_PSI,
    DEFAULT_SOURCES,
    HARMFUL_SIGNALS,
    ConfigError,
    PsiTriggerSpec,
    ascii_number,
    parse_bool,
    parse_choice,
    parse_duration,
    parse_percent,
    parse_psi_condition,
    parse_psi_trigger,
    parse_rate,
    parse_signal,
    parse_sources,
)
from oomhero.policy import PsiCondition, Thresholds


@dataclass(frozen=True)
class Setting:
    """A raw setting value with the name it came under (env var or flag), for error messages."""

    name: str
    raw: str


@dataclass(frozen=True)
class WatchSettings:
    """Everything the engine needs to know about thresholds, signals and sampling."""

    warning: float = 75.0
    critical: float = 90.0
    hysteresis: float = 5.0
    cooldown: float = 30.0
    warning_signal: signal.Signals = signal.SIGUSR1
    critical_signal: signal.Signals = signal.SIGUSR2
    interval: float | None = None  # fixed polling; None: adaptive between floor and ceiling
    poll_floor: float = 0.01
    poll_ceiling: float = 1.0
    poll_burst: int = 1024**3  # bytes/s a target may start growing at unannounced; 0: none
    # Adaptive polling of a target whose next threshold the eBPF probe watches: the safety net
    # for what the probe cannot see (a changed limit, a fall that re-arms a threshold).
    safety_net: float = 5.0
    sources: tuple[str, ...] = DEFAULT_SOURCES
    bpf_signal: bool = False  # the probe sends the critical signal itself, in the kernel
    bcc: bool = False  # the probe may fall back to bcc: ebpf asked for, not just the default
    psi: PsiTriggerSpec | None = DEFAULT_PSI
    warning_psi: PsiCondition | None = None
    critical_psi: PsiCondition | None = None
    metric: str = "usage"
    signal_target: str = "all"
    signal_uncaught: bool = False  # also signal processes without a handler (OOMHero's way)
    dry_run: bool = False  # decide and log, send nothing

    def thresholds(self) -> Thresholds:
        return Thresholds(self.warning, self.critical, self.hysteresis, self.cooldown)

    @property
    def polling(self) -> str:
        return "adaptive" if self.interval is None else "fixed"

    def cautions(self) -> list[str]:
        """Valid, but worth a warning line at start."""
        said = []
        if self.dry_run:
            said.append("dry run: every decision is logged, and no signal is sent")
        if self.warning_signal == self.critical_signal:
            said.append(
                f"warning and critical send the same signal ({self.warning_signal.name}): "
                "the app cannot tell them apart"
            )
        for level, sig in (("warning", self.warning_signal), ("critical", self.critical_signal)):
            if sig in HARMFUL_SIGNALS:
                said.append(f"the {level} signal {sig.name} {HARMFUL_SIGNALS[sig]}")
            elif sig in TERMINATING_SIGNALS and not self.signal_uncaught:
                said.append(
                    f"the {level} signal {sig.name} is sent only to processes that catch it "
                    "(their SigCgt): an app without a handler is not signalled, and keeps "
                    "running (counted in oomhero_signals_skipped_total); --signal-uncaught "
                    "(OOMHERO_SIGNAL_UNCAUGHT=1) sends it to every process"
                )
        return said


# Signals that end a process that does not catch them, chosen for that (SIGUSR1 and SIGUSR2 also
# do, but they are the notifications oomhero sends by default): whoever picks SIGTERM likely
# expects the app to stop, and the SigCgt rule leaves an app without a handler running.
TERMINATING_SIGNALS = {
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGALRM,
    signal.SIGABRT, signal.SIGPIPE, signal.SIGVTALRM, signal.SIGPROF, signal.SIGXCPU,
    signal.SIGXFSZ, signal.SIGPWR, signal.SIGSYS, signal.SIGIO, signal.SIGTRAP,
    signal.SIGRTMIN, signal.SIGRTMAX,  # the real-time signals Signals names
}  # fmt: skip
METRICS = ("usage", "working-set")
SIGNAL_TARGETS = ("all", "main")


_PARSERS = {
    "warning": parse_percent,
    "critical": parse_percent,
    "cooldown": lambda n, r: parse_duration(n, r, 0.1, 3600, zero=True),
    "interval": lambda n, r: parse_duration(n, r, 0.01, 600),
    "poll_floor": lambda n, r: parse_duration(n, r, 0.001, 1),
    "poll_ceiling": lambda n, r: parse_duration(n, r, 0.01, 60),
    "poll_burst": parse_rate,
    "safety_net": lambda n, r: parse_duration(n, r, 0.01, 600),
    "sources": parse_sources,
    "bpf_signal": parse_bool,
    "signal_uncaught": parse_bool,
    "dry_run": parse_bool,
    "psi": parse_psi_trigger,
    "warning_psi": parse_psi_condition,
    "critical_psi": parse_psi_condition,
    "warning_signal": parse_signal,
    "critical_signal": parse_signal,
    "metric": lambda n, r: parse_choice(n, r, METRICS),
    "signal_target": lambda n, r: parse_choice(n, r, SIGNAL_TARGETS),
}


def parse_watch_value(key: str, setting: Setting) -> object:
    """One setting's value, alone (the checks across settings are build_watch_settings')."""
    if key == "hysteresis":
        return _parse_hysteresis(setting)
    return _PARSERS[key](setting.name, setting.raw)


def build_watch_settings(
    settings: dict[str, Setting], defaults: WatchSettings | None = None
) -> WatchSettings:
    """Parse the raw settings that are present; absent ones keep their ``defaults``.

    Keys: the fields of WatchSettings.
    """
    defaults = defaults or WatchSettings()
    values = {key: parse_watch_value(key, setting) for key, setting in settings.items()}
    result = WatchSettings(**{**defaults.__dict__, **values})

    def label(key: str) -> str:
        given = settings.get(key)
        return f"{given.name}={given.raw!r}" if given else f"{key} (default {getattr(result, key)})"

    if result.warning >= result.critical:
        raise ConfigError(
            f"{label('warning')} must be below {label('critical')}: warning comes before critical"
        )
    if result.hysteresis >= result.warning:
        raise ConfigError(f"{label('hysteresis')} must be below {label('warning')}")
    adaptive = ("poll_floor", "poll_ceiling", "poll_burst", "safety_net")
    adaptive_only = [k for k in adaptive if k in settings]
    if "interval" in settings and adaptive_only:
        raise ConfigError(
            f"{label('interval')} asks for fixed polling, and {label(adaptive_only[0])} applies "
            "only to adaptive polling: give one or the other"
        )
    if result.bpf_signal and "ebpf" not in result.sources:
        if "sources" in settings:
            raise ConfigError(
                f"{label('bpf_signal')} needs the ebpf source: add it to {label('sources')}"
            )
        result = replace(result, sources=(*result.sources, "ebpf"))
    if result.bpf_signal and result.dry_run:
        raise ConfigError(
            f"{label('bpf_signal')} has the probe signal in the kernel, which {label('dry_run')} "
            "cannot hold back: give one or the other"
        )
    if "ebpf" in result.sources and ("sources" in settings or result.bpf_signal):
        result = replace(result, bcc=True)
    if "psi" in settings and result.psi is not None and "psi" not in result.sources:
        raise ConfigError(f"{label('psi')} has no effect with {label('sources')}: add psi to it")
    if result.poll_floor > result.poll_ceiling:
        raise ConfigError(f"{label('poll_floor')} must not be above {label('poll_ceiling')}")
    for key in ("warning_signal", "critical_signal"):
        why = HARMFUL_SIGNALS.get(getattr(result, key))
        if why and not result.signal_uncaught:
            raise ConfigError(
                f"{label(key)} {why}: refused, unless --signal-uncaught "
                "(OOMHERO_SIGNAL_UNCAUGHT=1) sends it to every process, handler or not"
            )
    return result


def _parse_hysteresis(setting: Setting) -> float:
    value = ascii_number(setting.name, setting.raw.removesuffix("%"), "a number of percent points")
    if not 0 <= value < 100:
        raise ConfigError(f"{setting.name}={setting.raw!r} must be from 0 to below 100 points")
    return value
