"""The event loop: wake up, sample targets, let the policy decide, signal.

One thread, one epoll. Wake-ups come from each target's sampling schedule (epoll's timeout:
fixed ``--interval``, or adaptive polling that follows the headroom to the next threshold) and
from kernel sources (``oomhero.sources``: inotify, PSI, v1 eventfd) registered as file
descriptors. A wake-up of any kind re-samples the target it concerns, so a source only says
"now"; the policy decides from the actual usage, and the log says which source woke the loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections import Counter
from collections.abc import Callable

from oomhero import log
from oomhero.cgroup import CgroupDir, CgroupError, MemorySample
from oomhero.config import WatchSettings
from oomhero.policy import Decision, Level, Thresholds, evaluate, pressure_level
from oomhero.schedule import next_delay
from oomhero.signaller import SendResult, denied_hint, send
from oomhero.sources import WakeSources
from oomhero.targets import Scanner, Target

MIB = 1024 * 1024


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
        self.rescan_interval = rescan_interval
        self.clock = clock
        self.targets: dict[str, Target] = {}
        self.unopened: dict[str, str] = {}  # key → why its reader could not be opened (said once)
        self.epoll = select.epoll()
        self.handlers: dict[int, object] = {}
        self.sources = WakeSources(settings, self._register, self._unregister, self._say_globally)
        self.said: set[str] = set()  # engine-wide notes already logged
        self.wakeups: Counter[str] = Counter()  # samples taken, by what woke the loop
        self.rescan_due = False
        self.stopping = False
        self.scanned_once = False
        # Observers (metrics, webhook, the live view): objects with any of the methods
        # sampled(target, sample, percent, decision, source; percent and decision None without a
        # limit), signalled(target, level, signal, pid, where), skipped(target, level, signal,
        # pid: it has no handler for the signal), oom_killed(target, victims), detected(target,
        # source, seconds from the crossing charge), gone(target), tick(engine). Called on the
        # loop's thread; they must not block it.
        self.listeners: list[object] = []

    def _notify(self, event: str, *args: object) -> None:
        for listener in self.listeners:
            method = getattr(listener, event, None)
            if method is not None:
                method(*args)

    def add_source(self, source) -> None:
        """Another file descriptor for the loop: ``source`` has name, mask, fileno() and
        consume() → the keys of targets to sample now (may be empty)."""
        self._register(source)

    def _register(self, source) -> None:
        self.epoll.register(source.fileno(), source.mask)
        self.handlers[source.fileno()] = source

    def _unregister(self, source) -> None:
        self.epoll.unregister(source.fileno())
        del self.handlers[source.fileno()]

    @property
    def poll_name(self) -> str:
        return "poll" if self.settings.interval is not None else "adaptive"

    # -- scanning ---------------------------------------------------------------------------
    def rescan(self) -> None:
        found = self.scanner.scan()
        for key in list(self.targets):
            if key not in found:
                target = self.targets.pop(key)
                log.event(logging.INFO, "target gone", target=target.name)
                self._notify("gone", target)
                self.sources.detach(key)
                target.close()
        for key, item in found.items():
            target = self.targets.get(key)
            if target is None:
                target = self._open_target(key, item.name, item.open_reader, item.settings)
                if target is None:
                    continue
            target.processes.sync(item.members)
        self.scanned_once = True

    def _open_target(
        self, key: str, name: str, open_reader: Callable, settings: WatchSettings | None = None
    ) -> Target | None:
        try:
            reader = open_reader()
        except CgroupError as exc:
            if self.unopened.get(key) != exc.strerror:
                self.unopened[key] = exc.strerror
                log.event(logging.WARNING, "cannot read target", target=name, why=exc.strerror)
            return None
        self.unopened.pop(key, None)
        target = Target(key, name, reader, settings=settings or self.settings)
        self.targets[key] = target
        missing = {}
        if isinstance(reader, CgroupDir):
            missing = self.sources.attach(key, reader)
            target.events_seen = self._read_events(target)
            # v1 thresholds sit at byte values of the limit: register them before saying which
            # sources are active (sample errors are the first sample's to report).
            with contextlib.suppress(CgroupError, ValueError):
                self._follow(target, reader.sample())
        target.missing_sources = missing
        log.event(
            logging.INFO,
            "watching target",
            target=name,
            cgroup=_where(reader),
            sources=",".join(self.sources.active(key)) or "none",
            polling=self._polling_text(),
        )
        for note in self.sources.notes:
            self._say_once_globally(note, "source adjusted", why=note, target=name)
        self.sources.notes.clear()
        for source, why in missing.items():
            self._say_once_globally(
                f"{source}:{why}", "source unavailable", source=source, why=why, target=name
            )
        return target

    def _polling_text(self) -> str:
        s = self.settings
        if s.interval is not None:
            return f"fixed {s.interval:g}s"
        return f"adaptive {s.poll_floor:g}s..{s.poll_ceiling:g}s"

    # -- sampling and acting ----------------------------------------------------------------
    def sample_all(self, source: str) -> None:
        now = self.clock()
        for target in list(self.targets.values()):
            self.sample_target(target, now, source)

    def sample_target(self, target: Target, now: float, source: str) -> Decision | None:
        self.wakeups[source] += 1
        try:
            sample = target.reader.sample()
        except (CgroupError, ValueError) as exc:
            self._say_once(target, "unreadable", logging.WARNING, "cannot sample", why=str(exc))
            target.next_sample_at = now + self._slowest_interval()
            return None
        target.said.discard("unreadable")
        target.last_sample = sample
        value = sample.value(self.settings.metric)
        target.growth.update(value, now)
        crossing, target.crossing = target.crossing, None
        if sample.limit is None:
            self._follow(target, sample)
            self._say_once(
                target,
                "unlimited",
                logging.INFO,
                "no memory limit: never signalled",
                app=target.main_comm,
            )
            target.next_sample_at = now + self._slowest_interval()
            self._notify("sampled", target, sample, None, None, source)
            return None
        target.said.discard("unlimited")
        # memory.max = 0 is legal on v2: nothing fits, so it is as critical as it gets.
        percent = value * 100.0 / sample.limit if sample.limit > 0 else 100.0
        decision = evaluate(
            _thresholds(target.settings), target.state, percent, now, self._pressure(target)
        )
        self._follow(target, sample)
        delay = self._delay(target, value, sample.limit)
        target.next_sample_at = now + delay
        fields = _sample_fields(target, sample, value, percent, source)
        if crossing is not None:
            # What the probe saw at the charge itself, and how long until this sample.
            fields["probe_percent"] = round(crossing.usage * 100.0 / sample.limit, 1)
            since_charge = time.monotonic() - crossing.ktime
            fields["since_charge_ms"] = round(since_charge * 1000, 2)
            self._notify("detected", target, source, since_charge)
        if log.debugging():
            log.event(
                logging.DEBUG,
                "sampled",
                **fields,
                next_in=round(delay, 4),
                rate_mib_s=round(target.growth.rate / MIB, 1),
            )
        if decision.changed:
            verb = "rose to" if decision.level > decision.previous else "fell to"
            note = {"jumped": " (skipped warning)", "pressure": " (memory pressure)"}
            level = logging.WARNING if decision.level > decision.previous else logging.INFO
            log.event(
                level, f"{verb} {decision.level.label}{note.get(decision.reason, '')}", **fields
            )
        if decision.signal is not None:
            self._signal(target, decision, fields)
        self._notify("sampled", target, sample, percent, decision, source)
        return decision

    def _slowest_interval(self) -> float:
        return self.settings.interval or self.settings.poll_ceiling

    def _delay(self, target: Target, value: int, limit: int) -> float:
        """Fixed interval, or adaptive: sooner the faster usage nears the next threshold."""
        s = self.settings
        if s.interval is not None:
            return s.interval
        own = target.settings
        above = {Level.OK: own.warning, Level.WARNING: own.critical}.get(target.state.level)
        next_threshold = None if above is None else int(limit * above / 100)
        return next_delay(
            value, next_threshold, target.growth.rate, s.poll_floor, s.poll_ceiling, s.poll_burst
        )

    def _pressure(self, target: Target) -> Level:
        s = self.settings
        if s.warning_psi is None and s.critical_psi is None:
            return Level.OK
        pressure = target.reader.pressure() if isinstance(target.reader, CgroupDir) else None
        if pressure is None:
            self._say_once(
                target,
                "no-psi",
                logging.WARNING,
                "no memory.pressure: PSI conditions cannot apply to this target",
            )
        return pressure_level(s.warning_psi, s.critical_psi, pressure)

    def _follow(self, target: Target, sample: MemorySample) -> None:
        """Threshold-based sources (v1 eventfd, the eBPF probe) follow limit and level."""
        if not isinstance(target.reader, CgroupDir):
            return
        why = self.sources.follow(
            target.key, target.reader, sample.limit, target.state.level, target.settings
        )
        if why:
            self._say_once_globally(
                f"eventfd:{why}",
                "source unavailable",
                source="eventfd",
                why=why,
                target=target.name,
            )

    def _read_events(self, target: Target) -> dict[str, int]:
        try:
            return target.reader.events()
        except (CgroupError, ValueError):
            return {}

    def _on_events_modified(self, target: Target) -> None:
        """memory.events / cgroup.events changed: say what the kernel did, rescan if emptied."""
        events = self._read_events(target)
        killed = events.get("oom_kill", 0) - target.events_seen.get("oom_kill", 0)
        if killed > 0:
            log.event(
                logging.ERROR,
                "oom kill",
                target=target.name,
                victims=killed,
                total=events.get("oom_kill"),
                app=target.main_comm,
            )
            self._notify("oom_killed", target, killed)
        target.events_seen = events
        try:
            populated = "populated 0" in target.reader.read("cgroup.events")
        except CgroupError:
            populated = False
        if populated:
            self.rescan_due = True  # the container emptied: let the scan retire it now

    def _signal(self, target: Target, decision: Decision, fields: dict) -> None:
        own = target.settings
        sig = own.critical_signal if decision.signal is Level.CRITICAL else own.warning_signal
        self._refresh_members(target)
        chosen = target.processes.chosen(self.settings.signal_target)
        in_kernel, target.signalled_in_kernel = target.signalled_in_kernel, set()
        if decision.signal is Level.CRITICAL and in_kernel:
            # --bpf-signal: the probe already signalled the allocating process; once is enough.
            for pid in in_kernel:
                target.last_signal = (sig.name, time.time())
                self._notify("signalled", target, decision.signal, sig.name, pid, "kernel")
                log.event(
                    logging.WARNING,
                    "signal sent in the kernel",
                    pid=pid,
                    signal=sig.name,
                    threshold="critical",
                    **fields,
                )
            chosen = [p for p in chosen if p.pid not in in_kernel]
        if not chosen and not in_kernel:
            log.event(logging.WARNING, "no process to signal", signal=sig.name, **fields)
        for process in chosen:
            result = send(process, sig, self.settings.signal_uncaught)
            if result is SendResult.SENT:
                target.last_signal = (sig.name, time.time())
                self._notify("signalled", target, decision.signal, sig.name, process.pid, "user")
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
            elif result is SendResult.UNCAUGHT:
                # Checked again at every crossing and cooldown; said once per process and level.
                self._notify("skipped", target, decision.signal, sig.name, process.pid)
                self._say_once(
                    target,
                    f"uncaught:{process.pid}:{process.info.starttime}:{decision.signal.label}",
                    logging.WARNING,
                    "not signalled",
                    pid=process.pid,
                    comm=process.info.comm,
                    signal=sig.name,
                    threshold=decision.signal.label,
                    why=f"pid {process.pid} ({process.info.comm}) does not handle {sig.name}",
                )
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

    def _refresh_members(self, target: Target) -> None:
        """Scan again before signalling: a process that started since the last scan (a new
        workload can cross both thresholds within one rescan interval) must get the signal too.
        Crossings are rare, so the scan's cost is too."""
        item = self.scanner.scan().get(target.key)
        if item is not None:
            target.processes.sync(item.members)

    def _say_once(self, target: Target, what: str, level: int, msg: str, **fields: object) -> None:
        if what not in target.said:
            target.said.add(what)
            log.event(level, msg, target=target.name, **fields)

    def _say_globally(self, msg: str, **fields: object) -> None:
        log.event(logging.INFO, msg, **fields)

    def _say_once_globally(self, what: str, msg: str, **fields: object) -> None:
        if what not in self.said:
            self.said.add(what)
            log.event(logging.INFO, msg, **fields)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, until: Callable[[], bool] = lambda: False, max_wait: float | None = None) -> None:
        """Loop until SIGTERM/SIGINT or ``until()`` is true; listeners' tick() runs every
        iteration, at least every ``max_wait`` seconds when given."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(wake_r, select.EPOLLIN)
        previous_fd = signal.set_wakeup_fd(wake_w)
        handlers = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
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
                        self.sample_target(target, now, self.poll_name)
                self._notify("tick", self)
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
                self._on_events_modified(target)
            if source.name == "ebpf":
                target.crossing = source.crossings.pop(key, None)
                if target.crossing and target.crossing.signalled:
                    target.signalled_in_kernel.add(target.crossing.pid)
            self.sample_target(target, now, source.name)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def close(self) -> None:
        self.sources.close()
        for target in self.targets.values():
            target.close()
        self.targets.clear()
        self.epoll.close()


def _thresholds(settings: WatchSettings) -> Thresholds:
    return Thresholds(settings.warning, settings.critical, settings.hysteresis, settings.cooldown)


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
