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
    "cgroup of PIDs, with the sidecar's engine."
)
TARGETS = "+"
FLAGS = ("watch", "output")


def run(args: argparse.Namespace) -> int:
    gather_settings(args, use_env=True)  # bad settings are reported before bad targets
    parse_outputs(args)
    cgroups = resolve_targets(args.targets)
    return run_engine(args, lambda: CgroupScanner(cgroups))
