"""The ``ebpf`` wake-up source: bpf/memcg_threshold.bpf.c on the memcg charge path, via bcc.

The probe checks each watched cgroup's thresholds in the kernel as pages are charged, so a
crossing is seen at the charge that makes it, not at the next sample. Compiling takes seconds
(tens of seconds under emulation), so it happens in a helper thread while the other sources and
polling already run; the loop learns it is ready through a pipe and then takes the probe's ring
buffer into its epoll like any other source. Every problem — bcc missing, no headers, no
privilege, no charge function to probe, a compile error — becomes one ``Unavailable`` reason.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from oomhero.kernel.cgroup import CgroupDir
from oomhero.kernel.procfs import effective_capabilities, kernel_symbols, pid_namespace

PROGRAM = Path(__file__).resolve().parents[3] / "bpf" / "memcg_threshold.bpf.c"
# Probe targets whose arguments are (memcg, gfp_mask, nr_pages), newest kernels first.
CHARGE_FUNCTIONS = ("try_charge_memcg", "try_charge")
PAGE = os.sysconf("SC_PAGE_SIZE")
ARMED_WARNING, ARMED_CRITICAL = 1, 2


class ProbeError(Exception):
    """The probe cannot run here; the message says why."""


@dataclass(frozen=True)
class Crossing:
    """One event from the probe."""

    cgroup_id: int
    level: int  # 1 warning, 2 critical
    usage: int  # bytes, including the pages being charged
    ktime: float  # CLOCK_MONOTONIC seconds of the charge
    pid: int
    signalled: bool


def charge_function(kallsyms: str = "/proc/kallsyms") -> str:
    """The first probe-able charge function this kernel has."""
    try:
        names = kernel_symbols(kallsyms)
    except OSError as exc:
        raise ProbeError(f"cannot read {kallsyms}: {exc.strerror}") from None
    for name in CHARGE_FUNCTIONS:
        if name in names:
            return name
    raise ProbeError(f"no memcg charge function to probe ({' or '.join(CHARGE_FUNCTIONS)})")


def prerequisites() -> str:
    """Check what the probe needs short of compiling it; returns the function to probe."""
    if not may_load_kprobes():
        raise ProbeError("loading a kprobe needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN")
    function = charge_function()
    try:
        import bcc  # noqa: F401
    except ImportError:
        raise ProbeError(
            "bcc is not importable: install python3-bpfcc and run oomhero from a venv made "
            "from /usr/bin/python3 with --system-site-packages"
        ) from None
    release = os.uname().release
    if not Path(f"/lib/modules/{release}/build").exists():
        raise ProbeError(
            f"no kernel headers at /lib/modules/{release}/build (install linux-headers-{release})"
        )
    return function


def cgroup_id(cgroup: CgroupDir) -> int:
    """The id the kernel gives the cgroup (kernfs node id): its directory's inode number."""
    return os.fstat(cgroup.fileno()).st_ino


class ChargeProbe:
    """Compiles and attaches the probe (``start``, in a thread), then serves as a source."""

    name = "ebpf"
    mask = select.EPOLLIN

    def __init__(self, signal_on_critical: int = 0) -> None:
        self.signal_on_critical = signal_on_critical
        self.error: str | None = None
        self.function: str | None = None
        self.compile_seconds: float | None = None
        self._bpf = None
        self._watches = None
        self._ring_fd = -1
        self._pending: list[Crossing] = []
        ready_r, self._ready_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._ready_r = ready_r

    # -- start-up, off the loop's thread --------------------------------------------------
    def ready_fd(self) -> int:
        """Readable once ``start`` has finished, successfully or not."""
        return self._ready_r

    def start_in_background(self) -> None:
        threading.Thread(target=self._start, name="oomhero-bpf-compile", daemon=True).start()

    def _start(self) -> None:
        try:
            self._compile_and_attach()
        except ProbeError as exc:
            self.error = str(exc)
        except Exception as exc:  # bcc raises plain Exceptions for compile and load errors
            self.error = _first_line(exc)
        with contextlib.suppress(OSError):  # closed meanwhile: oomhero is stopping
            os.write(self._ready_w, b"x")

    def _compile_and_attach(self) -> None:
        self.function = prerequisites()
        from bcc import BPF

        started = time.monotonic()
        try:
            bpf = BPF(
                text=PROGRAM.read_text(),
                cflags=[
                    f"-DSIGNAL_ON_CRITICAL={self.signal_on_critical}",
                    *_pid_namespace_flags(),
                    "-w",
                ],
            )
        except Exception as exc:
            raise ProbeError(f"the probe did not compile or load: {_first_line(exc)}") from None
        try:
            bpf.attach_kprobe(event=self.function, fn_name="on_charge")
        except Exception as exc:
            raise ProbeError(
                f"cannot attach a kprobe to {self.function}: {_first_line(exc)}"
            ) from None
        self.compile_seconds = time.monotonic() - started
        self._watches = bpf["watches"]
        ring = bpf["events"]
        ring.open_ring_buffer(self._on_event)
        self._ring_fd = ring.map_fd
        self._bpf = bpf

    # -- as a source in the loop -------------------------------------------------------------
    def fileno(self) -> int:
        return self._ring_fd

    def consume(self) -> list[Crossing]:
        self._pending = []
        self._bpf.ring_buffer_consume()
        return self._pending

    def _on_event(self, _ctx, data, _size) -> None:
        event = self._bpf["events"].event(data)
        self._pending.append(
            Crossing(
                cgroup_id=event.cgroup_id,
                level=event.level,
                usage=event.usage_pages * PAGE,
                ktime=event.ktime_ns / 1e9,
                pid=event.pid,
                signalled=bool(event.signalled),
            )
        )

    def watch(self, cid: int, warning: int, critical: int, armed: int) -> None:
        """Set a cgroup's thresholds (bytes) and armed bits in the probe's map."""
        value = self._watches.Leaf(warning // PAGE, critical // PAGE, armed, 0)
        self._watches[self._watches.Key(cid)] = value

    def unwatch(self, cid: int) -> None:
        key = self._watches.Key(cid)
        if key in self._watches:
            del self._watches[key]

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        for fd in (self._ready_r, self._ready_w):
            os.close(fd)


CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def may_load_kprobes() -> bool:
    effective = effective_capabilities()

    def has(cap: int) -> bool:
        return bool(effective >> cap & 1)

    return has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))


def _pid_namespace_flags() -> list[str]:
    """This process's PID namespace, as bpf_get_ns_current_pid_tgid() wants it (kernel dev_t)."""
    dev, ino = pid_namespace()
    return [f"-DPIDNS_DEV={dev}ULL", f"-DPIDNS_INO={ino}ULL"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def armed_for(level: int) -> int:
    """Thresholds the probe watches for a target at policy ``level`` (0 ok, 1 warning,
    2 critical). The policy leaves a level only past its re-arm point, so this re-arms each
    threshold exactly when the hysteresis lets it go."""
    bits = 0
    if level == 0:
        bits |= ARMED_WARNING
    if level <= 1:
        bits |= ARMED_CRITICAL
    return bits


class _ReadySignal:
    """The pipe that says the compile thread is done: as a source, it finishes the start-up."""

    name = "ebpf-start"
    mask = select.EPOLLIN

    def __init__(self, owner: ProbeWatches) -> None:
        self.owner = owner

    def fileno(self) -> int:
        return self.owner.probe.ready_fd()

    def consume(self) -> set[str]:
        self.owner.started()
        return set()


class ProbeWatches:
    """The probe as the engine sees it: targets in, crossings out, set up once compiled."""

    name = "ebpf"
    mask = select.EPOLLIN

    def __init__(self, signal_on_critical: int, register, unregister, say) -> None:
        self.probe = ChargeProbe(signal_on_critical)
        self.register, self.unregister, self.say = register, unregister, say
        self.ready = False
        self.targets: dict[str, int] = {}  # key → cgroup id
        self.keys: dict[int, str] = {}  # cgroup id → key
        self.wanted: dict[str, tuple[int, int, int]] = {}  # key → (warning, critical, armed)
        self.written: dict[str, tuple[int, int, int]] = {}
        self.crossings: dict[str, Crossing] = {}  # key → the latest, for the engine to read
        self._ready_signal = _ReadySignal(self)
        self.register(self._ready_signal)
        self.probe.start_in_background()

    def started(self) -> None:
        self.unregister(self._ready_signal)
        self._ready_signal = None
        if self.probe.error:
            self.say("source unavailable", source="ebpf", why=self.probe.error)
            return
        self.ready = True
        self.register(self)
        self.say(
            "source ready",
            source="ebpf",
            probe=self.probe.function,
            compile_seconds=round(self.probe.compile_seconds, 2),
        )
        for key in self.wanted:
            self._write(key)

    def add(self, key: str, cgroup: CgroupDir) -> None:
        cid = cgroup_id(cgroup)
        self.targets[key], self.keys[cid] = cid, key

    def follow(
        self, key: str, limit: int | None, warning: float, critical: float, level: int
    ) -> None:
        if key not in self.targets:
            return
        if limit is None:
            self.wanted[key] = (0, 0, 0)  # nothing to cross
        else:
            self.wanted[key] = (
                int(limit * warning / 100),
                int(limit * critical / 100),
                armed_for(level),
            )
        if self.ready:
            self._write(key)

    def _write(self, key: str) -> None:
        if self.written.get(key) != self.wanted[key]:
            self.probe.watch(self.targets[key], *self.wanted[key])
            self.written[key] = self.wanted[key]

    def remove(self, key: str) -> None:
        cid = self.targets.pop(key, None)
        self.keys.pop(cid, None)
        self.wanted.pop(key, None)
        if self.written.pop(key, None) is not None:
            self.probe.unwatch(cid)

    def watching(self, key: str) -> bool:
        return self.ready and key in self.targets

    def fileno(self) -> int:
        return self.probe.fileno()

    def consume(self) -> set[str]:
        woken = set()
        for crossing in self.probe.consume():
            key = self.keys.get(crossing.cgroup_id)
            if key is not None:
                # The probe disarmed what fired; the engine's next follow() re-arms from policy.
                self.written.pop(key, None)
                self.crossings[key] = crossing
                woken.add(key)
        return woken

    def hand_over(self, target) -> None:
        """Give the target the crossing that woke it, for the sample's log line; a process the
        probe signalled itself (--bpf-signal) is not signalled again."""
        target.crossing = self.crossings.pop(target.key, None)
        if target.crossing and target.crossing.signalled:
            target.signalled_in_kernel.add(target.crossing.pid)

    def close(self) -> None:
        if self.ready:
            self.unregister(self)
        elif self._ready_signal is not None:
            self.unregister(self._ready_signal)
        self.probe.close()
