"""``oomhero`` / ``oomhero sidecar``: every other container of the pod."""

from __future__ import annotations

import argparse

from oomhero.commands.common import run_engine
from oomhero.targets.pod import PodScanner

HELP = "watch every other container of the pod (the default)"
DESCRIPTION = (
    "Watch every process of this PID namespace except oomhero's own container and the pause "
    "process, one target per memory cgroup, read through /proc/<pid>/root/sys/fs/cgroup."
)
FLAGS = ("watch", "output")


def run(args: argparse.Namespace) -> int:
    return run_engine(args, PodScanner)
