"""What both loaders of the charge probe (CO-RE in ``core``, bcc in the package) share.

The map value and event layouts mirror bpf/memcg_threshold.h, and the in-kernel check is that
header's; here are the armed bits as the policy sets them, the decoding of an event into a
``Crossing``, and the checks that come before either loader: privilege and a charge function.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from oomhero.kernel.procfs import effective_capabilities, kernel_symbols_among

# The probe points, in the order tried. page_counter_try_charge(counter, nr_pages, fail) runs
# once per charge batch (64 pages: the memcg refills a per-CPU stock), for every kind of page
# counter (the probe checks it is a memcg's ``memory``); the memcg's own charge functions,
# (memcg, gfp_mask, nr_pages), run once per page: the fallback where the first cannot attach.
BATCH_FUNCTION = "page_counter_try_charge"
CHARGE_FUNCTIONS = (BATCH_FUNCTION, "try_charge_memcg", "try_charge")
PAGE = os.sysconf("SC_PAGE_SIZE")
ARMED_WARNING, ARMED_CRITICAL = 1, 2
LINE_WATCHED = 4  # watched levels a CPU's cached line holds (memcg_threshold.h)
# The armed bit of the next threshold above each policy level (0 ok, 1 warning, 2 critical).
NEXT_ARMED_BIT = (ARMED_WARNING, ARMED_CRITICAL, 0)
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


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


def layout(spec: str) -> tuple[tuple[str, type], ...]:
    """A C struct's fields for ctypes, from ``"u64 name, u32 other"`` as the header writes them."""
    kinds = {"u64": ctypes.c_uint64, "u32": ctypes.c_uint32}
    return tuple((name, kinds[kind]) for kind, name in (f.split() for f in spec.split(", ")))


class Watch(ctypes.Structure):
    """``struct watch``: the value of the ``watches`` map, keyed by cgroup id."""

    _fields_ = layout("u64 warning_pages, u64 critical_pages, u32 armed, u32 pad")


class Seen(ctypes.Structure):
    """``struct seen``: one CPU's value of the per-CPU ``seen`` map."""

    _fields_ = (
        *layout("u64 calls, u64 memcg, u64 usage_pages, u64 nr_pages, u64 line_memcg"),
        *layout("u64 line_id, u64 line_generation, u64 line_watched"),
        ("watched_memcg", ctypes.c_uint64 * LINE_WATCHED),
        ("watched_id", ctypes.c_uint64 * LINE_WATCHED),
    )


class Event(ctypes.Structure):
    """``struct event``: one record of the ``events`` ring buffer."""

    _fields_ = layout(
        "u64 cgroup_id, u64 usage_pages, u64 ktime_ns, u32 level, u32 pid, u32 signalled, u32 pad"
    )


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


def charge_functions(kallsyms: str = "/proc/kallsyms") -> list[str]:
    """The probe points this kernel has, in the order to try them (ProbeError: none)."""
    try:
        names = kernel_symbols_among(CHARGE_FUNCTIONS, kallsyms)
    except OSError as exc:
        raise ProbeError(f"cannot read {kallsyms}: {exc.strerror}") from None
    found = [name for name in CHARGE_FUNCTIONS if name in names]
    if not found:
        raise ProbeError(f"no memcg charge function to probe ({' or '.join(CHARGE_FUNCTIONS)})")
    return found


def may_load_kprobes() -> bool:
    """Whether this process may load tracing programs (fentry or kprobe)."""
    effective = effective_capabilities()

    def has(cap: int) -> bool:
        return bool(effective >> cap & 1)

    return has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))


def prerequisites() -> list[str]:
    """What either loader needs: the privilege, and a charge function; returns the functions
    to try."""
    if not may_load_kprobes():
        raise ProbeError("loading the probe needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN")
    return charge_functions()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
