"""The loop: wait for a wake-up (a source, or polling's timeout), sample the targets it
concerns, let the policy decide, act. A source only says "now": the policy decides from usage."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable

from oomhero.actions import Actions
from oomhero.actions.listener import Listeners
from oomhero.actions.report import Report
from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import CgroupError, CgroupGone, CgroupRefused
from oomhero.kernel.procfs import process_generation
from oomhero.policy import Decision, evaluate
from oomhero.sampler import Sampler
from oomhero.sources import WakeSources
from oomhero.sources.epoll import STOP_SIGNALS, Wakeups
from oomhero.sources.polling import Polling
from oomhero.targets import Scanner, Target
from oomhero.watchlist import RescanGate, Watchlist

# Targets due within this long of each other are sampled in one wake-up: a wake (epoll_wait and
# a loop iteration) costs about what a sample does, and a millisecond early changes nothing.
BATCH = 0.001


def due(targets: Iterable[Target], now: float, batch: float = BATCH) -> list[Target]:
    """The targets to sample in the wake at ``now``: those due now or within ``batch``."""
    return [t for t in targets if t.next_sample_at <= now + batch]


class Engine:
    def __init__(
        self,
        scanner: Scanner,
        settings: WatchSettings,
        rescan_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.rescan_interval, self.clock = settings, rescan_interval, clock
        self.fds = Wakeups()  # what the loop waits on
        self.add_source = self.fds.add  # another fd for the loop (top's keys)
        self.listeners, report = Listeners(), Report()
        self.polling, self.sampler = (
            Polling(settings),
            Sampler(settings, lambda: self.listeners.wants_page_cache),
        )
        self.sources = WakeSources(
            settings,
            self.fds.add,
            self.fds.remove,
            report.globally,
            report.once_globally,
            self.sample_soon,
        )
        self.watchlist = Watchlist(
            scanner, settings, self.sources, self.sampler, report, self.listeners,
            self.polling.describe(), clock,
        )  # fmt: skip
        self.actions = Actions(settings, self.watchlist.refresh, self.listeners, report)
        self.targets = self.watchlist.targets
        self.wakeups: Counter[str] = Counter()  # samples taken, by what woke the loop
        self.rescans = RescanGate(process_generation)  # the per-second rescan, if anything changed
        self.stopping = False
        self.stopped_by: str | None = None  # the signal that stopped the loop

    def sample_soon(self, keys: set[str]) -> None:
        """Have these targets sampled in the next wake (a source that covered them is gone)."""
        now = self.clock()
        for key in keys:
            if (target := self.targets.get(key)) is not None:
                target.next_sample_at = min(target.next_sample_at, now)

    def sample_all(self, source: str) -> None:
        now = self.clock()
        for target in list(self.targets.values()):
            self.sample_target(target, now, source)

    def sample_target(self, target: Target, now: float, source: str) -> Decision | None:
        """One visit: read → decide → signal → follow (threshold sources) → schedule → say. A
        target whose cgroup is removed, or found not to be the kernel's, ends here."""
        if target.key not in self.targets:
            return None  # ended earlier in this wake-up
        self.wakeups[source] += 1
        with self.watchlist.ending(target):
            return self._visit(target, now, source)
        return None

    def _visit(self, target: Target, now: float, source: str) -> Decision | None:
        try:
            sample = self.sampler.read(target, now)
        except (CgroupGone, CgroupRefused):
            raise  # the target ends (Watchlist.ending)
        except CgroupError as exc:
            self.actions.unreadable(target, exc)
            target.next_sample_at = now + self.polling.slowest
            return None
        if sample.percent is None:
            self.sources.follow_target(target, sample.memory)
            target.next_sample_at = now + self.polling.slowest
            self.actions.unlimited(target, sample, source)
            return None
        pressure = self.sampler.pressure(target, self.actions.no_pressure)
        decision = evaluate(target.thresholds, target.state, sample.percent, now, pressure)
        delivery = self.actions.signal(target, decision)  # first: nothing else delays it
        self.sources.follow_target(target, sample.memory)
        own, level, rate = target.settings, target.state.level, target.growth.rate
        covered = self.sources.covers(target.key, level)
        limit = sample.memory.limit
        delay = self.polling.delay(own, level, sample.value, limit, rate, covered, now)
        target.next_sample_at = now + delay
        self.actions.decided(target, sample, decision, source, delay, delivery)
        return decision

    def run(self, until: Callable[[], bool] = lambda: False, max_wait: float | None = None) -> None:
        """Loop until SIGTERM, SIGINT, SIGHUP or ``until()`` is true; listeners' tick() runs every
        iteration, at least every ``max_wait`` seconds when given."""
        with self.fds.stopping_on(STOP_SIGNALS, self._stop):
            next_scan = self.clock()
            while not self.stopping and not until():
                now = self.clock()
                if now >= next_scan and self.rescans.due(now):
                    self.watchlist.rescan()
                elif now >= self.watchlist.retry_at:
                    self.watchlist.retry()
                if now >= next_scan:
                    # On a grid from clock time 0, as covered and fixed polling's samples are:
                    # a rescan rides their wake-up instead of waking the loop on its own.
                    next_scan = now - now % self.rescan_interval + self.rescan_interval
                for target in due(self.targets.values(), now):
                    self.sample_target(target, now, self.polling.name)
                self.listeners.tick(self)
                deadline = min(
                    [
                        next_scan,
                        self.watchlist.retry_at,
                        *(t.next_sample_at for t in self.targets.values()),
                    ]
                )
                if max_wait is not None:
                    deadline = min(deadline, self.clock() + max_wait)
                for source, failed in self.fds.wait(deadline - self.clock()):
                    self._woken_by(source, failed)

    def _woken_by(self, source, failed: bool = False) -> None:
        now = self.clock()
        # A failed source is closed, and the targets it served sampled: a removed cgroup ends.
        keys = self.sources.failed(source) if failed else source.consume()
        for target in filter(None, map(self.targets.get, keys)):
            if source.name == "inotify":
                killed = self.sampler.news(target)
                self.actions.oom_killed(target, killed, target.events_seen.get("oom_kill"))
            if source.name == "ebpf":
                source.hand_over(target)
            self.sample_target(target, now, source.name)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.stopped_by = signal.Signals(signum).name

    def close(self) -> None:
        self.actions.close()
        self.sources.close()
        self.watchlist.close()
        self.fds.close()
