"""What wakes the loop: kernel event sources, one face over them, and polling (polling.py).

- ``inotify`` (inotify.py): v2 memory.events changed (100 %, OOM);
- ``psi`` (psi.py): a PSI trigger on memory.pressure;
- ``eventfd`` (eventfd.py): v1 usage thresholds at byte values, and OOM;
- ``ebpf`` (ebpf/): a probe on the memcg charge path that checks the thresholds in the kernel.

Each is a file descriptor for the loop's epoll whose ``consume()`` names the targets to sample
now; a source only says "now", the policy decides from the actual usage. Each opener raises
``Unavailable`` with a reason a user can act on; it is logged once and the others carry on.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from oomhero.config import PsiTriggerSpec, WatchSettings
from oomhero.kernel.cgroup import CgroupDir, MemorySample
from oomhero.kernel.procfs import descriptors_scarce
from oomhero.sources import ebpf
from oomhero.sources.ebpf import ProbeWatches
from oomhero.sources.eventfd import V1Thresholds, threshold_bytes
from oomhero.sources.inotify import InotifyWatches
from oomhero.sources.psi import PsiTrigger
from oomhero.sources.unavailable import Unavailable

__all__ = ["Unavailable", "WakeSources", "probe", "threshold_bytes"]

Say = Callable[..., None]
# Said (once) of the first target to go without a source that needs a descriptor of its own;
# each target's "watching target" line lists the sources it has.
SCARCE = (
    "half the open-file limit is in use: descriptors are kept for reading and signalling "
    "every target (targets watched from now on go without it; raise RLIMIT_NOFILE for more)"
)


class WakeSources:
    """The kernel sources of every target: opened when a target appears, kept in step with its
    limit, closed when it goes. ``register``/``unregister`` hand file descriptors to the loop."""

    def __init__(
        self,
        settings: WatchSettings,
        register,
        unregister,
        say: Say,
        say_once: Say,
        resample: Callable[[set[str]], None],
    ) -> None:
        """``say(msg, **fields)`` logs what happens later, away from any target (the eBPF probe
        becoming ready, or failing); ``say_once(what, msg, **fields)`` logs it once;
        ``resample(keys)`` has those targets sampled soon (the probe that covered them
        failed)."""
        self.settings = settings
        self.say_once = say_once
        self.names = settings.sources
        self.psi = settings.psi
        self.register = register
        self.unregister = unregister
        self.inotify: InotifyWatches | None = None
        self.inotify_error: str | None = None
        self.per_target: dict[str, dict[str, object]] = {}
        self.notes: list[str] = []  # things worth a log line, for the engine to say once
        self.probe: ProbeWatches | None = None
        if "ebpf" in self.names:
            signal = int(settings.critical_signal) if settings.bpf_signal else 0
            self.probe = ProbeWatches(
                signal, register, unregister, say, resample, settings.safety_net, settings.bcc
            )

    def attach(self, key: str, cgroup: CgroupDir) -> dict[str, str]:
        """Open inotify and PSI for a target (eventfd waits for its limit: see ``follow_limit``).
        Returns {source: why unavailable} for those that could not be used."""
        self.per_target[key] = {}
        missing: dict[str, str] = {}
        if "inotify" in self.names:
            try:
                self._shared_inotify().add(key, cgroup)
                self.per_target[key]["inotify"] = self.inotify
            except Unavailable as exc:
                missing["inotify"] = str(exc)
        if "psi" in self.names:
            if self.psi is None:
                missing["psi"] = "turned off (--psi off)"
            elif cgroup.version == 2 and descriptors_scarce():
                missing["psi"] = SCARCE
            else:
                try:
                    trigger = PsiTrigger(key, cgroup, self.psi)
                    self._own(key, trigger)
                    if trigger.note:
                        self.notes.append(f"psi: {trigger.note}")
                except Unavailable as exc:
                    missing["psi"] = str(exc)
        if "eventfd" in self.names and cgroup.version != 1:
            missing["eventfd"] = "eventfd thresholds are a cgroup v1 feature"
        if self.probe is not None:
            self.probe.add(key, cgroup)
        return missing

    def follow(
        self, key: str, cgroup: CgroupDir, sample: MemorySample, level: int, own: WatchSettings
    ) -> str | None:
        """Keep threshold-based sources in step with the target's limit, usage and policy
        level: v1 eventfd thresholds (re-registered when the limit changes) and the eBPF
        probe's thresholds and armed state, at the target's ``own`` thresholds. Returns why v1
        thresholds cannot be registered, if so."""
        limit = sample.limit
        if self.probe is not None:
            self.probe.follow(key, limit, own.warning, own.critical, level, sample.current)
        if "eventfd" not in self.names or cgroup.version != 1:
            return None  # no v1 thresholds to keep: nothing to compute at every sample
        wanted = threshold_bytes(own.warning, own.critical, own.hysteresis, limit) if limit else []
        return self.follow_limit(key, cgroup, wanted)

    def follow_target(self, target, sample: MemorySample) -> None:
        """``follow`` for a target just sampled; a v1 registration that fails is said once."""
        if not isinstance(target.reader, CgroupDir):
            return
        why = self.follow(target.key, target.reader, sample, target.state.level, target.settings)
        if why:
            self.say_once(
                f"eventfd:{why}",
                "source unavailable",
                source="eventfd",
                why=why,
                target=target.name,
            )

    def follow_limit(self, key: str, cgroup: CgroupDir, thresholds: list[int]) -> str | None:
        """(Re-)register v1 thresholds when they changed; returns why not, if they cannot be."""
        if "eventfd" not in self.names or cgroup.version != 1 or key not in self.per_target:
            return None
        current = self.per_target[key].get("eventfd")
        if current is not None and current.thresholds == thresholds:
            return None
        if current is not None:
            self._drop(key, "eventfd")
        if not thresholds:
            return None
        if descriptors_scarce():
            return SCARCE
        try:
            self._own(key, V1Thresholds(key, cgroup, thresholds))
        except Unavailable as exc:
            return str(exc)
        return None

    def covers(self, key: str, level: int) -> bool:
        """The eBPF probe will see this target's next crossing above ``level`` the moment it
        happens, so polling need only be the safety net (a limit change, a probe gone)."""
        return self.probe is not None and self.probe.armed(key, level)

    def active(self, key: str) -> list[str]:
        names = set(self.per_target.get(key, {}))
        if self.probe is not None and self.probe.watching(key):
            names.add("ebpf")
        return sorted(names)

    def failed(self, source: object) -> set[str]:
        """``source``'s descriptor reported an error and the loop took it out of its epoll (a
        PSI trigger of a removed cgroup). It is closed; returns the keys of the targets it
        served, to be sampled at once (a removed cgroup's target then ends)."""
        for key, owned in self.per_target.items():
            for name, other in list(owned.items()):
                if other is source and name != "inotify":
                    del owned[name]
                    source.close()
                    return {key}
        if source is self.inotify:  # shared by all: they fall back to the other sources
            self.inotify.close()
            self.inotify, self.inotify_error = None, "the inotify descriptor failed"
            self.say_once("inotify:failed", "source failed", source="inotify")
            return {key for key, owned in self.per_target.items() if owned.pop("inotify", None)}
        return set()

    def detach(self, key: str) -> None:
        for name in list(self.per_target.get(key, {})):
            self._drop(key, name)
        self.per_target.pop(key, None)
        if self.probe is not None:
            self.probe.remove(key)

    def close(self) -> None:
        for key in list(self.per_target):
            self.detach(key)
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        if self.inotify is not None:
            self.unregister(self.inotify)
            self.inotify.close()
            self.inotify = None

    def _shared_inotify(self) -> InotifyWatches:
        if self.inotify is None:
            if self.inotify_error:
                raise Unavailable(self.inotify_error)
            try:
                self.inotify = InotifyWatches()
            except (Unavailable, OSError) as exc:
                self.inotify_error = str(exc)
                raise Unavailable(self.inotify_error) from None
            self.register(self.inotify)
        return self.inotify

    def _own(self, key: str, source) -> None:
        try:
            self.register(source)
        except OSError as exc:  # e.g. EPERM: not a file epoll can wait on
            source.close()
            raise Unavailable(f"cannot wait on its descriptor: {exc.strerror}") from None
        self.per_target[key][source.name] = source

    def _drop(self, key: str, name: str) -> None:
        source = self.per_target[key].pop(name)
        if name == "inotify":
            source.remove(key)  # shared: only this target's watches go
        else:
            self.unregister(source)
            source.close()


def probe(
    cgroup: CgroupDir, names: tuple[str, ...], psi: PsiTriggerSpec | None, bcc: bool = False
) -> tuple[list[str], dict[str, str]]:
    """Which sources would work for this cgroup: (active, {source: why not}); ``bcc``: the
    probe may fall back to bcc. Leaves nothing behind: no PSI trigger is written and no v1
    threshold registered, only access is checked (the eBPF probe is loaded once and closed)."""
    active, missing = [], {}
    for name in names:
        try:
            if name == "ebpf":
                ebpf.prerequisites(bcc=bcc)
            else:
                _PROBES[name](cgroup, psi)
            active.append(name)
        except (Unavailable, ebpf.ProbeError) as exc:
            missing[name] = str(exc)
    return active, missing


def _probe_inotify(cgroup: CgroupDir, _psi: PsiTriggerSpec | None) -> None:
    watches = InotifyWatches()
    try:
        watches.add("probe", cgroup)
    finally:
        watches.close()


def _probe_psi(cgroup: CgroupDir, psi: PsiTriggerSpec | None) -> None:
    if psi is None:
        raise Unavailable("turned off (--psi off)")
    if cgroup.version != 2:
        raise Unavailable("cgroup v1 has no per-cgroup memory.pressure")
    try:
        os.close(cgroup.open_file("memory.pressure", os.O_RDWR))
    except OSError as exc:
        raise Unavailable(f"cannot open {cgroup.path}/memory.pressure: {exc.strerror}") from None


def _probe_eventfd(cgroup: CgroupDir, _psi: PsiTriggerSpec | None) -> None:
    if cgroup.version != 1:
        raise Unavailable("eventfd thresholds are a cgroup v1 feature")
    try:
        os.close(cgroup.open_file("cgroup.event_control", os.O_WRONLY))
    except OSError as exc:
        raise Unavailable(
            f"cannot write {cgroup.path}/cgroup.event_control: {exc.strerror}"
        ) from None


_PROBES = {
    "inotify": _probe_inotify,
    "psi": _probe_psi,
    "eventfd": _probe_eventfd,
}
