"""``ebpf`` as a ``WakeSource``: a thin face over ``ebpf.ProbeWatches``, the one probe for all
targets (loaded in a helper thread; it registers its own descriptors as it becomes ready)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from oomhero.kernel import features
from oomhero.kernel.cgroup import CgroupDir, MemorySample
from oomhero.sources import ebpf
from oomhero.sources.base import Check, Loop, Machine, Wake, WakeSource, wake_source
from oomhero.sources.ebpf import ProbeWatches, libbpf
from oomhero.sources.unavailable import Unavailable

if TYPE_CHECKING:
    from oomhero.config import WatchSettings


# doctor's lines that the bcc fallback needs, all of them.
BCC_NEEDS = ("bcc", "kernel headers", "kprobes", "bpf privileges", "kprobe target")


@wake_source
class EbpfSource(WakeSource):
    name = "ebpf"
    check = "CO-RE probe"

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
        found = {key: self.watches.crossing(key) for key in keys}
        return Wake(keys, self.name, {k: c for k, c in found.items() if c is not None})

    def queued(self, key: str) -> object | None:
        if not self.watches.ready:
            return None
        others = self.watches.consume() - {key}
        if others:
            self.loop.resample(others)  # their crossings wait in the watches for their sample
        return self.watches.crossing(key)

    def detach(self, key: str) -> None:
        self.watches.remove(key)

    def close(self) -> None:
        self.watches.close()

    @classmethod
    def works(cls, checks: dict[str, Check], settings: WatchSettings) -> tuple[str | None, str]:
        """As "ebpf (CO-RE)", else as "ebpf (bcc)" where bcc is asked for and has all it needs."""
        check = checks.get(cls.check)
        if check is not None and check.ok:
            return "ebpf (CO-RE)", ""
        needs = [checks[name] for name in BCC_NEEDS if name in checks]
        if settings.bcc and len(needs) == len(BCC_NEEDS) and all(c.ok for c in needs):
            return "ebpf (bcc)", ""
        if check is None:
            target = checks.get("kprobe target")
            return None, target.detail if target else ""
        return None, check.detail

    @classmethod
    def doctor(cls, machine: Machine) -> list[Check]:
        # The CO-RE loader's needs first (it is tried first), then bcc's, the fallback.
        btf = os.path.exists(ebpf.KERNEL_BTF)
        no_btf = " missing: the prebuilt CO-RE probe cannot load, bcc must"
        no_object = " missing (built with clang: make, the wheel)"
        checks = [
            Check("kernel BTF", btf, ebpf.KERNEL_BTF + ("" if btf else no_btf)),
            Check(
                "CO-RE object",
                ebpf.OBJECT.exists(),
                str(ebpf.OBJECT) + ("" if ebpf.OBJECT.exists() else no_object),
            ),
        ]
        try:
            libbpf.library()
            checks.append(Check("libbpf", True, f"{libbpf.SONAME} loaded"))
        except ebpf.ProbeError as exc:
            checks.append(Check("libbpf", False, str(exc)))
        core = False
        with contextlib.suppress(ebpf.ProbeError):  # no charge function: "kprobe target" says
            # The file being there is not enough: load it (each probe point in turn).
            function, why = ebpf.core_trial(tuple(ebpf.charge_functions()))
            core = why is None
            checks.append(Check(cls.check, core, why or f"loads and attaches ({function})"))
        bcc_only = len(checks)  # what follows only the bcc fallback needs
        try:
            import bcc  # noqa: F401

            checks.append(Check("bcc", True, "importable"))
        except ImportError:
            why = (
                "not importable by this Python: install python3-bpfcc and "
                "use a venv from /usr/bin/python3 with --system-site-packages"
            )
            checks.append(Check("bcc", False, why))
        build, release = features.kernel_headers()
        headers = os.path.exists(build)
        missing = f"{build} missing (install linux-headers-{release})"
        checks.append(Check("kernel headers", headers, build if headers else missing))
        kprobes = features.kprobe_events()
        no_kprobes = (
            "no kprobe_events in tracefs (kernel without CONFIG_KPROBES, or tracefs not mounted)"
        )
        checks.append(Check("kprobes", kprobes is not None, kprobes or no_kprobes))
        if core:  # the CO-RE probe loads: bcc, headers and kprobes are not needed here
            for check in checks[bcc_only:]:
                check.applies = False
        privileged = ebpf.may_load_kprobes()
        held = "held" if privileged else "missing, the eBPF probe cannot load"
        checks.append(
            Check(
                "bpf privileges", privileged, f"CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN: {held}"
            )
        )
        try:
            functions = ", ".join(ebpf.charge_functions())
            checks.append(Check("kprobe target", True, f"{functions} in /proc/kallsyms"))
        except ebpf.ProbeError as exc:
            checks.append(Check("kprobe target", False, str(exc)))
        return checks
