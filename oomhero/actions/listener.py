"""What the engine tells its observers (metrics, webhook, the live view), as one typed contract.

Listeners run on the loop's thread and must not block it. Each overrides only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the listeners' rooms must not import the loop's
    from oomhero.kernel.cgroup import MemorySample
    from oomhero.policy import Decision, Level
    from oomhero.targets import Target


class Listener:
    def sampled(
        self,
        target: Target,
        sample: MemorySample,
        percent: float | None,
        decision: Decision | None,
        source: str,
    ) -> None:
        """A sample was taken; ``percent`` and ``decision`` are None without a limit."""

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

    def tick(self, engine: object) -> None:
        """Once per loop iteration."""


class Listeners(list[Listener]):
    """The engine's listeners; each call reaches every one of them."""

    def sampled(self, *args: object) -> None:
        for listener in self:
            listener.sampled(*args)

    def signalled(self, *args: object) -> None:
        for listener in self:
            listener.signalled(*args)

    def skipped(self, *args: object) -> None:
        for listener in self:
            listener.skipped(*args)

    def oom_killed(self, *args: object) -> None:
        for listener in self:
            listener.oom_killed(*args)

    def detected(self, *args: object) -> None:
        for listener in self:
            listener.detected(*args)

    def gone(self, *args: object) -> None:
        for listener in self:
            listener.gone(*args)

    def tick(self, *args: object) -> None:
        for listener in self:
            listener.tick(*args)
