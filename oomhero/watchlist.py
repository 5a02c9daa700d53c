"""Who we watch, kept in step with the scanner: targets opened once, sources attached, retired."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomhero import log
from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import CgroupDir, CgroupError, CgroupGone, CgroupRefused
from oomhero.kernel.procfs import ProcInfo, process_generation
from oomhero.sources import WakeSources
from oomhero.targets import Found, Reader, Scanner, Target

if TYPE_CHECKING:
    from oomhero.actions.listener import Listeners
    from oomhero.actions.report import Report
    from oomhero.sampler import Sampler
    from oomhero.sources.epoll import Epoll


# Rescan at least this often even when no process started or exited (a change the gate missed
# is seen this late at worst; a target about to be signalled is rescanned first anyway, see
# ``refresh``).
FULL_RESCAN = 10.0


class RescanGate:
    """Whether a rescan is worth it now: a scan reads every member's /proc entries, a check of
    ``generation()`` (procfs.process_generation) is a stat and a read. Pure but for it."""

    def __init__(self, generation: Callable[[], object], full_every: float = FULL_RESCAN) -> None:
        self.generation, self.full_every = generation, full_every
        self.seen: object = None
        self.last_full = float("-inf")

    def due(self, now: float) -> bool:
        generation = self.generation()
        if generation == self.seen and now - self.last_full < self.full_every:
            return False
        self.seen, self.last_full = generation, now
        return True


# A name that could not be opened is tried again after RETRY_FIRST seconds, then after twice as
# long each time up to RETRY_LAST; after that only at full rescans. It is said (logged) once
# the same reason has lasted SAY_AFTER seconds: a container caught in its setup (its
# /sys/fs/cgroup not mounted yet) is watched a moment later, and never said.
RETRY_FIRST, RETRY_LAST, SAY_AFTER = 0.1, 6.4, 2.0


@dataclass
class Unopened:
    """A name a scan found that could not be opened: why, and when to try again."""

    item: Found | None  # what the scan found (None: refused while watched, not retried)
    why: str
    kind: tuple[type, int | None]
    tries: int  # of this kind in a row
    since: float  # when this kind of reason was first met
    retry_at: float = math.inf
    said: bool = False


class Watchlist:
    """The targets being watched, by identity (their reader's key), and the names scans find
    them under. A name found again is the same target only while its cgroup is alive: a cgroup
    removed and created again under the same name is a new target. Two names of one cgroup (a
    path and a symlink to it) are one target."""

    def __init__(
        self,
        scanner: Scanner,
        settings: WatchSettings,
        epoll: Epoll,
        sampler: Sampler,
        report: Report,
        listeners: Listeners,
        polling: str,
        clock: Callable[[], float],
        rescan_interval: float = 1.0,
    ) -> None:
        self.scanner, self.settings = scanner, settings
        say = (report.globally, report.once_globally)
        self.sources = WakeSources(settings, epoll.add, epoll.remove, *say, self.sample_soon)
        self.clock, self.rescan_interval = clock, rescan_interval
        self.rescans = RescanGate(process_generation)  # the per-second rescan, if anything changed
        self.next_scan = -math.inf
        self.sampler, self.report, self.listeners = sampler, report, listeners
        self.polling = polling  # how targets are polled, for the "watching target" line
        self.targets: dict[str, Target] = {}  # key → target
        self.names: dict[str, str] = {}  # a scan's name → the key of the target it found
        self.unopened: dict[str, Unopened] = {}  # names found but not watched, and why
        self.scanned_once = False

    def sample_soon(self, keys: set[str]) -> None:
        """Have these targets sampled in the next wake (a source that covered them is gone)."""
        now = self.clock()
        for target in filter(None, map(self.targets.get, keys)):
            target.next_sample_at = min(target.next_sample_at, now)

    def upkeep(self, now: float) -> float:
        """Rescan when due, else open again what could not be opened when its retry is due;
        returns when next either is."""
        if now >= self.next_scan and self.rescans.due(now):
            self.rescan()
        elif now >= self.retry_at:
            self.retry()
        if now >= self.next_scan:
            # On a grid from clock time 0, as covered and fixed polling's samples are: a rescan
            # rides their wake-up instead of waking the loop on its own.
            self.next_scan = now - now % self.rescan_interval + self.rescan_interval
        return min(self.next_scan, self.retry_at)

    def rescan(self) -> None:
        now = self.clock()
        found = self.scanner.scan()
        members: dict[str, list[ProcInfo]] = {}
        for name, item in found.items():
            target = self._target_for(name, item, now)
            if target is not None:
                members.setdefault(target.key, []).extend(item.members)
        for key in list(self.targets):
            if key not in members:
                self.retire(self.targets[key], "not found by the scan")
        for key, infos in members.items():
            self.targets[key].processes.sync(infos)
        self.names = {n: k for n, k in self.names.items() if n in found and k in self.targets}
        self.unopened = {n: u for n, u in self.unopened.items() if n in found}
        self.scanned_once = True

    def retry(self) -> None:
        """Open again what could not be opened, when its retry is due."""
        now = self.clock()
        for name, unopened in list(self.unopened.items()):
            if unopened.retry_at <= now and unopened.item is not None:
                target = self._target_for(name, unopened.item, now)
                if target is not None:
                    target.processes.sync(unopened.item.members)

    @property
    def retry_at(self) -> float:
        return min((u.retry_at for u in self.unopened.values()), default=math.inf)

    def refresh(self, target: Target) -> None:
        """Look for processes that joined this target since the last scan (right after the
        known ones are signalled): its cgroup.procs read through the open directory, not a
        /proc walk; only newcomers are read from /proc."""
        if target.list_pids is not None:
            with contextlib.suppress(OSError, ValueError):  # the next sample says what is wrong
                target.processes.adopt(target.list_pids())

    def retire(self, target: Target, why: str) -> None:
        """Stop watching ``target``: every descriptor, source and probe entry it had is closed."""
        if self.targets.pop(target.key, None) is None:
            return
        log.event(logging.INFO, "target gone", target=target.name, why=why)
        self.listeners.gone(target)
        self.sources.detach(target.key)
        target.close()

    @contextlib.contextmanager
    def ending(self, target: Target) -> Iterator[None]:
        """Around a visit: a target whose cgroup was removed ends (CgroupGone), and so does one
        that turns out not to be the kernel's (a file mounted over: CgroupRefused), as one found
        that way would not be watched."""
        try:
            yield
        except CgroupGone:
            self.retire(target, "removed")
        except CgroupRefused as exc:
            self.retire(target, "refused")
            name = next((n for n, k in self.names.items() if k == target.key), target.name)
            self._not_watched(name, target.name, exc, None, self.clock())

    def _target_for(self, name: str, item: Found, now: float) -> Target | None:
        key = self.names.get(name)
        target = self.targets.get(key) if key is not None else None
        if target is not None:
            if not target.reader.alive():
                self.retire(target, "removed")
            elif item.identity not in (None, target.key):  # the name leads elsewhere now
                self.retire(target, "replaced")
            else:
                return target
        try:
            reader = item.open_reader()
            if not reader.alive():  # found as the kernel removes it: not there
                reader.close()
                return None
        except CgroupGone:
            return None
        except CgroupError as exc:
            self._not_watched(name, item.name, exc, item, now)
            return None
        same = self.targets.get(reader.key)
        if same is not None:
            reader.close()  # the same cgroup under another name: watched once
            self.names[name] = same.key
            self.report.once(same, f"alias:{name}", logging.INFO, "same target", alias=item.name)
            return same
        try:
            target = self._open(reader, item)
        except CgroupGone:
            reader.close()
            return None
        except CgroupError as exc:  # a file of it is not the kernel's
            reader.close()
            self._not_watched(name, item.name, exc, item, now)
            return None
        self.names[name] = target.key
        self.unopened.pop(name, None)
        return target

    def _not_watched(
        self, name: str, label: str, exc: CgroupError, item: Found | None, now: float
    ) -> None:
        """Tried again soon, then less often: a container caught in its setup (its
        /sys/fs/cgroup not mounted yet) opens a moment later. Said once the same kind of reason
        (not the same wording: a pid in it may change) comes back on a retry."""
        kind = (type(exc), exc.errno)
        before = self.unopened.get(name)
        same = before is not None and before.kind == kind
        tries = before.tries + 1 if same else 1
        wait = RETRY_FIRST * 2 ** (tries - 1)
        retry_at = now + wait if wait <= RETRY_LAST and item is not None else math.inf
        unopened = Unopened(item, exc.strerror, kind, tries, before.since if same else now)
        unopened.retry_at, unopened.said = retry_at, same and before.said
        self.unopened[name] = unopened
        if not unopened.said and (now - unopened.since >= SAY_AFTER or retry_at == math.inf):
            unopened.said = True
            refused = isinstance(exc, CgroupRefused)
            msg = "target refused: not watched" if refused else "cannot read target"
            log.event(logging.WARNING, msg, target=label, why=exc.strerror)
            self.listeners.not_watched(label, "refused" if refused else "unreadable")

    def _open(self, reader: Reader, item: Found) -> Target:
        target = Target(reader.key, item.name, reader, settings=item.settings or self.settings)
        if item.pids is not None:
            target.list_pids = functools.partial(item.pids, reader)
        if isinstance(reader, CgroupDir):
            try:
                reader.verify()
                target.missing_sources = self.sources.attach(target.key, reader)
                target.events_seen = self.sampler.events(target)
                # v1 thresholds sit at byte values of the limit: register them before saying
                # which sources are active (other errors are the first sample's to report).
                self.sources.follow(target, reader.sample())
            except (CgroupRefused, CgroupGone):
                self.sources.detach(target.key)
                raise
            except CgroupError:
                pass
        self.targets[target.key] = target
        log.event(
            logging.INFO,
            "watching target",
            target=item.name,
            cgroup=_where(reader),
            sources=",".join(self.sources.active(target.key)) or "none",
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
        self.scanner.close()


def _where(reader: object) -> str:
    path = getattr(reader, "path", None)
    if path is None:
        return "soft limit on process tree RSS (not enforced by the kernel)"
    return f"{path} (v{reader.version}, {reader.view} view)"
