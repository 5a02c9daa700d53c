"""``oomhero doctor``: what this machine supports, each line ok/missing with why."""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass, field

from oomhero.actions.signal import SendResult, send
from oomhero.commands.common import gather_settings
from oomhero.config import WatchSettings
from oomhero.config.table import WATCH_FLAGS, given
from oomhero.kernel import features
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.kernel.locate import memory_mount, open_own, own_mounts
from oomhero.kernel.procfs import ProcessSet, read_text
from oomhero.sources import ebpf, probe
from oomhero.sources.ebpf import libbpf
from oomhero.targets import Found
from oomhero.targets.cgroups import CgroupScanner, resolve_cgroup
from oomhero.targets.pod import PodScanner

HELP = "what this machine supports, can oomhero read/signal targets, and a verdict"
DESCRIPTION = (
    "Each line: ok, missing, or n/a (not needed here), and why; targets default to what sidecar "
    "mode would watch. The last line is the verdict: what oomhero will wake on here, what it "
    "cannot use and why, which targets it can watch. Exit 1 when something asked for cannot "
    "work: no memory controller, a target that cannot be read or signalled, a source named in "
    "OOMHERO_SOURCES that this machine cannot give."
)
TARGETS = "*"
FLAGS = ()
# The check that says whether each kernel wake-up source works on this machine.
SOURCE_CHECK = {
    "inotify": "inotify memory.events",
    "psi": "PSI",
    "eventfd": "v1 thresholds",
    "ebpf": "CO-RE probe",
}
BCC_NEEDS = ("bcc", "kernel headers", "kprobes", "bpf privileges", "kprobe target")


def run(args: argparse.Namespace) -> int:
    settings = gather_settings(args, use_env=True)
    asked_sources = "sources" in given(args, WATCH_FLAGS, use_env=True)
    checks = machine_checks()
    bad_targets: list[str] = []
    if args.targets:
        cgroups = []
        for spec in args.targets:
            try:
                cgroups.append(resolve_cgroup(spec))
            except CgroupError as exc:
                checks.append(Check(f"target {spec}", False, exc.strerror))
                bad_targets.append(f"{spec} ({exc.strerror})")
        found = CgroupScanner(cgroups).scan()
    else:
        found = PodScanner().scan()
    report = target_checks(found, settings)
    checks += report.checks
    if not found:
        checks.append(Check("targets", False, "none found to watch"))
    for check in checks:
        print(printable(check.line()))
    verdict = Verdict(checks, settings, asked_sources, report, bad_targets)
    print(printable(verdict.line()))
    return 0 if verdict.ok else 1


def printable(line: str) -> str:
    """A line for a terminal: what a name held of control characters (or bytes that are not
    UTF-8) shown escaped, never sent raw (an ESC would drive the terminal)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    applies: bool = True  # False: not needed on this machine (n/a), whatever it says

    def line(self) -> str:
        status = "ok" if self.ok else "missing" if self.applies else "n/a"
        return f"{status:8} {self.name:22} {self.detail}"


@dataclass
class TargetReport:
    checks: list[Check]
    watched: list[str]  # read and signalled
    unlimited: list[str]  # read, no limit: never signalled
    failed: list[str]  # name (why)
    active: set[str] = field(default_factory=set)  # sources some target gets


class Verdict:
    """The one line that answers "will oomhero work here, and on what does it wake?"."""

    def __init__(
        self,
        checks: list[Check],
        settings: WatchSettings,
        asked_sources: bool,
        targets: TargetReport,
        bad_targets: list[str],
    ) -> None:
        by_name = {check.name: check for check in checks}
        self.wakes, self.cannot = [], []
        for source in settings.sources:
            how = _source_works(source, by_name, settings.bcc)
            if source in targets.active and how is not True and source != "ebpf":
                how = True  # the target's own probe: doctor's cgroup may be the root (no events)
            if how is True:
                self.wakes.append(source)
            elif isinstance(how, str) and how.startswith("ebpf"):
                self.wakes.append(how)
            else:
                self.cannot.append((source, how or "not checked"))
        self.wakes.append("adaptive polling" if settings.interval is None else "fixed polling")
        memory = by_name["memory controller"]
        self.problems = [] if memory.ok else [f"no memory controller: {memory.detail}"]
        if asked_sources:
            self.problems += [f"{source} asked for in OOMHERO_SOURCES" for source, _ in self.cannot]
        self.targets, self.bad_targets = targets, bad_targets
        self.problems += targets.failed + bad_targets

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        said = f"verdict: on this machine oomhero will wake on: {', '.join(self.wakes)}"
        if self.cannot:
            said += "; it cannot use: " + "; ".join(
                f"{s} (because: {why})" for s, why in self.cannot
            )
        t = self.targets
        if t.watched:
            said += f"; it can watch and signal: {', '.join(t.watched)}"
        if t.unlimited:
            said += f"; no memory limit, never signalled: {', '.join(t.unlimited)}"
        if t.failed or self.bad_targets:
            said += f"; it cannot watch: {', '.join(t.failed + self.bad_targets)}"
        if not (t.watched or t.unlimited or t.failed or self.bad_targets):
            said += "; no target found to watch"
        if self.problems:
            said += " — NOT READY (exit 1)"
        return said


def _source_works(source: str, by_name: dict[str, Check], bcc: bool) -> bool | str | None:
    """True, or "ebpf (how)", or why not (None: no check says)."""
    check = by_name.get(SOURCE_CHECK[source])
    if source == "ebpf":
        if check is not None and check.ok:
            return "ebpf (CO-RE)"
        needs = [by_name[name] for name in BCC_NEEDS if name in by_name]
        if bcc and len(needs) == len(BCC_NEEDS) and all(c.ok for c in needs):
            return "ebpf (bcc)"
        if check is None:
            target = by_name.get("kprobe target")
            return target.detail if target else None
    if check is None:
        return None
    return True if check.ok else check.detail


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
    if v2_memory:
        checks += [_psi_check(), _inotify_check()]
    else:
        why = "needs the memory controller on cgroup v2 (per-cgroup memory.{})"
        checks.append(Check("PSI", False, why.format("pressure"), applies=False))
        checks.append(Check("inotify memory.events", False, why.format("events"), applies=False))
    if v1 is None:
        why = "needs the memory controller on cgroup v1 (cgroup.event_control)"
        checks.append(Check("v1 thresholds", False, why, applies=False))
    else:
        checks.append(_v1_threshold_check(v1.mount_point))
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
                "not probed here: this process's cgroup is the root, which has no "
                "memory.events (each target's sources line says)",
                applies=False,
            )
        _, missing = probe(cgroup, WatchSettings(sources=("inotify",)))
    finally:
        cgroup.close()
    if missing:
        return Check("inotify memory.events", False, missing["inotify"])
    return Check("inotify memory.events", True, f"watch on {cgroup.path}/memory.events accepted")


def _v1_threshold_check(v1_mount: str) -> Check:
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
    core = False
    with contextlib.suppress(ebpf.ProbeError):  # no charge function: "kprobe target" says so
        # The file being there is not enough: load it (each probe point in turn).
        function, why = ebpf.core_trial(tuple(ebpf.charge_functions()))
        core = why is None
        checks.append(Check("CO-RE probe", core, why or f"loads and attaches ({function})"))
    bcc_only = len(checks)  # what follows only the bcc fallback needs
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
    if core:  # the CO-RE probe loads: bcc, headers and kprobes are not needed here
        for check in checks[bcc_only:]:
            check.applies = False
    privileged = ebpf.may_load_kprobes()
    checks.append(
        Check(
            "bpf privileges",
            privileged,
            "CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN: "
            + ("held" if privileged else "missing, the eBPF probe cannot load"),
        )
    )
    try:
        functions = ", ".join(ebpf.charge_functions())
        checks.append(Check("kprobe target", True, f"{functions} in /proc/kallsyms"))
    except ebpf.ProbeError as exc:
        checks.append(Check("kprobe target", False, str(exc)))
    return checks


def target_checks(found: dict[str, Found], settings: WatchSettings) -> TargetReport:
    report = TargetReport([], [], [], [])
    for item in found.values():
        limited = readable = False
        try:
            reader = item.open_reader()
            try:
                sample = reader.sample()
                where = (
                    f"{reader.path} ({reader.view} view), " if isinstance(reader, CgroupDir) else ""
                )
                limited = sample.limit is not None
                limit = (
                    f"limit {sample.limit // 2**20} MiB" if limited else "no limit: never signalled"
                )
                report.checks.append(Check(f"read {item.name}", True, where + limit))
                readable = True
                if isinstance(reader, CgroupDir):
                    check, active = source_check(item.name, reader, settings)
                    report.checks.append(check)
                    report.active.update(active)
            finally:
                reader.close()
        except CgroupError as exc:
            report.checks.append(Check(f"read {item.name}", False, str(exc)))
            report.failed.append(f"{item.name} (cannot read: {exc})")
        processes = ProcessSet()
        processes.sync(item.members)
        denied = []
        for process in processes.chosen("all"):
            if send(process, 0) is SendResult.DENIED:  # signal 0: a permission check only
                denied.append(process.pid)
        processes.close()
        report.checks.append(
            Check(
                f"signal {item.name}",
                not denied,
                f"not permitted for pids {denied}: needs the same UID or CAP_KILL"
                if denied
                else f"{len(item.members)} process(es) can be signalled",
            )
        )
        if denied:
            report.failed.append(f"{item.name} (cannot signal pids {denied}: same UID or CAP_KILL)")
        elif readable:
            (report.watched if limited else report.unlimited).append(item.name)
    return report


def source_check(name: str, cgroup: CgroupDir, settings: WatchSettings) -> tuple[Check, list[str]]:
    """Which kernel wake-up sources this target would get, and why the others not."""
    active, missing = probe(cgroup, settings)
    detail = ", ".join(active) or "none: polling only"
    detail += "".join(f"; {source}: {why}" for source, why in missing.items())
    return Check(f"sources {name}", bool(active), detail), list(active)
