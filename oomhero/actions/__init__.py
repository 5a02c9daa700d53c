"""What oomhero does with a decision: log it, signal the target, tell the listeners."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from oomhero import log
from oomhero.actions.listener import Listeners
from oomhero.actions.report import MIB, Report
from oomhero.actions.signal import Delivery, Signaller
from oomhero.kernel.kmsg import KernelLog
from oomhero.policy import Decision

if TYPE_CHECKING:
    from oomhero.config import WatchSettings
    from oomhero.sampler import Sample
    from oomhero.sources.ebpf import Crossing
    from oomhero.targets import Target


class Actions:
    def __init__(
        self,
        settings: WatchSettings,
        refresh: Callable[[Target], None],
        listeners: Listeners,
        report: Report,
    ) -> None:
        self.listeners = listeners
        self.report = report
        self.kernel_log = KernelLog()  # who the OOM killer killed, where the kernel says
        self.signaller = Signaller(
            settings.signal_target,
            settings.signal_uncaught,
            refresh,
            self.report,
            listeners,
            settings.dry_run,
        )

    def unreadable(self, target: Target, error: Exception) -> None:
        self.report.once(target, "unreadable", logging.WARNING, "cannot sample", why=str(error))

    def no_pressure(self, target: Target) -> None:
        msg = "no memory.pressure: PSI conditions cannot apply to this target"
        self.report.once(target, "no-psi", logging.WARNING, msg)

    def signal(
        self, target: Target, decision: Decision, crossing: Crossing | None = None
    ) -> Delivery | None:
        """The decision's signal, sent at once (the hot path: nothing is logged and no listener
        runs before it leaves); ``decided`` then says it. ``crossing``: the probe's event that
        woke this sample; a process it signalled itself (--bpf-signal) is not signalled again."""
        if decision.signal is None:
            return None
        in_kernel = frozenset({crossing.pid} if crossing is not None and crossing.signalled else ())
        return self.signaller.deliver(target, decision, in_kernel)

    def decided(
        self,
        target: Target,
        sample: Sample,
        decision: Decision,
        source: str,
        next_in: float,
        delivery: Delivery | None = None,
        crossing: Crossing | None = None,
    ) -> None:
        """Say what a sample found and what was done: ``delivery`` is what ``signal`` sent for
        this decision (None when it has no signal), ``crossing`` the probe's event that woke
        it."""
        self.report.clear(target, "unreadable")
        self.report.clear(target, "unlimited")
        if crossing is None and not decision.changed and decision.signal is None:
            # The common case, an idle target: no log line to build unless debug is on.
            if log.debugging():
                self.report.sampled(
                    _sample_fields(target, sample, source), next_in, target.growth.rate
                )
        else:
            self._loud(target, sample, decision, source, next_in, crossing, delivery)
        self.listeners.sampled(target, sample.memory, sample.percent, decision, source)

    def _loud(
        self,
        target: Target,
        sample: Sample,
        decision: Decision,
        source: str,
        next_in: float,
        crossing: Crossing | None,
        delivery: Delivery | None,
    ) -> None:
        """A sample that says something: a probe's crossing, a level change, a signal."""
        fields = _sample_fields(target, sample, source)
        if crossing is not None:
            # What the probe saw at the charge itself, and how long until this sample.
            fields["probe_percent"] = round(crossing.usage * 100.0 / sample.memory.limit, 1)
            since_charge = time.monotonic() - crossing.ktime
            fields["since_charge_ms"] = round(since_charge * 1000, 2)
            self.listeners.detected(target, source, since_charge)
        self.report.sampled(fields, next_in, target.growth.rate)
        if decision.changed:
            self.report.level_changed(decision, fields)
        if delivery is not None:
            read_at = crossing.read_at if crossing is not None else None
            self.signaller.say(target, decision, delivery, fields, read_at)
            self.listeners.crossed(target, sample, decision, source)

    def unlimited(self, target: Target, sample: Sample, source: str) -> None:
        self.report.clear(target, "unreadable")
        if "unlimited" not in target.said:  # the app's name is read only for the line
            msg = "no memory limit: never signalled"
            self.report.once(target, "unlimited", logging.INFO, msg, app=target.main_comm)
        self.listeners.sampled(target, sample.memory, None, None, source)

    def oom_killed(self, target: Target, victims: int, total: int | None) -> None:
        if victims <= 0:
            return
        paths = [target.name, getattr(target.reader, "path", "")]
        named = self.kernel_log.claim(paths) if self.kernel_log.fd is not None else []
        self.report.oom_killed(target, victims, total, named, self.kernel_log.why)
        self.listeners.oom_killed(target, victims)

    def close(self) -> None:
        self.kernel_log.close()


def _sample_fields(target: Target, sample: Sample, source: str) -> dict[str, object]:
    return {
        "target": target.name,
        "app": target.main_comm,
        "usage_mib": round(sample.value / MIB, 1),
        "limit_mib": round(sample.memory.limit / MIB, 1),
        "percent": round(sample.percent, 1),
        "source": source,
    }
