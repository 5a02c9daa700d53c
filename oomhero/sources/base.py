"""What a wake-up source is (``WakeSource``), and the registry of them by name (``SOURCES``).

A source is one kind of kernel event that says "sample these targets now". The engine keeps
one of each kind the settings name; each kind opens what it needs per target (``attach``),
keeps it in step with the target's limit and level (``follow``), says what its descriptor
reported (``woken``), and lets it go (``detach``, ``close``). Its descriptors sit in the
loop's epoll: each has ``name``, ``mask``, ``fileno()`` and ``consume()`` → target keys.

A new source is one file: a ``WakeSource`` subclass under ``@wake_source``, imported by the
package (``oomhero/sources/__init__.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from oomhero.kernel.cgroup import CgroupDir, MemorySample
from oomhero.sources.unavailable import Unavailable

if TYPE_CHECKING:
    from oomhero.config import WatchSettings
    from oomhero.sources.ebpf import Crossing  # a threshold crossing seen at the charge

Say = Callable[..., None]
# Said (once) of the first target to go without a source that needs a descriptor of its own;
# each target's "watching target" line lists the sources it has.
SCARCE = (
    "half the open-file limit is in use: descriptors are kept for reading and signalling "
    "every target (targets watched from now on go without it; raise RLIMIT_NOFILE for more)"
)


@dataclass
class Wake:
    """What a source's descriptor said: the targets to sample now, and what it saw."""

    keys: set[str]
    source: str  # its name: what woke the loop, in the sample's log line and metrics
    crossings: dict[str, Crossing] = field(default_factory=dict)  # the probe's, by target key
    events_changed: bool = False  # memory.events changed: look for OOM kills


@dataclass
class Check:
    """One line of ``oomhero doctor``: ok, missing, or n/a (not needed here), and why."""

    name: str
    ok: bool
    detail: str
    applies: bool = True  # False: not needed on this machine (n/a), whatever it says

    def line(self) -> str:
        status = "ok" if self.ok else "missing" if self.applies else "n/a"
        return f"{status:8} {self.name:22} {self.detail}"


@dataclass(frozen=True)
class Machine:
    """Where doctor found the memory controller, for each source's own checks."""

    v2_memory: str | None  # the cgroup v2 mount point, where it has the memory controller
    v1_memory: str | None  # the cgroup v1 memory hierarchy's mount point


@dataclass
class Loop:
    """What a source may ask of the loop: ``register``/``unregister`` a descriptor in its
    epoll; ``say(msg, **fields)`` a line away from any target (a probe ready, or failed),
    ``say_once(what, msg, **fields)`` once; ``resample(keys)``: have these targets sampled soon
    (the source that covered them is gone); ``notes``: lines worth saying once, for the
    watchlist to say."""

    settings: WatchSettings
    register: Callable[[object], None]
    unregister: Callable[[object], None]
    say: Say
    say_once: Say
    resample: Callable[[set[str]], None]
    notes: list[str] = field(default_factory=list)


class WakeSource(ABC):
    """One kind of wake-up source, for all the engine's targets."""

    name: ClassVar[str]
    # The cgroup interface it waits on (``CgroupDir.offers``), and why not where there is none.
    needs: ClassVar[str | None] = None
    lacking: ClassVar[str] = ""
    check: ClassVar[str]  # the name of doctor's line that says whether it works here

    def __init__(self, loop: Loop) -> None:
        self.loop = loop

    @classmethod
    def require(cls, cgroup: CgroupDir) -> None:
        if cls.needs is not None and not cgroup.offers(cls.needs):
            raise Unavailable(cls.lacking)

    @classmethod
    def trial(cls, cgroup: CgroupDir, settings: WatchSettings) -> None:
        """Would it work for this cgroup? Raises ``Unavailable`` why not; leaves nothing
        behind (for doctor and status)."""
        cls.require(cgroup)

    @classmethod
    def doctor(cls, machine: Machine) -> list[Check]:
        """Its lines in ``oomhero doctor``: does it work on this machine?"""
        return []

    @classmethod
    def works(cls, checks: dict[str, Check], settings: WatchSettings) -> tuple[str | None, str]:
        """What doctor's verdict says of it, from the ``checks`` by name: (what it wakes as,
        "") where it works, else (None, why not; "" when no check says)."""
        check = checks.get(cls.check)
        if check is None:
            return None, ""
        return (cls.name, "") if check.ok else (None, check.detail)

    def attach(self, key: str, cgroup: CgroupDir) -> None:
        """Start watching a target; raises ``Unavailable`` with a reason a user can act on."""
        self.require(cgroup)

    def follow(
        self, key: str, cgroup: CgroupDir, sample: MemorySample, level: int, own: WatchSettings
    ) -> None:
        """Keep in step with the target's limit, usage and policy ``level`` at its ``own``
        thresholds, after each sample; raises ``Unavailable`` when it cannot (said once).
        Most sources have nothing to keep in step."""
        return

    @abstractmethod
    def watching(self, key: str) -> bool:
        """It has what it needs open for this target."""

    def covers(self, key: str, level: int) -> bool:
        """It sees the target's next crossing above ``level`` the moment it happens, so
        polling need only be the safety net."""
        return False

    def woken(self, keys: set[str]) -> Wake:
        """What its descriptor said, for the targets ``keys`` it named."""
        return Wake(keys, self.name)

    def failed(self, member: object) -> set[str] | None:
        """``member``, one of its descriptors, reported an error and is out of the epoll: close
        it and return the keys of the targets it served (None: not one of its own)."""
        return None

    def queued(self, key: str) -> object | None:
        """What the kernel has queued for this target since its last wake (the probe's event of
        a crossing a sample has just seen, with the process it signalled), read now without
        waiting; other targets it names are resampled soon. Most sources queue nothing."""
        return None

    @abstractmethod
    def detach(self, key: str) -> None:
        """Stop watching a target: what it opened for it is closed."""

    @abstractmethod
    def close(self) -> None:
        """Detach every target and close what it shares among them."""


class PerTarget(WakeSource):
    """A source with a descriptor of its own for each target it watches."""

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop)
        self.members: dict[str, object | None] = {}  # key → its descriptor (None: none yet)

    def own(self, key: str, member) -> None:
        try:
            self.loop.register(member)
        except OSError as exc:  # e.g. EPERM: not a file epoll can wait on
            member.close()
            raise Unavailable(f"cannot wait on its descriptor: {exc.strerror}") from None
        self.members[key] = member

    def drop(self, key: str) -> None:
        member = self.members.get(key)
        if member is not None:
            self.members[key] = None
            self.loop.unregister(member)
            member.close()

    def watching(self, key: str) -> bool:
        return self.members.get(key) is not None

    def failed(self, member: object) -> set[str] | None:
        for key, other in self.members.items():
            if other is member:
                self.members[key] = None
                member.close()
                return {key}
        return None

    def detach(self, key: str) -> None:
        self.drop(key)
        self.members.pop(key, None)

    def close(self) -> None:
        for key in list(self.members):
            self.detach(key)


SOURCES: dict[str, type[WakeSource]] = {}
"""Every wake-up source, by the name ``--sources`` gives it."""


def wake_source(cls: type[WakeSource]) -> type[WakeSource]:
    """Declare a source: ``--sources``, the engine and doctor find it by its name."""
    SOURCES[cls.name] = cls
    return cls
