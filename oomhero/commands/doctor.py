"""``oomhero doctor``: what this machine supports, each line ok/missing with why."""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass

from oomhero.actions.signal import SendResult, send
from oomhero.commands.common import gather_settings
from oomhero.config import WatchSettings
from oomhero.kernel import features
from oomhero.kernel.cgroup import CgroupDir, CgroupError, read_text
from oomhero.kernel.locate import memory_mount, open_own, own_mounts
from oomhero.kernel.procfs import ProcessSet
from oomhero.sources import ebpf, probe
from oomhero.sources.ebpf import libbpf
from oomhero.targets import Found
from oomhero.targets.cgroups import CgroupScanner, resolve_cgroup
from oomhero.targets.pod import PodScanner

HELP = "what this machine supports, and can oomhero read/signal targets"
DESCRIPTION = "Each line: ok or missing, and why. Targets default to what sidecar mode would watch."
TARGETS = "*"
FLAGS = ()


def run(args: argparse.Namespace) -> int:
    checks = machine_checks()
    if args.targets:
        cgroups = []
        for spec in args.targets:
            try:
                cgroups.append(resolve_cgroup(spec))
            except CgroupError as exc:
                checks.append(Check(f"target {spec}", False, exc.strerror))
        found = CgroupScanner(cgroups).scan()
    else:
        found = PodScanner().scan()
    checks += target_checks(found, gather_settings(args, use_env=True))
    if not found:
        checks.append(Check("targets", False, "none found to watch"))
    for check in checks:
        print(check.line())
    memory = next(c for c in checks if c.name == "memory controller")
    return 0 if memory.ok else 1


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'missing':8} {self.name:22} {self.detail}"


def machine_checks() -> list[Check]:
    mounts = own_mounts()
    v2, v1 = memory_mount(mounts, 2), memory_mount(mounts, 1)
    checks = [
        Check("cgroup v2", v2 is not None, f"mounted at {v2.mount_point}" if v2 else "not mounted"),
        Check(
            "cgroup v1 memory",
            v1 is not None,
            f"mounted at {v1.mount_point}" if v1 else "no v1 memory hierarchy mounted",
        ),
    ]
    v2_memory = v2 is not None and "memory" in _read_words(f"{v2.mount_point}/cgroup.controllers")
    if v2_memory:
        where = f"on cgroup v2 at {v2.mount_point}"
    elif v1:
        where = f"on cgroup v1 at {v1.mount_point} (the v2 hierarchy has none)"
    else:
        where = "no hierarchy has it: nothing to watch"
    checks.append(Check("memory controller", v2_memory or v1 is not None, where))
    checks.append(_psi_check())
    checks.append(
        _inotify_check()
        if v2_memory
        else Check("inotify memory.events", False, "needs the memory controller on cgroup v2")
    )
    checks.append(_v1_threshold_check(v1.mount_point if v1 else None))
    checks += _ebpf_checks()
    return checks


def _read_words(path: str) -> list[str]:
    try:
        return read_text(path).split()
    except OSError:
        return []


def _psi_check() -> Check:
    error = features.psi_error()
    if error:
        return Check("PSI", False, f"{error} (kernel without CONFIG_PSI, or booted with psi=0)")
    return Check(
        "PSI",
        True,
        f"{features.PSI_MEMORY} readable; triggers need CAP_SYS_RESOURCE "
        "or a window that is a multiple of 2 s",
    )


def _inotify_check() -> Check:
    """The inotify source's own check, on this process's cgroup."""
    cgroup = open_own()
    if cgroup is None:
        return Check("inotify memory.events", False, "this process's cgroup cannot be seen here")
    try:
        if not cgroup.has("memory.events"):
            return Check(
                "inotify memory.events",
                False,
                "this process's cgroup has no memory.events (the root cgroup has none)",
            )
        _, missing = probe(cgroup, ("inotify",), None)
    finally:
        cgroup.close()
    if missing:
        return Check("inotify memory.events", False, missing["inotify"])
    return Check("inotify memory.events", True, f"watch on {cgroup.path}/memory.events accepted")


def _v1_threshold_check(v1_mount: str | None) -> Check:
    if v1_mount is None:
        return Check("v1 thresholds", False, "no cgroup v1 memory hierarchy")
    control = features.v1_event_control(v1_mount)
    if not os.path.exists(control):
        return Check("v1 thresholds", False, f"{control} does not exist")
    return Check("v1 thresholds", True, f"{control} present (eventfd thresholds)")


def _ebpf_checks() -> list[Check]:
    # The CO-RE loader's needs first (it is tried first), then bcc's, the fallback.
    btf = os.path.exists(ebpf.KERNEL_BTF)
    checks = [
        Check(
            "kernel BTF",
            btf,
            ebpf.KERNEL_BTF
            + ("" if btf else " missing: the prebuilt CO-RE probe cannot load, bcc must"),
        ),
        Check(
            "CO-RE object",
            ebpf.OBJECT.exists(),
            str(ebpf.OBJECT)
            + ("" if ebpf.OBJECT.exists() else " missing (built with clang: make, the wheel)"),
        ),
    ]
    try:
        libbpf.library()
        checks.append(Check("libbpf", True, f"{libbpf.SONAME} loaded"))
    except ebpf.ProbeError as exc:
        checks.append(Check("libbpf", False, str(exc)))
    with contextlib.suppress(ebpf.ProbeError):  # no charge function: "kprobe target" says so
        # The file being there is not enough: load it (each probe point in turn).
        function, why = ebpf.core_trial(tuple(ebpf.charge_functions()))
        checks.append(Check("CO-RE probe", why is None, why or f"loads and attaches ({function})"))
    try:
        import bcc  # noqa: F401

        checks.append(Check("bcc", True, "importable"))
    except ImportError:
        checks.append(
            Check(
                "bcc",
                False,
                "not importable by this Python: install python3-bpfcc and "
                "use a venv from /usr/bin/python3 with --system-site-packages",
            )
        )
    build, release = features.kernel_headers()
    checks.append(
        Check(
            "kernel headers",
            os.path.exists(build),
            build
            if os.path.exists(build)
            else f"{build} missing (install linux-headers-{release})",
        )
    )
    kprobes = features.kprobe_events()
    checks.append(
        Check(
            "kprobes",
            kprobes is not None,
            kprobes
            or "no kprobe_events in tracefs (kernel without CONFIG_KPROBES, or tracefs "
            "not mounted)",
        )
    )
    privileged = ebpf.may_load_kprobes()
    checks.append(
        Check(
            "bpf privileges",
            privileged,
            "CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN"
            + ("" if privileged else ": missing, the eBPF probe cannot load"),
        )
    )
    try:
        functions = ", ".join(ebpf.charge_functions())
        checks.append(Check("kprobe target", True, f"{functions} in /proc/kallsyms"))
    except ebpf.ProbeError as exc:
        checks.append(Check("kprobe target", False, str(exc)))
    return checks


def target_checks(found: dict[str, Found], settings: WatchSettings) -> list[Check]:
    checks = []
    for item in found.values():
        try:
            reader = item.open_reader()
            sample = reader.sample()
            where = f"{reader.path} ({reader.view} view)" if isinstance(reader, CgroupDir) else ""
            limit = "no limit" if sample.limit is None else f"limit {sample.limit // 2**20} MiB"
            checks.append(Check(f"read {item.name}", True, f"{where}, {limit}"))
            if isinstance(reader, CgroupDir):
                checks.append(source_check(item.name, reader, settings))
            reader.close()
        except (CgroupError, ValueError) as exc:
            checks.append(Check(f"read {item.name}", False, str(exc)))
        processes = ProcessSet()
        processes.sync(item.members)
        denied = []
        for process in processes.chosen("all"):
            if send(process, 0) is SendResult.DENIED:  # signal 0: a permission check only
                denied.append(process.pid)
        processes.close()
        checks.append(
            Check(
                f"signal {item.name}",
                not denied,
                f"not permitted for pids {denied}: needs the same UID or CAP_KILL"
                if denied
                else f"{len(item.members)} process(es) can be signalled",
            )
        )
    return checks


def source_check(name: str, cgroup: CgroupDir, settings: WatchSettings) -> Check:
    """Which kernel wake-up sources this target would get, and why the others not."""
    active, missing = probe(cgroup, settings.sources, settings.psi, settings.bcc)
    detail = ", ".join(active) or "none: polling only"
    detail += "".join(f"; {source}: {why}" for source, why in missing.items())
    return Check(f"sources {name}", bool(active), detail)
