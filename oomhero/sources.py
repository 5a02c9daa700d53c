"""Kernel wake-up sources: file descriptors that become ready when a target's memory has news.

- ``inotify``: cgroup v2 ``memory.events`` and ``cgroup.events`` are modified on ``high``,
  ``max`` (a charge would exceed memory.max, i.e. at 100 %), ``oom``, ``oom_kill`` and when the
  group empties. The kernel delays these by up to 10 ms per file; none are lost.
- ``psi``: a PSI trigger on the target's ``memory.pressure`` (POLLPRI when tasks stalled
  longer than the threshold within the window). An extra signal, not the threshold mechanism:
  with only memory.max set, stalls barely register before an OOM kill.
- ``eventfd``: cgroup v1 usage thresholds, registered through ``cgroup.event_control`` at the
  warning and critical byte values and their re-arm points (the kernel checks every 128 page
  events per CPU), plus ``memory.oom_control`` notifications.

Each opener raises ``Unavailable`` with a reason a user can act on; the engine then logs it once
and carries on with the other sources and polling.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select

from oomhero import ebpf
from oomhero.cgroup import CgroupDir
from oomhero.config import PsiTriggerSpec, WatchSettings
from oomhero.ebpf import ProbeWatches

try:
    import inotify_simple
except ImportError:  # reported as a missing source, not a crash
    inotify_simple = None

# Unprivileged triggers (kernel 6.5+) must use a window that is a multiple of 2 s.
UNPRIVILEGED_WINDOW_US = 2_000_000


class Unavailable(Exception):
    """This source cannot be used for this target; the message says why."""


def _path(cgroup: CgroupDir, name: str) -> str:
    # Through the held directory fd: valid even after the process that led to it exits.
    return f"/proc/self/fd/{cgroup.fileno()}/{name}"


class InotifyWatches:
    """One inotify instance for all targets (inotify instances are limited to 128 per user)."""

    name = "inotify"
    mask = select.EPOLLIN
    FILES = ("memory.events", "cgroup.events")

    def __init__(self) -> None:
        if inotify_simple is None:
            raise Unavailable("inotify_simple is not installed")
        self._inotify = inotify_simple.INotify()
        self._keys: dict[int, str] = {}  # watch descriptor → target key
        self._watches: dict[str, list[int]] = {}

    def fileno(self) -> int:
        return self._inotify.fileno()

    def add(self, key: str, cgroup: CgroupDir) -> None:
        if cgroup.version != 2:
            raise Unavailable("cgroup v1 has no memory.events to watch")
        watches = []
        for name in self.FILES:
            try:
                wd = self._inotify.add_watch(_path(cgroup, name), inotify_simple.flags.MODIFY)
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


class PsiTrigger:
    """A PSI trigger on one target's memory.pressure."""

    name = "psi"
    mask = select.EPOLLPRI

    def __init__(self, key: str, cgroup: CgroupDir, spec: PsiTriggerSpec) -> None:
        self.key = key
        self.note = ""
        if cgroup.version != 2:
            raise Unavailable("cgroup v1 has no per-cgroup memory.pressure")
        try:
            self._fd = os.open(_path(cgroup, "memory.pressure"), os.O_RDWR | os.O_NONBLOCK)
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
            control = os.open(_path(cgroup, "cgroup.event_control"), os.O_WRONLY)
            fds.append(control)
            usage = os.open(_path(cgroup, "memory.usage_in_bytes"), os.O_RDONLY)
            fds.append(usage)
            for value in thresholds:
                os.write(control, f"{self._efd} {usage} {value}".encode())
            if cgroup.has("memory.oom_control"):
                oom = os.open(_path(cgroup, "memory.oom_control"), os.O_RDONLY)
                fds.append(oom)
                os.write(control, f"{self._efd} {oom}".encode())
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


class WakeSources:
    """The kernel sources of every target: opened when a target appears, kept in step with its
    limit, closed when it goes. ``register``/``unregister`` hand file descriptors to the loop."""

    def __init__(self, settings: WatchSettings, register, unregister, say) -> None:
        """``say(msg, **fields)`` logs what happens later, away from any target (the eBPF probe
        becoming ready, or failing)."""
        self.settings = settings
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
            self.probe = ProbeWatches(signal, register, unregister, say)

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
        self, key: str, cgroup: CgroupDir, limit: int | None, level: int, own: WatchSettings
    ) -> str | None:
        """Keep threshold-based sources in step with the target's limit and policy level:
        v1 eventfd thresholds (re-registered when the limit changes) and the eBPF probe's
        thresholds and armed state, at the target's ``own`` thresholds. Returns why v1
        thresholds cannot be registered, if so."""
        if self.probe is not None:
            self.probe.follow(key, limit, own.warning, own.critical, level)
        wanted = threshold_bytes(own.warning, own.critical, own.hysteresis, limit) if limit else []
        return self.follow_limit(key, cgroup, wanted)

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
        try:
            self._own(key, V1Thresholds(key, cgroup, thresholds))
        except Unavailable as exc:
            return str(exc)
        return None

    def active(self, key: str) -> list[str]:
        names = set(self.per_target.get(key, {}))
        if self.probe is not None and self.probe.watching(key):
            names.add("ebpf")
        return sorted(names)

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
        self.per_target[key][source.name] = source
        self.register(source)

    def _drop(self, key: str, name: str) -> None:
        source = self.per_target[key].pop(name)
        if name == "inotify":
            source.remove(key)  # shared: only this target's watches go
        else:
            self.unregister(source)
            source.close()


def probe(
    cgroup: CgroupDir, names: tuple[str, ...], psi: PsiTriggerSpec | None
) -> tuple[list[str], dict[str, str]]:
    """Which sources would work for this cgroup: (active, {source: why not}). Leaves nothing
    behind: no PSI trigger is written and no v1 threshold registered, only access is checked."""
    active, missing = [], {}
    for name in names:
        try:
            _PROBES[name](cgroup, psi)
            active.append(name)
        except Unavailable as exc:
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
        os.close(os.open(_path(cgroup, "memory.pressure"), os.O_RDWR | os.O_NONBLOCK))
    except OSError as exc:
        raise Unavailable(f"cannot open {cgroup.path}/memory.pressure: {exc.strerror}") from None


def _probe_eventfd(cgroup: CgroupDir, _psi: PsiTriggerSpec | None) -> None:
    if cgroup.version != 1:
        raise Unavailable("eventfd thresholds are a cgroup v1 feature")
    if not os.access(_path(cgroup, "cgroup.event_control"), os.W_OK):
        raise Unavailable(f"cannot write {cgroup.path}/cgroup.event_control")


def _probe_ebpf(_cgroup: CgroupDir, _psi: PsiTriggerSpec | None) -> None:
    try:
        ebpf.prerequisites()
    except ebpf.ProbeError as exc:
        raise Unavailable(str(exc)) from None


_PROBES = {
    "inotify": _probe_inotify,
    "psi": _probe_psi,
    "eventfd": _probe_eventfd,
    "ebpf": _probe_ebpf,
}
