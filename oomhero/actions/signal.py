"""Signalling a target: its chosen processes, through pidfds (PID-reuse safe), honest about
what the kernel refused."""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

from oomhero import log
from oomhero.actions.listener import Listeners
from oomhero.actions.report import Report, about_process
from oomhero.kernel.procfs import TrackedProcess, read_caught, read_proc
from oomhero.policy import Decision, Level

if TYPE_CHECKING:
    from oomhero.targets import Target


class SendResult(Enum):
    SENT = "sent"
    GONE = "gone"  # the process exited; its pid may already belong to someone else
    DENIED = "denied"
    UNCAUGHT = "uncaught"  # no handler: the default action (terminate, for SIGUSR1/2) would run


def send(
    process: TrackedProcess,
    sig: int,
    uncaught: bool = False,
    proc: str = "/proc",
    dry_run: bool = False,
) -> SendResult:
    """Signal ``process`` if it handles ``sig`` (its SigCgt, read now: a handler installed late
    counts), or whatever it does with ``uncaught``. Signal 0 only checks permission; a
    ``dry_run`` checks all the same and sends signal 0 in its place."""
    if process.pidfd < 0:
        return SendResult.GONE
    if sig and not uncaught:
        caught = read_caught(process.pid, proc)
        # The same start time afterwards: that status was this process's, not a newcomer's
        # with its pid (a pid never goes back to an exited process).
        again = read_proc(process.pid, proc)
        if caught is None or again is None or again.starttime != process.info.starttime:
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


class Signaller:
    """Sends a decision's signal to the target's chosen processes, and says what happened."""

    def __init__(
        self,
        signal_target: str,
        uncaught: bool,
        refresh: Callable[[Target], None],
        report: Report,
        listeners: Listeners,
        dry_run: bool = False,
    ) -> None:
        """``refresh(target)`` rescans the target's processes right before a signal: a process
        that started since the last scan (a new workload can cross both thresholds within one
        rescan interval) must get it too. Crossings are rare, so the scan's cost is too."""
        self.signal_target = signal_target
        self.uncaught = uncaught  # also processes without a handler (--signal-uncaught)
        self.refresh = refresh
        self.report = report
        self.listeners = listeners
        self.dry_run = dry_run  # --dry-run: everything but the signal itself

    def signal(self, target: Target, decision: Decision, fields: dict[str, object]) -> None:
        own = target.settings
        sig = own.critical_signal if decision.signal is Level.CRITICAL else own.warning_signal
        self.refresh(target)
        chosen = target.processes.chosen(self.signal_target)
        in_kernel, target.signalled_in_kernel = target.signalled_in_kernel, set()
        if decision.signal is Level.CRITICAL and in_kernel:
            # --bpf-signal: the probe already signalled the allocating process; once is enough.
            for pid in in_kernel:
                self._sent(target, decision, sig, pid, "kernel")
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
        threshold = decision.signal.label
        for process in chosen:
            result = send(process, sig, self.uncaught, dry_run=self.dry_run)
            about = about_process(process, sig)
            if result is SendResult.SENT and self.dry_run:
                self.report.not_sent_dry_run(about, threshold, decision.reason, fields)
            elif result is SendResult.SENT:
                self._sent(target, decision, sig, process.pid, "user")
                said = {"threshold": threshold, "reason": decision.reason, **fields}
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
