"""``eventfd``: cgroup v1 usage thresholds, registered through ``cgroup.event_control`` at the
warning and critical byte values and their re-arm points (the kernel checks every 128 page events
per CPU), plus ``memory.oom_control`` notifications."""

from __future__ import annotations

import contextlib
import os
import select

from oomhero.kernel.cgroup import CgroupDir, CgroupGone, CgroupRefused
from oomhero.sources.unavailable import Unavailable


class V1Thresholds:
    """cgroup v1 eventfd notifications at fixed usage values and on OOM."""

    name = "eventfd"
    mask = select.EPOLLIN

    def __init__(self, key: str, cgroup: CgroupDir, thresholds: list[int]) -> None:
        self.key = key
        self.thresholds = thresholds
        if cgroup.version != 1:
            raise Unavailable("eventfd thresholds are a cgroup v1 feature")
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
