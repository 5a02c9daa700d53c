"""What wakes the loop: kernel event sources behind one face (``base.WakeSource``), found by
name in ``base.SOURCES``, and polling (polling.py).

- ``inotify`` (inotify.py): v2 memory.events changed (100 %, OOM);
- ``psi`` (psi.py): a PSI trigger on memory.pressure;
- ``eventfd`` (eventfd.py): v1 usage thresholds at byte values, and OOM;
- ``ebpf`` (ebpf_source.py, ebpf/): a probe on the memcg charge path that checks the
  thresholds in the kernel.

Each is a file descriptor for the loop's epoll whose wake names the targets to sample now; a
source only says "now", the policy decides from the actual usage. A source that cannot serve a
target raises ``Unavailable`` with a reason a user can act on; it is logged once and the others
carry on. A new source is one more module here, imported below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from oomhero.kernel.cgroup import CgroupDir, MemorySample
from oomhero.sources.base import SOURCES, Loop, Say, Wake

# isort: off
# Each declares its source, in the order doctor and ``--sources all`` give them.
from oomhero.sources import inotify, psi, eventfd, ebpf_source  # noqa: F401

# isort: on
from oomhero.sources.eventfd import threshold_bytes
from oomhero.sources.unavailable import Unavailable

if TYPE_CHECKING:
    from oomhero.config import WatchSettings
    from oomhero.targets import Target

__all__ = ["SOURCES", "Unavailable", "WakeSources", "probe", "threshold_bytes"]


class WakeSources:
    """The wake-up sources the settings name, for every target: attached when a target appears,
    kept in step with its limit, detached when it goes."""

    def __init__(
        self,
        settings: WatchSettings,
        register: Callable[[object], None],
        unregister: Callable[[object], None],
        say: Say,
        say_once: Say,
        resample: Callable[[set[str]], None],
    ) -> None:
        """``register``/``unregister`` hand file descriptors to the loop; the rest: ``Loop``."""
        self.loop = Loop(settings, register, unregister, say, say_once, resample)
        self.notes = self.loop.notes  # things worth a log line, for the watchlist to say once
        self.kinds = {name: SOURCES[name](self.loop) for name in settings.sources}

    def attach(self, key: str, cgroup: CgroupDir) -> dict[str, str]:
        """Start every source on a target; returns {source: why unavailable}."""
        missing: dict[str, str] = {}
        for name, kind in self.kinds.items():
            try:
                kind.attach(key, cgroup)
            except Unavailable as exc:
                missing[name] = str(exc)
        return missing

    def follow(self, target: Target, sample: MemorySample) -> bool:
        """Keep threshold-based sources in step with a target just sampled (v1 thresholds at
        byte values of its limit, the probe's map); one that cannot is said once. Returns
        whether one sees the target's next crossing the moment it happens, so polling need
        only be the safety net (a limit change, a probe gone)."""
        if not isinstance(target.reader, CgroupDir):
            return False
        level, own = target.state.level, target.settings
        for name, kind in self.kinds.items():
            try:
                kind.follow(target.key, target.reader, sample, level, own)
            except Unavailable as exc:
                why = str(exc)
                self.loop.say_once(
                    f"{name}:{why}", "source unavailable", source=name, why=why, target=target.name
                )
        return any(kind.covers(target.key, level) for kind in self.kinds.values())

    def queued(self, key: str) -> object | None:
        """What a source has queued for this target since its wake (the probe's event of the
        crossing a sample just saw), read now without waiting."""
        for kind in self.kinds.values():
            if (news := kind.queued(key)) is not None:
                return news
        return None

    def active(self, key: str) -> list[str]:
        return sorted(name for name, kind in self.kinds.items() if kind.watching(key))

    def woken(self, member, failed: bool = False) -> Wake:
        """What a ready descriptor of the loop says. One that ``failed`` (EPOLLERR: a PSI
        trigger of a removed cgroup) is already out of the epoll: it is closed, and the targets
        it served are to be sampled at once (a removed cgroup's target then ends)."""
        keys = self._failed(member) if failed else member.consume()
        kind = self.kinds.get(member.name)
        return kind.woken(keys) if kind is not None else Wake(keys, member.name)

    def _failed(self, member) -> set[str]:
        for kind in self.kinds.values():
            if (keys := kind.failed(member)) is not None:
                return keys
        return set()

    def detach(self, key: str) -> None:
        for kind in self.kinds.values():
            kind.detach(key)

    def close(self) -> None:
        for kind in self.kinds.values():
            kind.close()


def probe(cgroup: CgroupDir, settings: WatchSettings) -> tuple[list[str], dict[str, str]]:
    """Which of the settings' sources would work for this cgroup: (active, {source: why not}).
    Leaves nothing behind: no PSI trigger is written and no v1 threshold registered, only
    access is checked (the eBPF probe is loaded once and closed)."""
    active, missing = [], {}
    for name in settings.sources:
        try:
            SOURCES[name].trial(cgroup, settings)
            active.append(name)
        except Unavailable as exc:
            missing[name] = str(exc)
    return active, missing
