"""Who we watch, kept in step with the scanner: targets opened once, sources attached, retired."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from oomhero import log
from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.targets import Found, Scanner, Target

if TYPE_CHECKING:
    from oomhero.actions.listener import Listeners
    from oomhero.actions.report import Report
    from oomhero.sampler import Sampler
    from oomhero.sources import WakeSources


# Rescan at least this often even when the process count stayed the same: one process exiting
# as another starts leaves it unchanged (a container restarted that way is seen this late at
# worst; a target about to be signalled is rescanned first anyway, see ``refresh``).
FULL_RESCAN = 10.0


class RescanGate:
    """Whether a rescan is worth it now: a scan reads every member's /proc entries, a check of
    ``count()`` (procfs.process_count) is one stat. Pure but for ``count``."""

    def __init__(self, count: Callable[[], int], full_every: float = FULL_RESCAN) -> None:
        self.count, self.full_every = count, full_every
        self.seen: int | None = None
        self.last_full = float("-inf")

    def due(self, now: float) -> bool:
        count = self.count()
        if count == self.seen and now - self.last_full < self.full_every:
            return False
        self.seen, self.last_full = count, now
        return True


class Watchlist:
    def __init__(
        self,
        scanner: Scanner,
        settings: WatchSettings,
        sources: WakeSources,
        sampler: Sampler,
        report: Report,
        listeners: Listeners,
        polling: str,
    ) -> None:
        self.scanner, self.settings, self.sources = scanner, settings, sources
        self.sampler, self.report, self.listeners = sampler, report, listeners
        self.polling = polling  # how targets are polled, for the "watching target" line
        self.targets: dict[str, Target] = {}
        self.unopened: dict[str, str] = {}  # key → why its reader could not be opened (said once)
        self.scanned_once = False

    def rescan(self) -> None:
        found = self.scanner.scan()
        for key in list(self.targets):
            if key not in found:
                target = self.targets.pop(key)
                log.event(logging.INFO, "target gone", target=target.name)
                self.listeners.gone(target)
                self.sources.detach(key)
                target.close()
        for key, item in found.items():
            target = self.targets.get(key) or self._open(key, item)
            if target is not None:
                target.processes.sync(item.members)
        self.scanned_once = True

    def refresh(self, target: Target) -> None:
        """Look for processes that joined this target since the last scan (right after the
        known ones are signalled): its cgroup.procs read through the open directory, not a
        /proc walk; only newcomers are read from /proc."""
        if target.list_pids is not None:
            with contextlib.suppress(OSError, ValueError):  # the next sample says what is wrong
                target.processes.adopt(target.list_pids())

    def _open(self, key: str, item: Found) -> Target | None:
        try:
            reader = item.open_reader()
        except CgroupError as exc:
            if self.unopened.get(key) != exc.strerror:
                self.unopened[key] = exc.strerror
                log.event(logging.WARNING, "cannot read target", target=item.name, why=exc.strerror)
            return None
        self.unopened.pop(key, None)
        target = Target(key, item.name, reader, settings=item.settings or self.settings)
        if item.pids is not None:
            target.list_pids = functools.partial(item.pids, reader)
        self.targets[key] = target
        if isinstance(reader, CgroupDir):
            target.missing_sources = self.sources.attach(key, reader)
            target.events_seen = self.sampler.events(target)
            # v1 thresholds sit at byte values of the limit: register them before saying which
            # sources are active (sample errors are the first sample's to report).
            with contextlib.suppress(CgroupError, ValueError):
                self.sources.follow_target(target, reader.sample())
        log.event(
            logging.INFO,
            "watching target",
            target=item.name,
            cgroup=_where(reader),
            sources=",".join(self.sources.active(key)) or "none",
            polling=self.polling,
        )
        for note in self.sources.notes:
            self.report.once_globally(note, "source adjusted", why=note, target=item.name)
        self.sources.notes.clear()
        for source, why in target.missing_sources.items():
            self.report.once_globally(
                f"{source}:{why}", "source unavailable", source=source, why=why, target=item.name
            )
        return target

    def close(self) -> None:
        for target in self.targets.values():
            target.close()
        self.targets.clear()


def _where(reader: object) -> str:
    path = getattr(reader, "path", None)
    if path is None:
        return "soft limit on process tree RSS (not enforced by the kernel)"
    return f"{path} (v{reader.version}, {reader.view} view)"
