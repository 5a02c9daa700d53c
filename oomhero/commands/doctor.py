"""``oomhero doctor``: what this machine supports, each line ok/missing with why."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from oomhero.actions.signal import SendResult, send
from oomhero.commands.common import gather_settings
from oomhero.config import WatchSettings
from oomhero.config.table import WATCH_FLAGS, given
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.kernel.locate import memory_mount, own_mounts
from oomhero.kernel.procfs import ProcessSet, read_text
from oomhero.sources import SOURCES, probe
from oomhero.sources.base import Check, Machine
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
            wakes_as, why = SOURCES[source].works(by_name, settings)
            if wakes_as is None and source in targets.active:
                wakes_as = source  # the target's own trial: doctor's cgroup may be the root
            if wakes_as is not None:
                self.wakes.append(wakes_as)
            else:
                self.cannot.append((source, why or "not checked"))
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
    machine = Machine(v2.mount_point if v2_memory else None, v1.mount_point if v1 else None)
    for source in SOURCES.values():
        checks += source.doctor(machine)
    return checks


def _read_words(path: str) -> list[str]:
    try:
        return read_text(path).split()
    except OSError:
        return []


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
