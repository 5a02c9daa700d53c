"""``oomhero node``: one agent per node, every opted-in container of any runtime."""

from __future__ import annotations

import argparse
import os

from oomhero.commands.common import gather_settings, parse_outputs, plain_table, run_engine
from oomhero.config import ConfigError
from oomhero.config.table import NODE_ROOT_ENV
from oomhero.kernel.cgroup import CGROUP_MOUNT, CgroupError
from oomhero.targets import node

HELP = "one agent per node: every opted-in container (Kubernetes, podman, Docker, CRI-O, ...)"
DESCRIPTION = node.__doc__
FLAGS = ("watch", "output")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cgroup-root",
        metavar="PATH",
        help=f"where the host's cgroup tree is mounted (default {CGROUP_MOUNT}), or a cgroup "
        f"below it to look only there (env {NODE_ROOT_ENV})",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        dest="watch_all",
        help="watch every container, not only those that opt in by env",
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="also watch containers whose cgroup path (below the root) matches",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="scan once, print every container found (runtime, id, pod UID, watched or why "
        "not) and how many cgroups were scanned, then exit",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="never watch containers whose cgroup path matches (beats the rest)",
    )


def run(args: argparse.Namespace) -> int:
    settings = gather_settings(args, use_env=True)
    parse_outputs(args)  # every setting is checked before the cgroup root is opened
    root = args.cgroup_root or os.environ.get(NODE_ROOT_ENV, CGROUP_MOUNT)
    try:
        scanner = node.NodeScanner(root, settings, args.watch_all, args.include, args.exclude)
    except CgroupError as exc:
        raise ConfigError(f"--cgroup-root: {exc.strerror}") from None
    if args.list:
        print(listing(scanner), end="")
        return 0
    return run_engine(args, lambda: scanner)


COLUMNS = ("runtime", "container", "pod uid", "watched", "cgroup")


def listing(scanner: node.NodeScanner) -> str:
    """One scan as a plain table, and the scan's summary under it."""
    walked, seen = scanner.survey()
    rows = [COLUMNS] + [
        (
            s.container.labels.group,
            s.container.labels.container_id[:12] or "-",
            s.container.labels.pod_uid or "-",
            s.verdict,
            printable(s.container.name),
        )
        for s in sorted(seen, key=lambda s: s.container.name)
    ]
    lines = plain_table(rows)
    watched = sum(1 for s in seen if s.found)
    lines.append(
        f"scanned {walked} cgroups below {printable(scanner.memory)}: {len(seen)} containers, "
        f"{watched} watched"
    )
    return "\n".join(lines) + "\n"


def printable(text: str) -> str:
    """A cgroup's name as a terminal may show it: control characters escaped."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
