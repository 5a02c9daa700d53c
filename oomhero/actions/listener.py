"""What the engine tells its observers (metrics, webhook, the live view), as one typed contract.

Listeners run on the loop's thread and must not block it. Each overrides only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the listeners' rooms must not import the loop's
    from oomhero.kernel.cgroup import MemorySample
    from oomhero.policy import Decision, Level
    from oomhero.sampler import Sample
    from oomhero.targets import Target


class Listener:
    # It reads MemorySample.inactive_file (the working set): the sampler then reads memory.stat.
    wants_page_cache = False

    def sampled(
        self,
        target: Target,
        sample: MemorySample,
        percent: float | None,
        decision: Decision | None,
        source: str,
    ) -> None:
        """A sample was taken; ``percent`` and ``decision`` are None without a limit."""

    def crossed(self, target: Target, sample: Sample, decision: Decision, source: str) -> None:
        """A decision with a signal: a threshold was crossed (or is repeated after cooldown)."""

    def signalled(self, target: Target, level: Level, signal: str, pid: int, where: str) -> None:
        """A signal reached ``pid``, sent from ``where``: ``user`` space or the ``kernel``."""

    def skipped(self, target: Target, level: Level, signal: str, pid: int) -> None:
        """``pid`` was not signalled: it has no handler for ``signal`` (its SigCgt)."""

    def oom_killed(self, target: Target, victims: int) -> None:
        """The kernel OOM-killed ``victims`` processes of the target."""

    def detected(self, target: Target, source: str, seconds: float) -> None:
        """A crossing seen at the charge itself, ``seconds`` before this sample."""

    def gone(self, target: Target) -> None:
        """The target is no longer watched."""

    def not_watched(self, name: str, reason: str) -> None:
        """A target found is not watched: ``refused`` (what is there is not the kernel's
        cgroupfs: a container shaping what oomhero reads) or ``unreadable``."""

    def tick(self, engine: object) -> None:
        """Once per loop iteration."""


class Listeners(list[Listener], Listener):
    """The engine's listeners: each Listener method, called here, reaches every one of them in
    the order they were added (tests/actions/test_listeners.py checks none is left out)."""

    @property
    def wants_page_cache(self) -> bool:  # type: ignore[override]
        return any(listener.wants_page_cache for listener in self)

    def sampled(
        self,
        target: Target,
        sample: MemorySample,
        percent: float | None,
        decision: Decision | None,
        source: str,
    ) -> None:
        for listener in self:
            listener.sampled(target, sample, percent, decision, source)

    def crossed(self, target: Target, sample: Sample, decision: Decision, source: str) -> None:
        for listener in self:
            listener.crossed(target, sample, decision, source)

    def signalled(self, target: Target, level: Level, signal: str, pid: int, where: str) -> None:
        for listener in self:
            listener.signalled(target, level, signal, pid, where)

    def skipped(self, target: Target, level: Level, signal: str, pid: int) -> None:
        for listener in self:
            listener.skipped(target, level, signal, pid)

    def oom_killed(self, target: Target, victims: int) -> None:
        for listener in self:
            listener.oom_killed(target, victims)

    def detected(self, target: Target, source: str, seconds: float) -> None:
        for listener in self:
            listener.detected(target, source, seconds)

    def gone(self, target: Target) -> None:
        for listener in self:
            listener.gone(target)

    def not_watched(self, name: str, reason: str) -> None:
        for listener in self:
            listener.not_watched(name, reason)

    def tick(self, engine: object) -> None:
        for listener in self:
            listener.tick(engine)
