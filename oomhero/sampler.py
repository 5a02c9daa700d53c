"""A target's reading → a Sample: usage by the chosen metric, its share of the limit, growth.

Reading is the only I/O of a visit: the cgroup's files (or a process tree's RSS), plus
memory.pressure where PSI conditions are set and memory.events when inotify says it changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import CgroupDir, CgroupError, MemorySample
from oomhero.policy import Level, pressure_level
from oomhero.targets import Target


@dataclass(frozen=True)
class Sample:
    memory: MemorySample
    value: int  # what the thresholds compare: usage, or the working set
    percent: float | None  # of the limit; None: the target has no limit


class Sampler:
    def __init__(
        self, settings: WatchSettings, listener_wants_page_cache: Callable[[], bool] = lambda: False
    ) -> None:
        """``listener_wants_page_cache()``: whether whoever else sees the samples (the
        listeners) wants the working set, whatever the metric."""
        self.settings = settings
        self.listener_wants_page_cache = listener_wants_page_cache

    def read(self, target: Target, now: float) -> Sample:
        """Raises CgroupError when the target cannot be read (CgroupGone: removed)."""
        if isinstance(target.reader, CgroupDir):
            fresh = self.limit_due(target.limit_read_at, now)
            memory = target.reader.sample(self.wants_page_cache, limit=fresh)
            if fresh:
                target.limit_read_at = now
        else:
            memory = target.reader.sample()
        target.last_sample = memory
        value = memory.value(self.settings.metric)
        target.growth.update(value, now)
        if memory.limit is None:
            return Sample(memory, value, None)
        # memory.max = 0 is legal on v2: nothing fits, so it is as critical as it gets.
        percent = value * 100.0 / memory.limit if memory.limit > 0 else 100.0
        return Sample(memory, value, percent)

    def limit_due(self, read_at: float | None, now: float) -> bool:
        """Whether to read the limit again: the limit files never notify (seen on v2), so at
        the slowest polling cadence (the interval, or the ceiling), as often as an idle target
        is sampled. A sample due then may come a wake-up batch early: 10 % slack."""
        cadence = self.settings.interval or self.settings.poll_ceiling
        return read_at is None or now - read_at >= 0.9 * cadence

    @property
    def wants_page_cache(self) -> bool:
        """memory.stat is read only when the working set is wanted: by the metric, or a listener."""
        if self.settings.metric == "working-set":
            return True
        return self.listener_wants_page_cache()

    def pressure(self, target: Target, unreadable: Callable[[Target], None]) -> Level:
        """The level PSI conditions alone reach; ``unreadable(target)`` when they apply but
        memory.pressure cannot be read."""
        s = self.settings
        if s.warning_psi is None and s.critical_psi is None:
            return Level.OK
        pressure = target.reader.pressure() if isinstance(target.reader, CgroupDir) else None
        if pressure is None:
            unreadable(target)
        return pressure_level(s.warning_psi, s.critical_psi, pressure)

    def events(self, target: Target) -> dict[str, int]:
        try:
            return target.reader.events()
        except CgroupError:
            return {}

    def news(self, target: Target) -> int:
        """memory.events changed: the processes OOM-killed since last time."""
        events = self.events(target)
        killed = events.get("oom_kill", 0) - target.events_seen.get("oom_kill", 0)
        target.events_seen = events
        return killed
