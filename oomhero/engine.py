"""The loop: wait for a wake-up, sample the targets it concerns, let the policy decide, act.

One thread, one epoll. Wake-ups are the polling schedule (epoll's timeout) and kernel sources
(``oomhero.sources``) registered as file descriptors; either way the woken target is sampled,
so a source only says "now" and the policy decides from the actual usage.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections import Counter
from collections.abc import Callable

from oomhero.actions import Actions
from oomhero.actions.listener import Listeners
from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import CgroupError
from oomhero.policy import Decision, Level, evaluate
from oomhero.sampler import Sampler
from oomhero.sources import WakeSources
from oomhero.sources.polling import Polling
from oomhero.targets import Scanner, Target
from oomhero.targets.watchlist import Watchlist

# A clean stop on each. SIGHUP does not reload: the settings are env vars and flags, which no
# one can change in a running process, so there would be nothing new to read.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Engine:
    def __init__(
        self,
        scanner: Scanner,
        settings: WatchSettings,
        rescan_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.rescan_interval, self.clock = settings, rescan_interval, clock
        self.epoll = select.epoll()
        self.handlers: dict[int, object] = {}  # fd → source
        self.listeners = Listeners()
        self.polling = Polling(settings)
        self.sampler = Sampler(settings)
        self.actions = Actions(settings, self._refresh, self.listeners)
        report = self.actions.report
        self.sources = WakeSources(
            settings, self.add_source, self._unregister, report.globally, report.once_globally
        )
        self.watchlist = Watchlist(
            scanner, settings, self.sources, self.sampler, report, self.listeners,
            self.polling.describe(),
        )  # fmt: skip
        self.targets, self.unopened = self.watchlist.targets, self.watchlist.unopened
        self.wakeups: Counter[str] = Counter()  # samples taken, by what woke the loop
        self.rescan_due = self.stopping = False
        self.stopped_by: str | None = None  # the signal that stopped the loop

    def add_source(self, source) -> None:
        """A file descriptor for the loop: ``source`` has name, mask, fileno() and consume() →
        the keys of targets to sample now (may be empty)."""
        self.epoll.register(source.fileno(), source.mask)
        self.handlers[source.fileno()] = source

    def _unregister(self, source) -> None:
        self.epoll.unregister(source.fileno())
        del self.handlers[source.fileno()]

    def _refresh(self, target: Target) -> None:
        self.watchlist.refresh(target)

    @property
    def scanned_once(self) -> bool:
        return self.watchlist.scanned_once

    def rescan(self) -> None:
        self.watchlist.rescan()

    def sample_all(self, source: str) -> None:
        now = self.clock()
        for target in list(self.targets.values()):
            self.sample_target(target, now, source)

    def sample_target(self, target: Target, now: float, source: str) -> Decision | None:
        """One visit: read → decide → follow (threshold sources) → schedule → act."""
        self.wakeups[source] += 1
        report, slowest = self.actions.report, self.polling.slowest
        try:
            sample = self.sampler.read(target, now)
        except (CgroupError, ValueError) as exc:
            report.once(target, "unreadable", logging.WARNING, "cannot sample", why=str(exc))
            target.next_sample_at = now + slowest
            return None
        report.clear(target, "unreadable")
        crossing, target.crossing = target.crossing, None
        if sample.percent is None:
            self.sources.follow_target(target, sample.memory)
            target.next_sample_at = now + slowest
            self.actions.unlimited(target, sample, source)
            return None
        report.clear(target, "unlimited")
        pressure = self.sampler.pressure(target)
        if pressure is None:
            msg = "no memory.pressure: PSI conditions cannot apply to this target"
            report.once(target, "no-psi", logging.WARNING, msg)
            pressure = Level.OK
        decision = evaluate(target.thresholds, target.state, sample.percent, now, pressure)
        self.sources.follow_target(target, sample.memory)
        limit, level = sample.memory.limit, target.state.level
        delay = self.polling.delay(target.settings, level, sample.value, limit, target.growth.rate)
        target.next_sample_at = now + delay
        self.actions.decided(target, sample, decision, source, crossing, delay)
        return decision

    def run(self, until: Callable[[], bool] = lambda: False, max_wait: float | None = None) -> None:
        """Loop until SIGTERM, SIGINT, SIGHUP or ``until()`` is true; listeners' tick() runs every
        iteration, at least every ``max_wait`` seconds when given."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(wake_r, select.EPOLLIN)
        previous_fd = signal.set_wakeup_fd(wake_w)
        handlers = {s: signal.signal(s, self._stop) for s in STOP_SIGNALS}
        try:
            next_scan = self.clock()
            while not self.stopping and not until():
                now = self.clock()
                if now >= next_scan or self.rescan_due:
                    self.rescan_due = False
                    self.rescan()
                    next_scan = now + self.rescan_interval
                for target in list(self.targets.values()):
                    if now >= target.next_sample_at:
                        self.sample_target(target, now, self.polling.name)
                self.listeners.tick(self)
                deadline = min([next_scan, *(t.next_sample_at for t in self.targets.values())])
                if max_wait is not None:
                    deadline = min(deadline, self.clock() + max_wait)
                for fd, _ in self.epoll.poll(max(0.0, deadline - self.clock())):
                    if fd == wake_r:
                        _drain(wake_r)
                    elif fd in self.handlers:
                        self._woken_by(self.handlers[fd])
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.epoll.unregister(wake_r)
            os.close(wake_r)
            os.close(wake_w)

    def _woken_by(self, source) -> None:
        now = self.clock()
        for key in source.consume():
            target = self.targets.get(key)
            if target is None:
                continue
            if source.name == "inotify":
                killed, emptied = self.sampler.news(target)
                if killed > 0:
                    self.actions.oom_killed(target, killed, target.events_seen.get("oom_kill"))
                self.rescan_due |= emptied  # the container emptied: let the scan retire it now
            if source.name == "ebpf":
                source.hand_over(key, target)
            self.sample_target(target, now, source.name)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.stopped_by = signal.Signals(signum).name

    def close(self) -> None:
        self.sources.close()
        self.watchlist.close()
        self.epoll.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
