"""What both loaders of the charge probe (CO-RE in ``core``, bcc in ``bcc``) share: the map
value and event in user space's terms (a ``Crossing`` decoded from an event, a watch encoded from
thresholds in bytes, the armed bits as the policy sets them) and ``ProbeError``. The ctypes
layouts themselves are in ``maps``; the in-kernel check is bpf/memcg_threshold.h's.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from oomhero.sources.ebpf.maps import Event, Watch

PAGE = os.sysconf("SC_PAGE_SIZE")
ARMED_WARNING, ARMED_CRITICAL = 1, 2
# The armed bit of the next threshold above each policy level (0 ok, 1 warning, 2 critical).
NEXT_ARMED_BIT = (ARMED_WARNING, ARMED_CRITICAL, 0)


class ProbeError(Exception):
    """The probe cannot run here; the message says why."""


@dataclass(frozen=True)
class Crossing:
    """One event from the probe."""

    cgroup_id: int
    level: int  # 1 warning, 2 critical
    usage: int  # bytes, including the pages being charged
    ktime: float  # CLOCK_MONOTONIC seconds of the charge
    pid: int
    signalled: bool
    read_at: float  # CLOCK_MONOTONIC seconds when oomhero read the event


def watch_value(warning: int, critical: int, armed: int) -> Watch:
    """A map value for thresholds in bytes: the kernel's page counter counts pages."""
    return Watch(warning // PAGE, critical // PAGE, armed, 0)


def crossing_at(address: int, size: int, read_at: float) -> Crossing:
    """Decode the event a ring buffer hands over at ``address``, read at ``read_at``."""
    if size < ctypes.sizeof(Event):
        raise ProbeError(f"a {size}-byte event from the probe, expected {ctypes.sizeof(Event)}")
    event = Event.from_address(address)
    return Crossing(
        cgroup_id=event.cgroup_id,
        level=event.level,
        usage=event.usage_pages * PAGE,
        ktime=event.ktime_ns / 1e9,
        pid=event.pid,
        signalled=bool(event.signalled),
        read_at=read_at,
    )


def armed_for(level: int, usage: int, warning: int, critical: int) -> int:
    """Thresholds the probe watches for a target at policy ``level`` (0 ok, 1 warning,
    2 critical). The policy leaves a level only past its re-arm point, so this re-arms each
    threshold exactly when the hysteresis lets it go. A threshold that ``usage`` (bytes) has
    already reached stays disarmed: the probe compares usage, and where the policy's metric (the
    working set) is still below, it would fire at every charge, re-armed after each."""
    bits = 0
    if level == 0 and usage < warning:
        bits |= ARMED_WARNING
    if level <= 1 and usage < critical:
        bits |= ARMED_CRITICAL
    return bits


def first_line(exc: BaseException) -> str:
    """An exception as one bounded line, for a log line's ``why``."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
