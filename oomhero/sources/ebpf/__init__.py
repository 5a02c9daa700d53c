"""The ``ebpf`` wake-up source: a probe on the memcg charge path (bpf/).

The probe checks each watched cgroup's thresholds in the kernel as pages are charged, so a
crossing is seen at the charge that makes it, not at the next sample. Two loaders serve it:
the prebuilt libbpf CO-RE object (``core``: loads in a fraction of a second, no compiler), used
wherever the kernel has BTF; and bcc (``ChargeProbe``: compiles at start against the
kernel's headers, seconds, tens of seconds under emulation), the fallback where there is no BTF
or the object is refused. Loading happens in a helper thread while the other sources and
polling already run; the loop learns it is ready through a pipe and then takes the probe's ring
buffer into its epoll like any other source. Every problem — no privilege, no charge function,
then for bcc no bcc, no headers, a compile error — becomes one ``Unavailable`` reason.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import threading

from oomhero.config.table import BPF_ATTACH_ENV
from oomhero.kernel.cgroup import CgroupDir
from oomhero.sources.ebpf import common
from oomhero.sources.ebpf.bcc import ChargeProbe, bcc_prerequisites
from oomhero.sources.ebpf.common import (
    ARMED_CRITICAL,
    ARMED_WARNING,
    CHARGE_FUNCTIONS,
    PAGE,
    Crossing,
    ProbeError,
    armed_for,
    charge_function,
    first_line,
    may_load_kprobes,
    next_armed_bit,
)
from oomhero.sources.ebpf.core import OBJECT, CoreProbe

__all__ = [
    "ARMED_CRITICAL",
    "ARMED_WARNING",
    "BCC_NOT_ASKED",
    "CHARGE_FUNCTIONS",
    "OBJECT",
    "PAGE",
    "ChargeProbe",
    "Crossing",
    "ProbeError",
    "ProbeWatches",
    "armed_for",
    "charge_function",
    "core_refusal",
    "may_load_kprobes",
    "prerequisites",
]

# The kernel's own BTF: where it is, the CO-RE object can be relocated (and fentry attached).
KERNEL_BTF = "/sys/kernel/btf/vmlinux"


# Why the default does not compile: bcc costs tens of seconds and ~160 MiB at every start.
BCC_NOT_ASKED = (
    "the bcc fallback (a compile at start, LLVM in this process) runs only when asked for: "
    "name ebpf in --sources"
)


def prerequisites(btf: str = KERNEL_BTF, bcc: bool = True) -> str:
    """Check the probe would load, for doctor and status; returns the function to probe. The
    CO-RE object is loaded and closed again to know (BTF and the file tell too little: a
    locked-down kernel refuses the load); where it is refused, bcc's needs (if ``bcc``)."""
    function = common.prerequisites()
    why = core_refusal(function, btf)
    if why is None:
        return function
    if not bcc:
        raise ProbeError(f"{why}; {BCC_NOT_ASKED}")
    try:
        bcc_prerequisites()
    except ProbeError as exc:
        raise ProbeError(f"{why}; bcc: {exc}") from None
    return function


@functools.cache
def core_refusal(function: str, btf: str = KERNEL_BTF) -> str | None:
    """Why the CO-RE probe does not load here, None when it does (a trial load, once)."""
    probe, why = _load_core(0, function, btf)
    if probe is not None:
        probe.close()
    return why


# One way of attaching, forced (the bench compares them): fentry or kprobe (the CO-RE object),
# or bcc (its compiled kprobe, as where there is no BTF). Unset: fentry, then kprobe, then bcc.
ATTACH_ENV = BPF_ATTACH_ENV
ATTACH_CHOICES = ("fentry", "kprobe", "bcc")


def _load_core(
    signal_on_critical: int, function: str, btf: str, attach: str | None = None
) -> tuple[CoreProbe | None, str | None]:
    """The CO-RE probe loaded and attached (by ``attach`` only, when given), or None and why
    not."""
    if attach == "bcc":
        return None, f"{ATTACH_ENV}=bcc"
    if not os.path.exists(btf):
        return None, f"no kernel BTF at {btf}"
    core = CoreProbe(signal_on_critical)
    try:
        core.start(function, attach)
    except ProbeError as exc:
        return None, f"the CO-RE object was refused: {exc}"
    return core, None


def load_probe(
    signal_on_critical: int, btf: str = KERNEL_BTF, bcc: bool = True
) -> tuple[object, str | None]:
    """The probe, loaded and attached: CO-RE where the kernel has BTF, else (or when the object
    is refused) bcc, if ``bcc``. Returns it and why it is not CO-RE (None when it is);
    ProbeError when neither loads, naming both reasons."""
    function = common.prerequisites()  # both loaders need these: no point trying either
    attach = os.environ.get(ATTACH_ENV) or None
    if attach not in (None, *ATTACH_CHOICES):
        raise ProbeError(f"{ATTACH_ENV}={attach}: expected one of {', '.join(ATTACH_CHOICES)}")
    core, why = _load_core(signal_on_critical, function, btf, attach)
    if core is not None:
        return core, None
    if not bcc:
        raise ProbeError(f"{why}; {BCC_NOT_ASKED}")
    probe = ChargeProbe(signal_on_critical)
    try:
        probe.start(function)
    except ProbeError as exc:
        raise ProbeError(f"{why}; bcc: {exc}") from None
    return probe, why


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
        register,
        unregister,
        say,
        bcc: bool = True,
        btf: str = KERNEL_BTF,
    ) -> None:
        """``bcc``: fall back to compiling with bcc where the CO-RE object cannot load."""
        self.register, self.unregister, self.say = register, unregister, say
        self.probe: CoreProbe | ChargeProbe | None = None
        self.error: str | None = None
        self.why_not_core: str | None = None
        self.ready = False
        self.targets: dict[str, int] = {}  # key → cgroup id
        self.keys: dict[int, str] = {}  # cgroup id → key
        self.wanted: dict[str, tuple[int, int, int]] = {}  # key → (warning, critical, armed)
        self.written: dict[str, tuple[int, int, int]] = {}
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
        why = self.why_not_core or (f"fentry refused: {probe.refused}" if probe.refused else None)
        self.say(
            "source ready",
            source="ebpf",
            loader=probe.loader,
            attach=probe.attach,
            function=probe.function,
            load_seconds=round(probe.load_seconds, 2),
            **({"why": why} if why else {}),
        )
        for key in self.wanted:
            self._write(key)

    def add(self, key: str, cgroup: CgroupDir) -> None:
        cid = cgroup_id(cgroup)
        self.targets[key], self.keys[cid] = cid, key

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
        if limit is None:
            self.wanted[key] = (0, 0, 0)  # nothing to cross
        else:
            at_warning, at_critical = int(limit * warning / 100), int(limit * critical / 100)
            armed = armed_for(level, usage, at_warning, at_critical)
            self.wanted[key] = (at_warning, at_critical, armed)
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

    def armed(self, key: str, level: int) -> bool:
        """The probe checks this target's next threshold above ``level`` at every charge: it
        is in the probe's map with its armed bit set."""
        bit = next_armed_bit(level)
        return self.ready and bit != 0 and bool(self.written.get(key, (0, 0, 0))[2] & bit)

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
            # Still loading: the thread's late write finds the pipe closed; a probe it loads
            # goes with the process.
            self.unregister(self._ready_signal)
            self._ready_signal.close()
            return
        if self.probe is not None:
            self.probe.close()
