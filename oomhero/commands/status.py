"""``oomhero status``: one row per memory cgroup, as a table (rich's where it is installed,
plain text where not: the ``cli`` extra) or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from oomhero.commands.common import plain_table
from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.kernel.locate import membership_of, open_for_pid
from oomhero.kernel.procfs import list_pids, read_proc
from oomhero.sources import probe
from oomhero.targets.cgroups import resolve_cgroup

if TYPE_CHECKING:
    from rich.console import Console

MIB = 1024 * 1024
HELP = "table of memory cgroups: usage, limit, events, PSI"
DESCRIPTION = (
    "Usage, limit, percent, working set, memory.events counters and PSI avg10 of the given "
    "cgroups/PIDs, or of every process's cgroup."
)
TARGETS = "*"
FLAGS = ()


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = collect(args.targets)
    if args.json:
        print(to_json(rows))
    else:
        # rich when a table is drawn: the CLI imports every command, and imports are most
        # of oomhero's start-up (seconds under emulation). The image leaves it out.
        try:
            from rich.console import Console
        except ImportError:
            print(plain(rows), end="")
        else:
            # Piped output has no terminal width to wrap to: keep paths on one line.
            render(rows, Console(width=None if sys.stdout.isatty() else 200))
    return 1 if any(row.error for row in rows) and args.targets else 0


@dataclass
class Row:
    cgroup: str
    version: int
    processes: int | None
    usage: int | None = None
    limit: int | None = None
    percent: float | None = None
    working_set: int | None = None
    events: dict[str, int] | None = None
    psi_some_avg10: float | None = None
    psi_full_avg10: float | None = None
    sources: list[str] | None = None  # kernel wake-up sources that would work (default settings)
    sources_missing: dict[str, str] | None = None
    error: str | None = None


def row_for(cgroup: CgroupDir, processes: int | None) -> Row:
    row = Row(cgroup.path, cgroup.version, processes)
    try:
        sample = cgroup.sample()
        row.usage, row.limit, row.working_set = sample.current, sample.limit, sample.working_set
        if sample.limit:
            row.percent = round(sample.current * 100 / sample.limit, 1)
        row.events = cgroup.events()
        defaults = WatchSettings()
        row.sources, row.sources_missing = probe(cgroup, defaults)
        pressure = cgroup.pressure()
        if pressure:
            row.psi_some_avg10 = pressure.get("some", {}).get("avg10")
            row.psi_full_avg10 = pressure.get("full", {}).get("avg10")
    except CgroupError as exc:
        row.error = str(exc)
    return row


def collect(specs: list[str]) -> list[Row]:
    """Rows for the given cgroups/PIDs; with none, for the cgroup of every process here."""
    rows = []
    if specs:
        for spec in specs:
            try:
                cgroup = resolve_cgroup(spec)
            except CgroupError as exc:
                rows.append(Row(spec, 0, None, error=exc.strerror))
                continue
            try:
                rows.append(row_for(cgroup, len(set(cgroup.subtree_pids()))))
            finally:
                cgroup.close()
        return rows
    groups: dict[str, list[int]] = {}
    for pid in list_pids():
        info = read_proc(pid)
        membership = membership_of(pid)
        if info and not info.kthread and membership:
            groups.setdefault(membership.key, []).append(pid)
    for key, pids in sorted(groups.items()):
        try:
            cgroup = open_for_pid(pids[0], prefer_root_view=False)
        except CgroupError as exc:
            rows.append(Row(key, int(key[1]), len(pids), error=exc.strerror))
            continue
        try:
            rows.append(row_for(cgroup, len(pids)))
        finally:
            cgroup.close()
    return rows


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


TITLE = "memory cgroups (MiB)"
COLUMNS = (
    "cgroup",
    "v",
    "procs",
    "usage",
    "limit",
    "%",
    "working set",
    "events",
    "PSI some/full avg10",
    "wake-ups",
)


def cells(row: Row) -> list[str]:
    """A row's cells; an error takes the usage cell and leaves the rest blank."""
    if row.error:
        return [row.cgroup, str(row.version or "?"), str(row.processes or "-"), row.error]
    events = " ".join(f"{k}={v}" for k, v in (row.events or {}).items() if v) or "-"
    psi = "-" if row.psi_some_avg10 is None else f"{row.psi_some_avg10}/{row.psi_full_avg10}"
    return [
        row.cgroup,
        str(row.version),
        str(row.processes if row.processes is not None else "-"),
        _mib(row.usage),
        "no limit" if row.limit is None else _mib(row.limit),
        "-" if row.percent is None else f"{row.percent}",
        _mib(row.working_set),
        events,
        psi,
        " ".join(row.sources or []) or "polling only",
    ]


def missing_lines(rows: list[Row]) -> list[str]:
    missing = {(s, why) for row in rows for s, why in (row.sources_missing or {}).items()}
    return [f"{source}: {why}" for source, why in sorted(missing)]


def render(rows: list[Row], console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=TITLE)
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        values = cells(row)
        if row.error:  # in red, and never read as markup
            values[3] = Text(row.error, style="red")
        table.add_row(*values)
    console.print(table)
    for line in missing_lines(rows):
        console.print(line, highlight=False, markup=False)


def plain(rows: list[Row]) -> str:
    """The table as plain text, columns padded to their widest cell (no rich)."""
    grid = [list(COLUMNS)] + [cells(row) + [""] * (len(COLUMNS) - len(cells(row))) for row in rows]
    return "\n".join([TITLE, *plain_table(grid), *missing_lines(rows)]) + "\n"


def to_json(rows: list[Row]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2)
