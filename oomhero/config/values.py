"""Parsing one user setting's value (an env var or a flag), with its name in every error.

Every setting is parsed here with the name the user gave it (``WARNING`` or ``--warning``), so an
error message can point at the exact setting; nothing is ever silently ignored or defaulted over.
"""

from __future__ import annotations

import re
import signal
import urllib.parse
from dataclasses import dataclass

from oomhero.policy import PsiCondition


class ConfigError(ValueError):
    """A setting the user gave is invalid; the message names the setting."""


_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)?\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_percent(name: str, raw: str) -> float:
    """A share of the memory limit, 0 < value ≤ 100 (a trailing % is allowed)."""
    text = raw.strip().removesuffix("%")
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number (a percent of the limit)") from None
    if not 0 < value <= 100:
        raise ConfigError(f"{name}={raw!r} must be above 0 and at most 100 (percent of the limit)")
    return value


def parse_duration(name: str, raw: str) -> float:
    """Seconds from ``500ms``, ``1s``, ``2m``, ``1h``, ``250us`` or a bare number of seconds.

    Bare integers are OOMHero's legacy ``COOLDOWN`` format (seconds).
    """
    match = _DURATION_RE.match(raw)
    if not match:
        raise ConfigError(
            f"{name}={raw!r} is not a duration (use e.g. 500ms, 1s, 2m, or whole seconds)"
        )
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[unit or "s"]


def parse_size(name: str, raw: str) -> int:
    """Bytes from ``256M``, ``1G``, ``512MiB``, ``4096`` (binary units)."""
    match = _SIZE_RE.match(raw)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ConfigError(f"{name}={raw!r} is not a size (use e.g. 256M, 1G, 512MiB or bytes)")
    value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be more than 0 bytes")
    return value


def parse_rate(name: str, raw: str) -> int:
    """Bytes per second from ``1G``, ``512M``, ``256M/s``; ``0`` for none."""
    text = raw.strip().removesuffix("/s")
    return 0 if text == "0" else parse_size(name, text)


def parse_signal(name: str, raw: str) -> signal.Signals:
    """A signal by name (``SIGUSR1``, ``usr1``) or number (``10``)."""
    text = raw.strip()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        upper = text.upper()
        return signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper]
    except (KeyError, ValueError):
        raise ConfigError(f"{name}={raw!r} is not a signal name or number on this system") from None


def parse_bool(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value (use 1 or 0, true or false)")


def parse_port(name: str, raw: str) -> int:
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{name}={raw!r} is not a TCP port (1 to 65535)")
    return int(raw)


def parse_count(name: str, raw: str) -> int:
    if not raw.strip().isdigit():
        raise ConfigError(f"{name}={raw!r} is not a whole number (0 or more)")
    return int(raw)


def parse_url(name: str, raw: str) -> str:
    parsed = urllib.parse.urlparse(raw.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{name}={raw!r} is not an http:// or https:// URL")
    return raw.strip()


def parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw


SOURCE_NAMES = ("inotify", "psi", "eventfd", "ebpf")
# The eBPF probe costs a compile at start (seconds; tens of seconds under emulation) and
# privileges: it runs when asked for (`all`, a list naming it, or --bpf-signal).
DEFAULT_SOURCES = ("inotify", "psi", "eventfd")
_PSI_TRIGGER_RE = re.compile(r"^(some|full):(\d+(?:\.\d+)?)(us|ms|s)/(\d+(?:\.\d+)?)(us|ms|s)$")
_PSI_CONDITION_RE = re.compile(r"^(some|full)_(avg10|avg60|avg300)\s*>\s*(\d+(?:\.\d+)?)$")
_MICROSECONDS = {"us": 1, "ms": 1000, "s": 1_000_000}


@dataclass(frozen=True)
class PsiTriggerSpec:
    """A PSI trigger: wake when tasks stalled ``stall_us`` within any ``window_us``."""

    kind: str  # some | full
    stall_us: int
    window_us: int

    def text(self, window_us: int | None = None) -> str:
        return f"{self.kind} {self.stall_us} {window_us or self.window_us}"


DEFAULT_PSI = PsiTriggerSpec("some", 150_000, 1_000_000)


def parse_psi_trigger(name: str, raw: str) -> PsiTriggerSpec | None:
    """``some:150ms/1s`` → a trigger; ``off`` → None."""
    text = raw.strip()
    if text.lower() == "off":
        return None
    match = _PSI_TRIGGER_RE.match(text)
    if not match:
        raise ConfigError(f"{name}={raw!r} is not a PSI trigger (use e.g. some:150ms/1s, or off)")
    kind, stall, stall_unit, window, window_unit = match.groups()
    stall_us = int(float(stall) * _MICROSECONDS[stall_unit])
    window_us = int(float(window) * _MICROSECONDS[window_unit])
    if not 500_000 <= window_us <= 10_000_000:
        raise ConfigError(f"{name}={raw!r}: the kernel takes PSI windows from 500ms to 10s")
    if not 0 < stall_us <= window_us:
        raise ConfigError(f"{name}={raw!r}: the stall must be above 0 and within the window")
    return PsiTriggerSpec(kind, stall_us, window_us)


def parse_psi_condition(name: str, raw: str) -> PsiCondition | None:
    """``some_avg10>40`` → a condition; ``off`` → None."""
    text = raw.strip()
    if text.lower() == "off":
        return None
    match = _PSI_CONDITION_RE.match(text)
    if not match:
        raise ConfigError(
            f"{name}={raw!r} is not a PSI condition (use e.g. some_avg10>40 or full_avg60>10)"
        )
    kind, window, above = match.groups()
    if not 0 <= float(above) < 100:
        raise ConfigError(f"{name}={raw!r}: PSI averages are percentages, from 0 to below 100")
    return PsiCondition(kind, window, float(above))


def parse_sources(name: str, raw: str) -> tuple[str, ...]:
    """``all``, ``none``, or a comma list of inotify, psi, eventfd, ebpf."""
    text = raw.strip().lower()
    if text == "all":
        return SOURCE_NAMES
    if text == "none":
        return ()
    chosen = tuple(part.strip() for part in text.split(","))
    unknown = [part for part in chosen if part not in SOURCE_NAMES]
    if unknown or not chosen:
        raise ConfigError(
            f"{name}={raw!r}: sources are all, none, or a list of {', '.join(SOURCE_NAMES)}"
        )
    return tuple(dict.fromkeys(chosen))
