"""The event loop: wake up, sample each target, let the policy decide, signal.

One thread, one selector. Wake-ups come from the sampling interval (the selector's timeout) and
from registered ``WakeSource`` file descriptors — the plug-in point for kernel event sources
(inotify, PSI, eventfd, eBPF). A wake-up of any kind re-samples, so every source only needs to say
"now"; the policy then decides from the actual usage.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from collections.abc import Callable
from typing import Protocol

from oomhero import log
from oomhero.cgroup import CgroupError, MemorySample
from oomhero.config import WatchSettings
from oomhero.policy import Decision, Level, Thresholds, evaluate
from oomhero.signaller import SendResult, denied_hint, send
from oomhero.targets import Scanner, Target

MIB = 1024 * 1024


class WakeSource(Protocol):
    """A file descriptor that becomes readable when there is news; ``consume`` drains it and
    returns True when the targets should be sampled now."""

    name: str

    def fileno(self) -> int: ...

    def consume(self) -> bool: ...


class Engine:
    def __init__(
        self,
        scanner: Scanner,
        settings: WatchSettings,
        rescan_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scanner = scanner
        self.settings = settings
        self.thresholds = Thresholds(
            settings.warning, settings.critical, settings.hysteresis, settings.cooldown
        )
        self.rescan_interval = rescan_interval
        self.clock = clock
        self.targets: dict[str, Target] = {}
        self.unopened: dict[str, str] = {}  # key → why its reader could not be opened (said once)
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.scanned_once = False

    def add_source(self, source: WakeSource) -> None:
        self.selector.register(source.fileno(), selectors.EVENT_READ, source)

    def remove_source(self, source: WakeSource) -> None:
        self.selector.unregister(source.fileno())

    # -- scanning ---------------------------------------------------------------------------
    def rescan(self) -> None:
        found = self.scanner.scan()
        for key in list(self.targets):
            if key not in found:
                target = self.targets.pop(key)
                log.event(logging.INFO, "target gone", target=target.name)
                target.close()
        for key, item in found.items():
            target = self.targets.get(key)
            if target is None:
                target = self._open_target(key, item.name, item.open_reader)
                if target is None:
                    continue
            target.processes.sync(item.members)
        self.scanned_once = True

    def _open_target(self, key: str, name: str, open_reader: Callable) -> Target | None:
        try:
            reader = open_reader()
        except CgroupError as exc:
            if self.unopened.get(key) != exc.strerror:
                self.unopened[key] = exc.strerror
                log.event(logging.WARNING, "cannot read target", target=name, why=exc.strerror)
            return None
        self.unopened.pop(key, None)
        target = Target(key, name, reader)
        self.targets[key] = target
        log.event(logging.INFO, "watching target", target=name, cgroup=_where(reader))
        return target

    # -- sampling and acting ----------------------------------------------------------------
    def sample_all(self, source: str) -> None:
        now = self.clock()
        for target in list(self.targets.values()):
            self.sample_target(target, now, source)

    def sample_target(self, target: Target, now: float, source: str) -> Decision | None:
        try:
            sample = target.reader.sample()
        except (CgroupError, ValueError) as exc:
            self._say_once(target, "unreadable", logging.WARNING, "cannot sample", why=str(exc))
            return None
        target.said.discard("unreadable")
        target.last_sample = sample
        if sample.limit is None:
            self._say_once(
                target,
                "unlimited",
                logging.INFO,
                "no memory limit: never signalled",
                app=target.main_comm,
            )
            return None
        target.said.discard("unlimited")
        value = sample.value(self.settings.metric)
        # memory.max = 0 is legal on v2: nothing fits, so it is as critical as it gets.
        percent = value * 100.0 / sample.limit if sample.limit > 0 else 100.0
        decision = evaluate(self.thresholds, target.state, percent, now)
        fields = _sample_fields(target, sample, value, percent, source)
        if decision.changed:
            verb = "rose to" if decision.level > decision.previous else "fell to"
            note = " (skipped warning)" if decision.reason == "jumped" else ""
            level = logging.WARNING if decision.level > decision.previous else logging.INFO
            log.event(level, f"{verb} {decision.level.label}{note}", **fields)
        if decision.signal is not None:
            self._signal(target, decision, fields)
        return decision

    def _signal(self, target: Target, decision: Decision, fields: dict) -> None:
        sig = (
            self.settings.critical_signal
            if decision.signal is Level.CRITICAL
            else self.settings.warning_signal
        )
        chosen = target.processes.chosen(self.settings.signal_target)
        if not chosen:
            log.event(logging.WARNING, "no process to signal", signal=sig.name, **fields)
        for process in chosen:
            result = send(process, sig)
            if result is SendResult.SENT:
                log.event(
                    logging.WARNING,
                    "signal sent",
                    pid=process.pid,
                    comm=process.info.comm,
                    signal=sig.name,
                    threshold=decision.signal.label,
                    reason=decision.reason,
                    **fields,
                )
            elif result is SendResult.GONE:
                target.processes.forget(process.pid)
            else:
                self._say_once(
                    target,
                    f"denied:{process.pid}",
                    logging.ERROR,
                    "signal not permitted",
                    pid=process.pid,
                    signal=sig.name,
                    why=denied_hint(process),
                )

    def _say_once(self, target: Target, what: str, level: int, msg: str, **fields: object) -> None:
        if what not in target.said:
            target.said.add(what)
            log.event(level, msg, target=target.name, **fields)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        """Loop until SIGTERM/SIGINT or ``until()`` is true."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        previous_fd = signal.set_wakeup_fd(wake_w)
        handlers = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            next_scan = next_sample = self.clock()
            while not self.stopping and not until():
                now = self.clock()
                if now >= next_scan:
                    self.rescan()
                    next_scan = now + self.rescan_interval
                if now >= next_sample:
                    self.sample_all("poll")
                    next_sample = now + self.settings.interval
                timeout = max(0.0, min(next_scan, next_sample) - self.clock())
                for key, _ in self.selector.select(timeout):
                    if key.data is None:
                        _drain(wake_r)
                    elif key.data.consume():
                        self.sample_all(key.data.name)
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.selector.unregister(wake_r)
            os.close(wake_r)
            os.close(wake_w)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def close(self) -> None:
        for target in self.targets.values():
            target.close()
        self.targets.clear()
        self.selector.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _where(reader: object) -> str:
    path = getattr(reader, "path", None)
    if path is None:
        return "soft limit on process tree RSS (not enforced by the kernel)"
    return f"{path} (v{reader.version}, {reader.view} view)"


def _sample_fields(
    target: Target, sample: MemorySample, value: int, percent: float, source: str
) -> dict[str, object]:
    return {
        "target": target.name,
        "app": target.main_comm,
        "usage_mib": round(value / MIB, 1),
        "limit_mib": round(sample.limit / MIB, 1),
        "percent": round(percent, 1),
        "source": source,
    }
