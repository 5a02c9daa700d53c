"""``oomhero watch``: chosen cgroups or PIDs, host view."""

from __future__ import annotations

import argparse

from oomhero.commands.common import (
    gather_settings,
    parse_outputs,
    resolve_targets,
    run_engine,
    setup_logging,
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
    # Every setting is checked before the targets: a bad one is reported first.
    gather_settings(args, use_env=True)
    parse_outputs(args)
    setup_logging(args, use_env=True)
    cgroups = resolve_targets(args.targets)
    return run_engine(args, lambda: CgroupScanner(cgroups))
