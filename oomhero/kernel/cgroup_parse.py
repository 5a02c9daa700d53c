"""What a memory cgroup's files hold, parsed from bytes: decimal numbers in ASCII digits only,
``key value`` lines of that shape only, and nothing of what a file held in an error."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from oomhero.kernel.cgroupfs import CgroupError

# v1 reports "no limit" as PAGE_COUNTER_MAX pages (0x7FFFFFFFFFFFF000 on x86-64); anything this
# large cannot be a real limit.
V1_UNLIMITED_FLOOR = 1 << 62
_NUMBER = re.compile(rb"[0-9]+")
_PAIR = re.compile(rb"([A-Za-z0-9_]+) (-?[0-9]+)")
_PRESSURE = re.compile(
    rb"(some|full) avg10=([0-9]+\.[0-9]+) avg60=([0-9]+\.[0-9]+) avg300=([0-9]+\.[0-9]+) "
    rb"total=([0-9]+)"
)


@dataclass(frozen=True)
class MemorySample:
    current: int
    limit: int | None  # None: no limit
    inactive_file: int

    @property
    def working_set(self) -> int:
        # As kubelet and cAdvisor compute it: page cache that is easy to reclaim does not count.
        return max(self.current - self.inactive_file, 0)

    def value(self, metric: str) -> int:
        return self.working_set if metric == "working-set" else self.current


def parse_number(data: bytes, name: str) -> int:
    """A file holding one decimal number in ASCII digits (nothing else but its newline)."""
    data = data.strip(b" \n")
    if not _NUMBER.fullmatch(data):
        raise CgroupError(errno.EINVAL, f"{name} does not hold a number")
    return int(data)


def parse_limit(data: bytes, name: str = "the limit") -> int | None:
    if data.strip(b" \n") == b"max":
        return None
    value = parse_number(data, name)
    return None if value >= V1_UNLIMITED_FLOOR else value


def parse_flat_keyed(data: bytes) -> dict[str, int]:
    """``key value`` lines (memory.stat, memory.events, memory.oom_control); a
    line of any other shape is skipped."""
    result: dict[str, int] = {}
    for line in data.split(b"\n"):
        match = _PAIR.fullmatch(line.strip())
        if match:
            result[match.group(1).decode()] = int(match.group(2))
    return result


def parse_pressure(data: bytes) -> dict[str, dict[str, float]]:
    """``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` lines → {"some": {"avg10": 0.0, ...}}."""
    result: dict[str, dict[str, float]] = {}
    for line in data.split(b"\n"):
        match = _PRESSURE.fullmatch(line.strip())
        if match:
            kind, avg10, avg60, avg300, total = match.groups()
            result[kind.decode()] = {
                "avg10": float(avg10),
                "avg60": float(avg60),
                "avg300": float(avg300),
                "total": float(total),
            }
    return result


def parse_pids(data: bytes, name: str = "cgroup.procs") -> list[int]:
    return [parse_number(line, name) for line in data.split()]
