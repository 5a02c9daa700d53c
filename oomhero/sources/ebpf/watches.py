"""The probe as the engine sees it (``ProbeWatches``): targets in, crossings out; loaded in a
helper thread, and given up with one line once it is found not to work.

Idle, nothing here runs but ``follow`` and ``armed`` at each of a target's samples, so both do
as little as they can: a target's thresholds in bytes are computed once per limit, and the map
is written only when what the probe should watch changed.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable

from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.sources.ebpf.bcc import BccProbe
from oomhero.sources.ebpf.common import (
    NEXT_ARMED_BIT,
    Crossing,
    ProbeError,
    armed_for,
    first_line,
)
from oomhero.sources.ebpf.core import CoreProbe
from oomhero.sources.ebpf.loader import KERNEL_BTF, load_probe

# A watched cgroup's usage grown this much while the probed function was not called once (on
# any CPU, for any cgroup): the probe has stopped (its link gone, kprobes turned off). Every
# growth of a memcg's usage goes through the charge function, a batch of 64 pages at a time.
STALLED_GROWTH = 1 << 20


def cgroup_id(cgroup: CgroupDir) -> int:
    """The id the kernel gives the cgroup (kernfs node id): its directory's inode number."""
    return os.fstat(cgroup.fileno()).st_ino


class _ReadySignal:
    """The pipe that says the loading thread is done: as a source, it finishes the start-up."""

    name = "ebpf-start"
    mask = select.EPOLLIN

    def __init__(self, owner: ProbeWatches) -> None:
        self.owner = owner
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def fileno(self) -> int:
        return self.read_fd

    def consume(self) -> set[str]:
        self.owner.started()
        return set()

    def done(self) -> None:
        """From the loading thread: the write end is its to close, so a loop that stopped
        meanwhile (and closed the read end) never sees a stale descriptor written to."""
        with contextlib.suppress(OSError):  # BrokenPipeError: oomhero is stopping
            os.write(self.write_fd, b"x")
        os.close(self.write_fd)

    def close(self) -> None:
        os.close(self.read_fd)


class ProbeWatches:
    """The probe as the engine sees it: targets in, crossings out, set up once loaded."""

    name = "ebpf"
    mask = select.EPOLLIN

    def __init__(
        self,
        signal_on_critical: int,
        register: Callable,
        unregister: Callable,
        say: Callable[..., None],
        resample: Callable[[set[str]], None],
        safety_net: float,
        bcc: bool = True,
        btf: str = KERNEL_BTF,
    ) -> None:
        """``resample(keys)``: sample these targets soon (the probe failed: they go back to
        polling); ``safety_net``: how often a covered target is sampled all the same (said in
        the ready line); ``bcc``: fall back to compiling with bcc where the CO-RE object cannot
        load."""
        self.register, self.unregister, self.say = register, unregister, say
        self.resample, self.safety_net = resample, safety_net
        self.probe: CoreProbe | BccProbe | None = None
        self.error: str | None = None
        self.why_not_core: str | None = None
        self.ready = False
        self.targets: dict[str, int] = {}  # key → cgroup id
        self.keys: dict[int, str] = {}  # cgroup id → key
        # key → ((limit, warning %, critical %), (warning, critical) in bytes)
        self.thresholds: dict[str, tuple[tuple, tuple[int, int]]] = {}
        self.wanted: dict[str, tuple[int, int, int]] = {}  # key → (warning, critical, armed)
        self.written: dict[str, tuple[int, int, int]] = {}
        # key → (usage, probe calls) last checked, the usage read after the calls
        self.growth: dict[str, tuple[int, int]] = {}
        self.readers: dict[str, CgroupDir] = {}  # key → its cgroup, to read usage after calls
        self.crossings: dict[str, Crossing] = {}  # key → the latest, for the engine to read
        self._ready_signal: _ReadySignal | None = _ReadySignal(self)
        self.register(self._ready_signal)
        threading.Thread(
            target=self._load,
            args=(signal_on_critical, btf, bcc),
            name="oomhero-bpf",
            daemon=True,
        ).start()

    def _load(self, signal_on_critical: int, btf: str, bcc: bool) -> None:
        # Off the loop's thread: bcc compiles for seconds.
        try:
            self.probe, self.why_not_core = load_probe(signal_on_critical, btf, bcc)
        except ProbeError as exc:
            self.error = str(exc)
        except Exception as exc:  # unforeseen, but one line all the same
            self.error = first_line(exc)
        self._ready_signal.done()

    def started(self) -> None:
        self.unregister(self._ready_signal)
        self._ready_signal.close()
        self._ready_signal = None
        if self.error:
            self.say("source unavailable", source="ebpf", why=self.error)
            return
        probe = self.probe
        self.ready = True
        self.register(self)
        refused = f"refused: {probe.refused}" if probe.refused else None
        why = "; ".join(filter(None, (self.why_not_core, refused)))
        self.say(
            "source ready",
            source="ebpf",
            loader=probe.loader,
            attach=probe.attach,
            function=probe.function,
            load_seconds=round(probe.load_seconds, 2),
            safety_net=f"{self.safety_net:g}s",
            **({"why": why} if why else {}),
        )
        for key, wanted in self.wanted.items():
            self._write(key, wanted)

    def add(self, key: str, cgroup: CgroupDir) -> None:
        cid = cgroup_id(cgroup)
        self.targets[key], self.keys[cid] = cid, key
        self.readers[key] = cgroup

    def follow(
        self,
        key: str,
        limit: int | None,
        warning: float,
        critical: float,
        level: int,
        usage: int,
    ) -> None:
        """The target's thresholds (percent of ``limit``) and its policy ``level``, at
        ``usage`` bytes now, for the probe's map."""
        if key not in self.targets:
            return
        given = (limit, warning, critical)
        known = self.thresholds.get(key)
        if known is None or known[0] != given:
            at = (
                (0, 0)
                if limit is None
                else (int(limit * warning / 100), int(limit * critical / 100))
            )
            known = self.thresholds[key] = (given, at)
        at_warning, at_critical = known[1]
        armed = 0 if limit is None else armed_for(level, usage, at_warning, at_critical)
        wanted = self.wanted[key] = (at_warning, at_critical, armed)
        if self.ready:
            self._check_growth(key, usage)
            if self.written.get(key) != wanted:
                self._write(key, wanted)

    def _write(self, key: str, wanted: tuple[int, int, int]) -> None:
        if not self.ready:
            return
        try:
            self.probe.watch(self.targets[key], *wanted)
        except OSError as exc:
            self.fail(f"its map cannot be written: {exc.strerror or exc}")
            return
        self.written[key] = wanted

    def _check_growth(self, key: str, usage: int) -> None:
        """Give the probe up if ``key``'s usage grew by STALLED_GROWTH while the probed function
        was not called: nothing grows a memcg's usage without it. Read only when usage has
        grown that much: an idle target costs nothing here."""
        before = self.growth.get(key)
        if before is not None and usage - before[0] < STALLED_GROWTH:
            if usage < before[0]:
                self.growth[key] = (usage, before[1])
            return
        try:
            calls = self.probe.calls()
        except OSError as exc:
            self.fail(f"its map cannot be read: {exc.strerror or exc}")
            return
        if before is not None and calls == before[1]:
            grown = (usage - before[0]) / (1 << 20)
            self.fail(
                f"{self.probe.function} was not called while a watched cgroup's usage grew by "
                f"{grown:.0f} MiB (the probe detached, or kprobes turned off)"
            )
            return
        # The new baseline's usage is read after its calls: a charge landing between the
        # sample's read and the calls' would be counted in the calls only, and then seen as
        # growth with no call (an app that stopped growing right after: seen on a loaded guest).
        with contextlib.suppress(CgroupError):  # the target's next sample says what is wrong
            self.growth[key] = (self.readers[key].usage(), calls)

    def fail(self, why: str) -> None:
        """The probe stopped working: close it, say so once, and hand its targets back to
        polling (sampled again soon, then as if there were no probe)."""
        if not self.ready:
            return
        self.ready, self.error = False, why
        self.unregister(self)
        probe, self.probe = self.probe, None
        probe.close()
        self.written.clear()
        self.crossings.clear()
        self.say("source failed", source="ebpf", why=why, now="adaptive polling")
        self.resample(set(self.targets))

    def remove(self, key: str) -> None:
        cid = self.targets.pop(key, None)
        self.keys.pop(cid, None)
        self.thresholds.pop(key, None)
        self.wanted.pop(key, None)
        self.growth.pop(key, None)
        self.readers.pop(key, None)
        self.crossings.pop(key, None)
        if self.written.pop(key, None) is not None and self.ready:
            with contextlib.suppress(OSError):  # a map that cannot be written is said at follow
                self.probe.unwatch(cid)

    def watching(self, key: str) -> bool:
        return self.ready and key in self.targets

    def armed(self, key: str, level: int) -> bool:
        """The probe checks this target's next threshold above ``level`` at every charge: it
        is in the probe's map with its armed bit set."""
        written = self.written.get(key)
        return written is not None and self.ready and bool(written[2] & NEXT_ARMED_BIT[level])

    def fileno(self) -> int:
        return self.probe.fileno()

    def consume(self) -> set[str]:
        woken = set()
        try:
            crossings = self.probe.consume()
        except (OSError, ProbeError) as exc:
            self.fail(f"its ring buffer cannot be read: {first_line(exc)}")
            return woken
        for crossing in crossings:
            key = self.keys.get(crossing.cgroup_id)
            if key is not None:
                # The probe disarmed what fired; the engine's next follow() re-arms from policy.
                self.written.pop(key, None)
                self.crossings[key] = crossing
                woken.add(key)
        return woken

    def crossing(self, key: str) -> Crossing | None:
        """The crossing that woke this target, once: for the sample's log line, and a process
        the probe signalled itself (--bpf-signal) is not signalled again."""
        return self.crossings.pop(key, None)

    def close(self) -> None:
        if self.ready:
            self.unregister(self)
        elif self._ready_signal is not None:
            # Still loading: the thread's late write finds the pipe closed; a probe it loads
            # goes with the process.
            self.unregister(self._ready_signal)
            self._ready_signal.close()
            return
        if self.probe is not None:
            self.probe.close()
