"""``psi``: a PSI trigger on the target's ``memory.pressure`` (POLLPRI when tasks stalled longer
than the threshold within the window). An extra signal, not the threshold mechanism: with only
memory.max set, stalls barely register before an OOM kill."""

from __future__ import annotations

import errno
import os
import select
from typing import TYPE_CHECKING

from oomhero.kernel import features
from oomhero.kernel.cgroup import CgroupDir, CgroupGone, CgroupRefused
from oomhero.kernel.procfs import descriptors_scarce
from oomhero.sources.base import SCARCE, Check, Machine, PerTarget, wake_source
from oomhero.sources.unavailable import Unavailable

if TYPE_CHECKING:
    from oomhero.config import PsiTriggerSpec, WatchSettings

# Unprivileged triggers (kernel 6.5+) must use a window that is a multiple of 2 s.
UNPRIVILEGED_WINDOW_US = 2_000_000


class PsiTrigger:
    """A PSI trigger on one target's memory.pressure."""

    name = "psi"
    mask = select.EPOLLPRI

    def __init__(self, key: str, cgroup: CgroupDir, spec: PsiTriggerSpec) -> None:
        self.key = key
        self.note = ""
        try:
            # Written to only once checked to be the kernel's file (CgroupRefused otherwise).
            self._fd = cgroup.open_file("memory.pressure", os.O_RDWR)
        except (CgroupRefused, CgroupGone):
            raise
        except OSError as exc:
            raise Unavailable(
                f"cannot open {cgroup.path}/memory.pressure: {exc.strerror}"
            ) from None
        try:
            os.write(self._fd, spec.text().encode() + b"\0")
        except OSError as exc:
            self._retry_unprivileged(spec, exc)

    def _retry_unprivileged(self, spec: PsiTriggerSpec, first: OSError) -> None:
        """Without CAP_SYS_RESOURCE, newer kernels take only windows that are multiples of 2 s."""
        if first.errno in (errno.EPERM, errno.EINVAL) and spec.window_us % UNPRIVILEGED_WINDOW_US:
            window = -(-spec.window_us // UNPRIVILEGED_WINDOW_US) * UNPRIVILEGED_WINDOW_US
            try:
                os.write(self._fd, spec.text(window).encode() + b"\0")
                self.note = f"window widened to {window // 1000} ms (no CAP_SYS_RESOURCE)"
                return
            except OSError:
                pass
        os.close(self._fd)
        hint = " (needs CAP_SYS_RESOURCE)" if first.errno == errno.EPERM else ""
        raise Unavailable(f"the kernel refused the PSI trigger: {first.strerror}{hint}") from None

    def fileno(self) -> int:
        return self._fd

    def consume(self) -> set[str]:
        return {self.key}  # POLLPRI is level state of the trigger; nothing to read

    def close(self) -> None:
        os.close(self._fd)


@wake_source
class PsiSource(PerTarget):
    """A ``PsiTrigger`` per target, at ``--psi``."""

    name = "psi"
    needs = "memory.pressure"
    lacking = "cgroup v1 has no per-cgroup memory.pressure"
    check = "PSI"
    OFF = "turned off (--psi off)"

    @classmethod
    def doctor(cls, machine: Machine) -> list[Check]:
        if machine.v2_memory is None:
            why = "needs the memory controller on cgroup v2 (per-cgroup memory.pressure)"
            return [Check(cls.check, False, why, applies=False)]
        error = features.psi_error()
        if error:
            why = f"{error} (kernel without CONFIG_PSI, or booted with psi=0)"
            return [Check(cls.check, False, why)]
        said = "readable; triggers need CAP_SYS_RESOURCE or a window that is a multiple of 2 s"
        return [Check(cls.check, True, f"{features.PSI_MEMORY} {said}")]

    @classmethod
    def trial(cls, cgroup: CgroupDir, settings: WatchSettings) -> None:
        if settings.psi is None:
            raise Unavailable(cls.OFF)
        cls.require(cgroup)
        try:
            os.close(cgroup.open_file("memory.pressure", os.O_RDWR))
        except OSError as exc:
            raise Unavailable(
                f"cannot open {cgroup.path}/memory.pressure: {exc.strerror}"
            ) from None

    def attach(self, key: str, cgroup: CgroupDir) -> None:
        spec = self.loop.settings.psi
        if spec is None:
            raise Unavailable(self.OFF)
        self.require(cgroup)
        if descriptors_scarce():
            raise Unavailable(SCARCE)
        trigger = PsiTrigger(key, cgroup, spec)
        self.own(key, trigger)
        if trigger.note:
            self.loop.notes.append(f"psi: {trigger.note}")
