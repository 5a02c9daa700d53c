"""Sending signals through pidfds: PID-reuse safe, and honest about what the kernel refused."""

from __future__ import annotations

import errno
import os
import signal
from enum import Enum

from oomhero.processes import TrackedProcess, read_caught


class SendResult(Enum):
    SENT = "sent"
    GONE = "gone"  # the process exited; its pid may already belong to someone else
    DENIED = "denied"
    UNCAUGHT = "uncaught"  # no handler: the default action (terminate, for SIGUSR1/2) would run


def send(
    process: TrackedProcess, sig: int, uncaught: bool = False, proc: str = "/proc"
) -> SendResult:
    """Signal ``process`` if it handles ``sig`` (its SigCgt, read now: a handler installed late
    counts), or whatever it does with ``uncaught``."""
    if process.pidfd < 0:
        return SendResult.GONE
    if not uncaught:
        caught = read_caught(process.pid, proc)
        if caught is None:
            return SendResult.GONE
        if not caught >> (sig - 1) & 1:
            return SendResult.UNCAUGHT
    try:
        signal.pidfd_send_signal(process.pidfd, sig)
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
