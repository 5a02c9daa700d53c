"""The loop, as earlyoom's: wait for a wake-up (a source, or polling's timeout), then for each
target it concerns read → decide → act. A source only says "now": the policy decides from usage.
``with Engine(scanner, settings) as engine: engine.run()`` closes all it opened, outputs too."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable

from oomhero.actions import Actions
from oomhero.actions.listener import Listeners
from oomhero.actions.report import Report
from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import CgroupError, CgroupGone, CgroupRefused
from oomhero.policy import Decision, evaluate
from oomhero.sampler import Sampler
from oomhero.sources.base import Wake
from oomhero.sources.epoll import STOP_SIGNALS, Epoll
from oomhero.sources.polling import Polling, due
from oomhero.targets import Scanner, Target
from oomhero.watchlist import Watchlist


class Engine:
    def __init__(
        self,
        scanner: Scanner,
        settings: WatchSettings,
        rescan_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.rescan_interval, self.clock = settings, rescan_interval, clock
        self.epoll = Epoll()  # what the loop waits on: every source's descriptors (top's keys)
        self.listeners, report, self.polling = Listeners(), Report(), Polling(settings)
        self.sampler = Sampler(settings, lambda: self.listeners.wants_page_cache)
        self.watchlist = Watchlist(scanner, settings, self.epoll, self.sampler, report,
                                   self.listeners, self.polling.describe(), clock,
                                   rescan_interval)  # fmt: skip
        self.sources = self.watchlist.sources  # what wakes the loop for each target
        self.actions = Actions(settings, self.watchlist.refresh, self.listeners, report)
        self.targets = self.watchlist.targets
        self.samples_by_wakeup: Counter[str] = Counter()  # by the source that woke the loop
        self.outputs: list[Callable[[], None]] = []  # closers of its outputs (metrics, webhook)
        self.stopping, self.stopped_by = False, None  # and the signal that stopped the loop

    def sample_target(self, target: Target, now: float, wake: Wake) -> Decision | None:
        """One visit, read → decide → act, for what ``wake`` says. A target whose cgroup is
        removed, or is not the kernel's, ends here."""
        if target.key not in self.targets:
            return None  # ended earlier in this wake-up
        self.samples_by_wakeup[wake.source] += 1
        with self.watchlist.ending(target):
            return self._visit(target, now, wake.source, wake.crossings.get(target.key))
        return None

    def _visit(self, target: Target, now: float, source: str, crossing: object) -> Decision | None:
        try:
            sample = self.sampler.read(target, now)
        except (CgroupGone, CgroupRefused):
            raise  # the target ends (Watchlist.ending)
        except CgroupError as exc:
            self.actions.unreadable(target, exc)
            target.next_sample_at = now + self.polling.slowest
            return None
        if sample.percent is None:
            self.sources.follow(target, sample.memory)
            target.next_sample_at = now + self.polling.slowest
            self.actions.unlimited(target, sample, source)
            return None
        pressure = self.sampler.pressure(target, self.actions.no_pressure)
        decision = evaluate(target.thresholds, target.state, sample.percent, now, pressure)
        if decision.signal is not None:  # the crossing's own event may be queued since the wake
            crossing = self.sources.queued(target.key) or crossing  # (who the probe signalled)
        delivery = self.actions.signal(target, decision, crossing)  # first: nothing delays it
        covered = self.sources.follow(target, sample.memory)
        delay = self.polling.after(target, sample.value, sample.memory.limit, covered, now)
        target.next_sample_at = now + delay
        self.actions.decided(target, sample, decision, source, delay, delivery, crossing)
        return decision

    def run(self, until: Callable[[], bool] = lambda: False, max_wait: float | None = None) -> None:
        """Loop until SIGTERM, SIGINT, SIGHUP or ``until()`` is true; listeners' tick() runs every
        iteration, at least every ``max_wait`` seconds when given."""
        with self.epoll.stopping_on(STOP_SIGNALS, self._stop):
            self.watchlist.next_scan, polled = self.clock(), Wake(set(), self.polling.name)
            while not self.stopping and not until():
                now = self.clock()
                upkeep = self.watchlist.upkeep(now)  # who is there to watch
                for target in due(self.targets.values(), now):
                    self.sample_target(target, now, polled)
                self.listeners.tick(self)
                deadline = min([upkeep, *(t.next_sample_at for t in self.targets.values())])
                if max_wait is not None:
                    deadline = min(deadline, self.clock() + max_wait)
                for member, failed in self.epoll.wait(deadline - self.clock()):
                    self._woken_by(member, failed)

    def _woken_by(self, member: object, failed: bool = False) -> None:
        now, wake = self.clock(), self.sources.woken(member, failed)
        for target in filter(None, map(self.targets.get, wake.keys)):
            if wake.events_changed:
                killed = self.sampler.news(target)
                self.actions.oom_killed(target, killed, target.events_seen.get("oom_kill"))
            self.sample_target(target, now, wake)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping, self.stopped_by = True, signal.Signals(signum).name

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for close in (self.actions.close, self.sources.close, self.watchlist.close,
                      self.epoll.close, *self.outputs):  # fmt: skip
            close()
