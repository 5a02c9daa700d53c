"""``ebpf`` as a ``WakeSource``: a thin face over ``ebpf.ProbeWatches``, the one probe for all
targets (loaded in a helper thread; it registers its own descriptors as it becomes ready)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oomhero.kernel.cgroup import CgroupDir, MemorySample
from oomhero.sources import ebpf
from oomhero.sources.base import Loop, Wake, WakeSource, wake_source
from oomhero.sources.ebpf import ProbeWatches
from oomhero.sources.unavailable import Unavailable

if TYPE_CHECKING:
    from oomhero.config import WatchSettings


@wake_source
class EbpfSource(WakeSource):
    name = "ebpf"

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop)
        s = loop.settings
        signal = int(s.critical_signal) if s.bpf_signal else 0
        self.watches = ProbeWatches(
            signal, loop.register, loop.unregister, loop.say, loop.resample, s.safety_net, s.bcc
        )

    @classmethod
    def trial(cls, cgroup: CgroupDir, settings: WatchSettings) -> None:
        """The probe is loaded once and closed again: it is the same for every cgroup."""
        try:
            ebpf.prerequisites(bcc=settings.bcc)
        except ebpf.ProbeError as exc:
            raise Unavailable(str(exc)) from None

    def attach(self, key: str, cgroup: CgroupDir) -> None:
        self.watches.add(key, cgroup)

    def follow(
        self, key: str, cgroup: CgroupDir, sample: MemorySample, level: int, own: WatchSettings
    ) -> None:
        self.watches.follow(key, sample.limit, own.warning, own.critical, level, sample.current)

    def watching(self, key: str) -> bool:
        return self.watches.watching(key)

    def covers(self, key: str, level: int) -> bool:
        return self.watches.armed(key, level)

    def woken(self, keys: set[str]) -> Wake:
        """With the crossing that woke each target: for its sample's log line, and a process
        the probe signalled itself (--bpf-signal) is not signalled again."""
        found = {key: self.watches.crossings.pop(key, None) for key in keys}
        return Wake(keys, self.name, {k: c for k, c in found.items() if c is not None})

    def detach(self, key: str) -> None:
        self.watches.remove(key)

    def close(self) -> None:
        self.watches.close()
