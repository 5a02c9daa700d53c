"""The decision: which level a target is at and whether to signal now. Pure: no I/O, no clock.

Per target a small state machine ok → warning → critical:
- an upward crossing of a threshold signals once, at once (a jump ok → critical sends critical);
- while usage stays at or above the threshold of the current level, the signal repeats every
  ``cooldown`` seconds (``cooldown == 0``: never repeats);
- a level is left (re-armed) only when usage falls below its threshold minus ``hysteresis`` points;
  falling never signals.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True)
class PsiCondition:
    """A pressure level that counts as a threshold crossing, e.g. ``some_avg10>40``."""

    kind: str
    window: str
    above: float

    def holds(self, pressure: dict[str, dict[str, float]] | None) -> bool:
        return bool(pressure) and pressure.get(self.kind, {}).get(self.window, 0.0) > self.above

    def __str__(self) -> str:
        return f"{self.kind}_{self.window}>{self.above:g}"


class Level(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Thresholds:
    warning: float
    critical: float
    hysteresis: float = 5.0
    cooldown: float = 30.0

    def threshold(self, level: Level) -> float:
        return self.critical if level is Level.CRITICAL else self.warning


@dataclass
class PolicyState:
    level: Level = Level.OK
    last_signal_at: float | None = None


@dataclass(frozen=True)
class Decision:
    previous: Level
    level: Level
    signal: Level | None = None
    # "crossed" (upward crossing), "jumped" (ok → critical in one step), "pressure" (a PSI
    # condition, not usage, raised the level), "repeat" (cooldown), "fell" (level left
    # downward); "" when nothing changed.
    reason: str = ""

    @property
    def changed(self) -> bool:
        return self.level is not self.previous


def evaluate(
    thresholds: Thresholds,
    state: PolicyState,
    percent: float,
    now: float,
    pressure: Level = Level.OK,
) -> Decision:
    """Advance ``state`` for a sample at ``percent`` of the limit taken at time ``now``.

    ``pressure`` is the level that memory pressure (PSI conditions) alone reaches: the target is
    at least at that level, whatever its usage."""
    previous = state.level
    by_usage = _level_after(thresholds, previous, percent)
    level = max(by_usage, pressure)

    if level > previous:
        state.level = level
        state.last_signal_at = now
        if level > by_usage:
            reason = "pressure"
        elif previous is Level.OK and level is Level.CRITICAL:
            reason = "jumped"
        else:
            reason = "crossed"
        return Decision(previous, level, signal=level, reason=reason)

    if level < previous:
        state.level = level
        # Still warning after critical: its repeats continue a cooldown from now, not at once.
        state.last_signal_at = now if level is Level.WARNING else None
        return Decision(previous, level, reason="fell")

    if (
        level is not Level.OK
        and thresholds.cooldown > 0
        and percent >= thresholds.threshold(level)
        and state.last_signal_at is not None
        and now - state.last_signal_at >= thresholds.cooldown
    ):
        state.last_signal_at = now
        return Decision(previous, level, signal=level, reason="repeat")

    return Decision(previous, level)


def _level_after(thresholds: Thresholds, current: Level, percent: float) -> Level:
    if percent >= thresholds.critical:
        return Level.CRITICAL
    if percent >= thresholds.warning:
        # Coming down from critical only counts once below critical's re-arm point.
        if current is Level.CRITICAL and percent >= thresholds.critical - thresholds.hysteresis:
            return Level.CRITICAL
        return Level.WARNING
    # Below warning: hold each level until its own re-arm point is passed.
    if current is Level.CRITICAL and percent >= thresholds.critical - thresholds.hysteresis:
        return Level.CRITICAL
    if current >= Level.WARNING and percent >= thresholds.warning - thresholds.hysteresis:
        return Level.WARNING
    return Level.OK


def pressure_level(
    warning: PsiCondition | None,
    critical: PsiCondition | None,
    pressure: dict[str, dict[str, float]] | None,
) -> Level:
    """The level PSI conditions alone put a target at."""
    if critical is not None and critical.holds(pressure):
        return Level.CRITICAL
    if warning is not None and warning.holds(pressure):
        return Level.WARNING
    return Level.OK
