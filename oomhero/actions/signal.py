"""Signalling a target: its chosen processes, through pidfds (PID-reuse safe), honest about
what the kernel refused."""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from oomhero import log
from oomhero.actions.listener import Listeners
from oomhero.actions.report import Report, about_process
from oomhero.kernel.procfs import TrackedProcess
from oomhero.policy import Decision, Level

if TYPE_CHECKING:
    from oomhero.targets import Target


class SendResult(Enum):
    SENT = "sent"
    GONE = "gone"  # the process exited; its pid may already belong to someone else
    DENIED = "denied"
    UNCAUGHT = "uncaught"  # no handler: the default action (terminate, for SIGUSR1/2) would run


def send(
    process: TrackedProcess, sig: int, uncaught: bool = False, dry_run: bool = False
) -> SendResult:
    """Signal ``process`` if it handles ``sig`` (its SigCgt, read now from its own status: a
    handler installed late counts), or whatever it does with ``uncaught``. Signal 0 only
    checks permission; a ``dry_run`` checks all the same and sends signal 0 in its place."""
    if process.pidfd < 0:
        return SendResult.GONE
    if sig and not uncaught:
        caught = process.caught()
        if caught is None:
            return SendResult.GONE
        if not caught >> (sig - 1) & 1:
            return SendResult.UNCAUGHT
    try:
        signal.pidfd_send_signal(process.pidfd, 0 if dry_run else sig)
    except ProcessLookupError:
        return SendResult.GONE
    except PermissionError:
        return SendResult.DENIED
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return SendResult.GONE
        raise
    return SendResult.SENT


def denied_hint(process: TrackedProcess) -> str:
    """Why the kernel likely refused: kill(2) needs the same UID or CAP_KILL."""
    me = os.geteuid()
    if me != process.info.uid:
        return (
            f"pid {process.pid} belongs to uid {process.info.uid} and oomhero runs as uid {me}: "
            "run oomhero as the same UID as the app, or grant it CAP_KILL"
        )
    return f"pid {process.pid} refused the signal: grant oomhero CAP_KILL"


@dataclass
class Sent:
    """One process's outcome, and when (monotonic) its ``pidfd_send_signal`` returned."""

    process: TrackedProcess
    result: SendResult
    at: float


@dataclass
class Delivery:
    """What a decision's signal did, in the order it was sent: said once it has left."""

    sig: signal.Signals
    sent: list[Sent] = field(default_factory=list)
    in_kernel: set[int] = field(default_factory=set)  # pids --bpf-signal reached (critical)


class Signaller:
    """Sends a decision's signal to the target's chosen processes (``deliver``: nothing else
    before it leaves), then says what happened (``say``)."""

    def __init__(
        self,
        signal_target: str,
        uncaught: bool,
        refresh: Callable[[Target], None],
        report: Report,
        listeners: Listeners,
        dry_run: bool = False,
    ) -> None:
        """``refresh(target)`` looks for processes that started in the target since it was
        last scanned (a new workload can cross both thresholds within one rescan interval):
        they get the signal too, after the known ones."""
        self.signal_target = signal_target
        self.uncaught = uncaught  # also processes without a handler (--signal-uncaught)
        self.refresh = refresh
        self.report = report
        self.listeners = listeners
        self.dry_run = dry_run  # --dry-run: everything but the signal itself

    def deliver(
        self, target: Target, decision: Decision, in_kernel: frozenset[int] = frozenset()
    ) -> Delivery:
        """The hot path: the known processes first, then newcomers; no log line is built and
        no listener runs until ``say``. ``in_kernel``: pids the probe signalled itself."""
        own = target.settings
        sig = own.critical_signal if decision.signal is Level.CRITICAL else own.warning_signal
        # --bpf-signal: the probe already signalled the allocating process; once is enough.
        skip = set(in_kernel) if decision.signal is Level.CRITICAL else set()
        delivery = Delivery(sig, in_kernel=skip)
        tried = set(skip)
        for attempt in range(2):
            if attempt:
                self.refresh(target)
            for process in target.processes.chosen(self.signal_target):
                if process.pid not in tried:
                    tried.add(process.pid)
                    result = send(process, sig, self.uncaught, self.dry_run)
                    delivery.sent.append(Sent(process, result, time.monotonic()))
        return delivery

    def say(
        self,
        target: Target,
        decision: Decision,
        delivery: Delivery,
        fields: dict[str, object],
        read_at: float | None = None,
    ) -> None:
        """The log lines (one per signal sent) and the listeners, after the signal left.
        ``read_at``: when the probe's event that led here was read (monotonic), for each
        line's ``handoff_ms``."""
        sig, threshold = delivery.sig, decision.signal.label
        for pid in sorted(delivery.in_kernel):
            self._sent(target, decision, sig, pid, "kernel")
            log.event(
                logging.WARNING,
                "signal sent in the kernel",
                pid=pid,
                signal=sig.name,
                threshold="critical",
                **fields,
            )
        if not delivery.in_kernel and all(s.result is SendResult.GONE for s in delivery.sent):
            log.event(logging.WARNING, "no process to signal", signal=sig.name, **fields)
        for sent in delivery.sent:
            process, result = sent.process, sent.result
            about = about_process(process, sig)
            if result is SendResult.SENT and self.dry_run:
                self.report.not_sent_dry_run(about, threshold, decision.reason, fields)
            elif result is SendResult.SENT:
                self._sent(target, decision, sig, process.pid, "user")
                said = {"threshold": threshold, "reason": decision.reason, **fields}
                if read_at is not None:
                    said["handoff_ms"] = round((sent.at - read_at) * 1000, 3)
                log.event(logging.WARNING, "signal sent", **about, **said)
            elif result is SendResult.GONE:
                target.processes.forget(process.pid)
            elif result is SendResult.UNCAUGHT:
                # Checked again at every crossing and cooldown; said once per process and level.
                self.listeners.skipped(target, decision.signal, sig.name, process.pid)
                what = f"uncaught:{process.pid}:{process.info.starttime}:{threshold}"
                why = f"pid {process.pid} ({about['comm']}) does not handle {sig.name}"
                msg = "not signalled"
                self.report.once(
                    target, what, logging.WARNING, msg, **about, threshold=threshold, why=why
                )
            else:
                what, why = f"denied:{process.pid}", denied_hint(process)
                self.report.once(
                    target, what, logging.ERROR, "signal not permitted", **about, why=why
                )

    def _sent(
        self, target: Target, decision: Decision, sig: signal.Signals, pid: int, where: str
    ) -> None:
        target.last_signal = (sig.name, time.time())
        self.listeners.signalled(target, decision.signal, sig.name, pid, where)
