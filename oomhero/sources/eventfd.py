"""``eventfd``: cgroup v1 usage thresholds, registered through ``cgroup.event_control`` at the
warning and critical byte values and their re-arm points (the kernel checks every 128 page events
per CPU), plus ``memory.oom_control`` notifications."""

from __future__ import annotations

import contextlib
import os
import select
from typing import TYPE_CHECKING

from oomhero.kernel import features
from oomhero.kernel.cgroup import CgroupDir, CgroupGone, CgroupRefused, MemorySample
from oomhero.kernel.procfs import descriptors_scarce
from oomhero.sources.base import SCARCE, Check, Machine, PerTarget, wake_source
from oomhero.sources.unavailable import Unavailable

if TYPE_CHECKING:
    from oomhero.config import WatchSettings


class V1Thresholds:
    """cgroup v1 eventfd notifications at fixed usage values and on OOM."""

    name = "eventfd"
    mask = select.EPOLLIN

    def __init__(self, key: str, cgroup: CgroupDir, thresholds: list[int]) -> None:
        self.key = key
        self.thresholds = thresholds
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        fds = []
        try:
            # Each file checked to be the kernel's before it is written to or named in a write.
            control = cgroup.open_file("cgroup.event_control", os.O_WRONLY)
            fds.append(control)
            usage = cgroup.open_file("memory.usage_in_bytes", os.O_RDONLY)
            fds.append(usage)
            for value in thresholds:
                os.write(control, f"{self._efd} {usage} {value}".encode())
            if cgroup.has("memory.oom_control"):
                oom = cgroup.open_file("memory.oom_control", os.O_RDONLY)
                fds.append(oom)
                os.write(control, f"{self._efd} {oom}".encode())
        except (CgroupRefused, CgroupGone):
            os.close(self._efd)
            raise
        except OSError as exc:
            os.close(self._efd)
            raise Unavailable(
                f"cannot register thresholds in {cgroup.path}: {exc.strerror}"
            ) from None
        finally:
            # The kernel keeps its own references; the registrations live as long as the eventfd.
            for fd in fds:
                os.close(fd)

    def fileno(self) -> int:
        return self._efd

    def consume(self) -> set[str]:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        return {self.key}

    def close(self) -> None:
        os.close(self._efd)  # unregisters every threshold on it


def threshold_bytes(warning: float, critical: float, hysteresis: float, limit: int) -> list[int]:
    """Byte values worth a v1 notification: each threshold and its re-arm point."""
    percents = sorted({warning, critical, warning - hysteresis, critical - hysteresis})
    return [int(limit * p / 100) for p in percents if p > 0]


@wake_source
class EventfdSource(PerTarget):
    """A ``V1Thresholds`` per target, registered once its limit is known (at ``follow``) and
    again when the limit or its thresholds change."""

    name = "eventfd"
    needs = "cgroup.event_control"
    lacking = "eventfd thresholds are a cgroup v1 feature"
    check = "v1 thresholds"

    @classmethod
    def doctor(cls, machine: Machine) -> list[Check]:
        if machine.v1_memory is None:
            why = "needs the memory controller on cgroup v1 (cgroup.event_control)"
            return [Check(cls.check, False, why, applies=False)]
        control = features.v1_event_control(machine.v1_memory)
        if not os.path.exists(control):
            return [Check(cls.check, False, f"{control} does not exist")]
        return [Check(cls.check, True, f"{control} present (eventfd thresholds)")]

    @classmethod
    def trial(cls, cgroup: CgroupDir, settings: WatchSettings) -> None:
        cls.require(cgroup)
        try:
            os.close(cgroup.open_file("cgroup.event_control", os.O_WRONLY))
        except OSError as exc:
            raise Unavailable(
                f"cannot write {cgroup.path}/cgroup.event_control: {exc.strerror}"
            ) from None

    def attach(self, key: str, cgroup: CgroupDir) -> None:
        self.require(cgroup)
        self.members[key] = None  # the thresholds wait for the limit

    def follow(
        self, key: str, cgroup: CgroupDir, sample: MemorySample, level: int, own: WatchSettings
    ) -> None:
        if key not in self.members:
            return  # not a v1 target, or no longer watched
        limit = sample.limit
        wanted = threshold_bytes(own.warning, own.critical, own.hysteresis, limit) if limit else []
        current = self.members[key]
        if current is not None and current.thresholds == wanted:
            return
        self.drop(key)
        if not wanted:
            return
        if descriptors_scarce():
            raise Unavailable(SCARCE)
        self.own(key, V1Thresholds(key, cgroup, wanted))
