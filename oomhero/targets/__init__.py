"""Who we watch: targets (one memory cgroup each, i.e. one container) and what finds them.

- ``pod.py``: sidecar mode, every other container of the pod;
- ``cgroups.py``: chosen cgroups or PIDs (watch, top, run), or a process tree under a soft limit;
- ``node.py``: node mode, opted-in containers of any runtime;
- ``launched.py``: a command started under a limit (run, demo).

``oomhero.watchlist`` keeps the targets the scanners find open, with their sources.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import MemorySample
from oomhero.kernel.procfs import ProcessSet, ProcInfo, current_comm
from oomhero.policy import PolicyState, Thresholds

# Weight of the newest rate in a target's running growth estimate.
ALPHA = 0.5


class Reader(Protocol):
    """What the engine samples: a cgroup directory, or a process tree under a soft limit."""

    @property
    def key(self) -> str:
        """What it is, whatever it is called: a cgroup's (device, inode), a process tree's root
        pid. Two readers with one key are one target."""
        ...

    def sample(self) -> MemorySample: ...

    def alive(self) -> bool:
        """False once it is gone for good (a cgroup removed, a process tree exited)."""
        ...

    def close(self) -> None: ...


@dataclass
class Found:
    """One target as a scan saw it: its members now, and how to open its reader (once)."""

    name: str
    members: list[ProcInfo]
    open_reader: Callable[[], Reader]
    settings: WatchSettings | None = None  # this target's own, where it has any (node mode)
    identity: str | None = None  # the reader's key, where the scan knows it without opening
    # How its reader lists the target's processes now (a cgroup's cgroup.procs through its open
    # directory): a look for newcomers right before a signal, without a /proc walk.
    pids: Callable[[Reader], list[int]] | None = None


class Scanner(Protocol):
    def scan(self) -> dict[str, Found]:
        """What is there to watch now, by a name the scanner gives each (a cgroup path, a
        command-line spec): a name says where to look, the reader opened says what it is."""
        ...

    def close(self) -> None:
        """Release what the scanner keeps open between scans."""
        ...


@dataclass
class GrowthEstimate:
    """Recent growth rate of a target's usage, bytes per second."""

    last_value: int | None = None
    last_time: float | None = None
    rate: float = 0.0

    def update(self, value: int, now: float) -> float:
        if self.last_value is not None and self.last_time is not None and now > self.last_time:
            instant = (value - self.last_value) / (now - self.last_time)
            smoothed = ALPHA * instant + (1 - ALPHA) * self.rate
            # A sudden burst must not be averaged away: the faster of the two counts.
            self.rate = max(instant, smoothed)
        self.last_value, self.last_time = value, now
        return self.rate


@dataclass
class Target:
    key: str  # its reader's key: the identity of what is watched
    name: str
    reader: Reader
    settings: WatchSettings = field(default_factory=WatchSettings)  # thresholds and signals
    processes: ProcessSet = field(default_factory=ProcessSet)
    state: PolicyState = field(default_factory=PolicyState)
    # Problems already logged for this target, so each is said once, not every tick.
    said: set[str] = field(default_factory=set)
    last_sample: MemorySample | None = None
    next_sample_at: float = 0.0  # monotonic time; 0: sample at once
    growth: GrowthEstimate = field(default_factory=GrowthEstimate)
    limit_read_at: float | None = None  # monotonic time the sampler last read the limit
    events_seen: dict[str, int] = field(default_factory=dict)  # memory.events counters
    missing_sources: dict[str, str] = field(default_factory=dict)  # source → why not
    last_signal: tuple[str, float] | None = None  # signal name, wall-clock time
    list_pids: Callable[[], list[int]] | None = None  # Found.pids of its reader
    thresholds: Thresholds = field(init=False)  # the policy's view of ``settings``

    def __post_init__(self) -> None:
        self.thresholds = self.settings.thresholds()

    def close(self) -> None:
        self.reader.close()
        self.processes.close()

    @property
    def main_comm(self) -> str:
        main = self.processes.chosen("main")
        return current_comm(main[0].info) if main else "-"  # its name now: an exec renames it
