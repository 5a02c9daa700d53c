"""Settings: every value the user gives (env var or flag), parsed with its name and checked."""

from __future__ import annotations

from oomhero.config.settings import (
    METRICS,
    SIGNAL_TARGETS,
    Setting,
    WatchSettings,
    build_watch_settings,
)
from oomhero.config.values import (
    DEFAULT_SOURCES,
    SOURCE_NAMES,
    ConfigError,
    PsiTriggerSpec,
    parse_address,
    parse_bool,
    parse_choice,
    parse_count,
    parse_duration,
    parse_percent,
    parse_port,
    parse_psi_condition,
    parse_psi_trigger,
    parse_rate,
    parse_signal,
    parse_size,
    parse_sources,
    parse_url,
)
from oomhero.policy import PsiCondition

__all__ = [
    "DEFAULT_SOURCES",
    "METRICS",
    "SIGNAL_TARGETS",
    "SOURCE_NAMES",
    "ConfigError",
    "PsiCondition",
    "PsiTriggerSpec",
    "Setting",
    "WatchSettings",
    "build_watch_settings",
    "parse_address",
    "parse_bool",
    "parse_choice",
    "parse_count",
    "parse_duration",
    "parse_percent",
    "parse_port",
    "parse_psi_condition",
    "parse_psi_trigger",
    "parse_rate",
    "parse_signal",
    "parse_size",
    "parse_sources",
    "parse_url",
]
