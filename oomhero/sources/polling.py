"""Polling: when to sample a target next, between kernel events. Pure: no I/O, no clock.

No kernel event covers cgroup v2 usage between 0 and 100 %, so between events oomhero samples,
and how soon follows the headroom to the next threshold divided by the recent growth rate: an
idle container costs a sample per ceiling, one racing toward its limit is sampled densely.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from oomhero.policy import Level

if TYPE_CHECKING:
    from oomhero.config import WatchSettings
    from oomhero.targets import Target

# Sample when half the estimated time to the next threshold has passed: growth may speed up.
SAFETY = 0.5
# Targets due within this long of each other are sampled in one wake-up: a wake (epoll_wait and
# a loop iteration) costs about what a sample does, and a millisecond early changes nothing.
BATCH = 0.001


def due(targets: Iterable[Target], now: float, batch: float = BATCH) -> list[Target]:
    """The targets to sample in the wake at ``now``: those due now or within ``batch``."""
    return [t for t in targets if t.next_sample_at <= now + batch]


def next_delay(
    value: int,
    next_threshold: int | None,
    rate: float,
    floor: float,
    ceiling: float,
    burst: float = 0.0,
) -> float:
    """Seconds until the next sample. ``next_threshold`` is the byte value of the next threshold
    above the current level (None when there is none above: the ceiling applies).

    ``burst`` (bytes/s) is the growth to assume at the least: a workload idle until now can
    start allocating at full speed, and the recent rate knows nothing of that. So a small
    container is looked at often enough that even such a burst is caught before it crosses;
    a big one (or ``burst`` 0) costs one sample per ceiling while idle."""
    speed = max(rate, burst)
    if next_threshold is None or speed <= 0:
        return ceiling
    headroom = next_threshold - value
    if headroom <= 0:
        return floor
    return min(max(SAFETY * headroom / speed, floor), ceiling)


class Polling:
    """The loop's clock as a wake-up source: when each target is sampled next, between events.

    Fixed (``--interval``, OOMHero's behaviour) or adaptive (``next_delay``)."""

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings
        self.name = "poll" if settings.interval is not None else "adaptive"

    @property
    def slowest(self) -> float:
        """The gap for a target with nothing to cross: no limit, or unreadable."""
        return self.settings.interval or self.settings.poll_ceiling

    def delay(
        self,
        own: WatchSettings,
        level: Level,
        value: int,
        limit: int,
        rate: float,
        covered: bool = False,
        now: float = 0.0,
    ) -> float:
        """Seconds until the next sample of a target at ``level`` with its ``own`` thresholds,
        at ``value`` of ``limit`` bytes now, growing at ``rate`` bytes/s. Fixed polling is on a
        grid of its interval from clock time 0 (``now``): every target falls due in one wake,
        and the engine's rescans, on a grid too, ride it. ``covered``: a kernel
        source checks its next threshold at every charge (the eBPF probe, armed), so adaptive
        polling relaxes to the ceiling, the safety net for what that source cannot see; on a
        grid of the ceiling from clock time 0 (``now``), so that every covered target falls due
        in the same wake, as fixed polling's do."""
        s = self.settings
        if s.interval is not None:
            return s.interval - now % s.interval
        if covered:
            return s.safety_net - now % s.safety_net
        above = {Level.OK: own.warning, Level.WARNING: own.critical}.get(level)
        next_threshold = None if above is None else int(limit * above / 100)
        return next_delay(value, next_threshold, rate, s.poll_floor, s.poll_ceiling, s.poll_burst)

    def after(self, target: Target, value: int, limit: int, covered: bool, now: float) -> float:
        """``delay`` for a target just sampled at ``value`` of ``limit`` bytes."""
        own, level, rate = target.settings, target.state.level, target.growth.rate
        return self.delay(own, level, value, limit, rate, covered, now)

    def describe(self) -> str:
        s = self.settings
        if s.interval is not None:
            return f"fixed {s.interval:g}s"
        return f"adaptive {s.poll_floor:g}s..{s.poll_ceiling:g}s"
