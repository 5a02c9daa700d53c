"""``inotify``: cgroup v2 ``memory.events`` is modified on ``high``, ``max`` (a charge would
exceed memory.max, i.e. at 100 %), ``oom`` and ``oom_kill``. The kernel delays these by up to
10 ms per file; none are lost. (A removed cgroup ends its target when it is next read, not by
an inotify event: kernfs sends none.)"""

from __future__ import annotations

import contextlib
import select
from typing import TYPE_CHECKING

from oomhero.kernel.cgroup import CgroupDir, CgroupGone, CgroupRefused
from oomhero.kernel.locate import open_own
from oomhero.sources.base import Check, Loop, Machine, Wake, WakeSource, wake_source
from oomhero.sources.unavailable import Unavailable

if TYPE_CHECKING:
    from oomhero.config import WatchSettings

try:
    import inotify_simple
except ImportError:  # reported as a missing source, not a crash
    inotify_simple = None


class InotifyWatches:
    """One inotify instance for all targets (inotify instances are limited to 128 per user)."""

    name = "inotify"
    mask = select.EPOLLIN
    FILES = ("memory.events",)

    def __init__(self) -> None:
        if inotify_simple is None:
            raise Unavailable("inotify_simple is not installed")
        self._inotify = inotify_simple.INotify()
        self._keys: dict[int, str] = {}  # watch descriptor → target key
        self._watches: dict[str, list[int]] = {}

    def fileno(self) -> int:
        return self._inotify.fileno()

    def add(self, key: str, cgroup: CgroupDir) -> None:
        watches = []
        for name in self.FILES:
            try:
                # The checked file itself, by its descriptor: never what the name leads to.
                with cgroup.watch_path(name) as path:
                    wd = self._inotify.add_watch(path, inotify_simple.flags.MODIFY)
            except (CgroupRefused, CgroupGone):
                for wd in watches:
                    self._remove_wd(wd)
                raise
            except OSError as exc:
                for wd in watches:
                    self._remove_wd(wd)
                raise Unavailable(f"cannot watch {cgroup.path}/{name}: {exc.strerror}") from None
            self._keys[wd] = key
            watches.append(wd)
        self._watches[key] = watches

    def remove(self, key: str) -> None:
        for wd in self._watches.pop(key, []):
            self._remove_wd(wd)

    def _remove_wd(self, wd: int) -> None:
        self._keys.pop(wd, None)
        # OSError: the cgroup is gone and the kernel dropped the watch already.
        with contextlib.suppress(OSError):
            self._inotify.rm_watch(wd)

    def consume(self) -> set[str]:
        return {self._keys[e.wd] for e in self._inotify.read(timeout=0) if e.wd in self._keys}

    def close(self) -> None:
        self._inotify.close()


@wake_source
class InotifySource(WakeSource):
    """One ``InotifyWatches`` for every target, opened with the first."""

    name = "inotify"
    needs = "memory.events"
    lacking = "cgroup v1 has no memory.events to watch"
    check = "inotify memory.events"

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop)
        self.watches: InotifyWatches | None = None
        self.error: str | None = None  # why there is none, once it failed
        self.keys: set[str] = set()

    @classmethod
    def trial(cls, cgroup: CgroupDir, settings: WatchSettings | None = None) -> None:
        cls.require(cgroup)
        watches = InotifyWatches()
        try:
            watches.add("probe", cgroup)
        finally:
            watches.close()

    @classmethod
    def doctor(cls, machine: Machine) -> list[Check]:
        """Its own trial, on this process's cgroup."""
        if machine.v2_memory is None:
            why = "needs the memory controller on cgroup v2 (per-cgroup memory.events)"
            return [Check(cls.check, False, why, applies=False)]
        cgroup = open_own()
        if cgroup is None:
            return [Check(cls.check, False, "this process's cgroup cannot be seen here")]
        try:
            if not cgroup.has("memory.events"):
                why = (
                    "not probed here: this process's cgroup is the root, which has no "
                    "memory.events (each target's sources line says)"
                )
                return [Check(cls.check, False, why, applies=False)]
            cls.trial(cgroup)
        except Unavailable as exc:
            return [Check(cls.check, False, str(exc))]
        finally:
            cgroup.close()
        return [Check(cls.check, True, f"watch on {cgroup.path}/memory.events accepted")]

    def attach(self, key: str, cgroup: CgroupDir) -> None:
        self.require(cgroup)
        self._shared().add(key, cgroup)
        self.keys.add(key)

    def _shared(self) -> InotifyWatches:
        if self.watches is None:
            if self.error:
                raise Unavailable(self.error)
            try:
                self.watches = InotifyWatches()
            except (Unavailable, OSError) as exc:
                self.error = str(exc)
                raise Unavailable(self.error) from None
            self.loop.register(self.watches)
        return self.watches

    def watching(self, key: str) -> bool:
        return key in self.keys

    def woken(self, keys: set[str]) -> Wake:
        return Wake(keys, self.name, events_changed=True)

    def failed(self, member: object) -> set[str] | None:
        if member is not self.watches or self.watches is None:
            return None
        # Shared by all: they fall back to the other sources.
        self.watches.close()
        self.watches, self.error = None, "the inotify descriptor failed"
        self.loop.say_once("inotify:failed", "source failed", source="inotify")
        keys, self.keys = self.keys, set()
        return keys

    def detach(self, key: str) -> None:
        if key in self.keys:
            self.keys.discard(key)
            self.watches.remove(key)  # shared: only this target's watches go

    def close(self) -> None:
        self.keys.clear()
        if self.watches is not None:
            self.loop.unregister(self.watches)
            self.watches.close()
            self.watches = None
