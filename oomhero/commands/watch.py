"""``oomhero watch``: chosen cgroups or PIDs, host view."""

from __future__ import annotations

import argparse

from oomhero.commands.common import (
    gather_settings,
    parse_outputs,
    resolve_targets,
    run_engine,
)
from oomhero.targets.cgroups import CgroupScanner

HELP = "watch chosen cgroups or PIDs (host view)"
DESCRIPTION = (
    "Watch cgroups (a path, absolute or below the memory hierarchy's mount) or the memory "
    "cgroup of PIDs, with the sidecar's engine. A cgroup given by path that is removed (a "
    "service or container restarted) is watched again as soon as one exists under that path "
    "again; one given by PID ends with it. Exit status 2 when a target cannot be watched at "
    "start: not a memory cgroup, not on cgroupfs, or a file in it that is not the kernel's."
)
TARGETS = "+"
FLAGS = ("watch", "output")


def run(args: argparse.Namespace) -> int:
    gather_settings(args, use_env=True)  # bad settings are reported before bad targets
    parse_outputs(args)
    cgroups = resolve_targets(args.targets)
    return run_engine(args, lambda: CgroupScanner(cgroups))
