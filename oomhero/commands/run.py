"""``oomhero run``: a command under a memory limit, watched."""

from __future__ import annotations

import argparse
import errno
import logging
import subprocess
import sys

from oomhero import log
from oomhero.commands.common import (
    gather_settings,
    parse_outputs,
    say_cautions,
    setup_logging,
    start_outputs,
)
from oomhero.config import ConfigError, parse_size
from oomhero.engine import Engine
from oomhero.targets import launched

HELP = "run a command under a memory limit, watched"
DESCRIPTION = launched.__doc__
FLAGS = ("watch", "output")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory", required=True, metavar="SIZE", help="the limit: 256M, 1G, 512MiB"
    )
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def run(args: argparse.Namespace) -> int:
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        raise ConfigError(
            "run needs a command after --, e.g. oomhero run --memory 256M -- python app.py"
        )
    limit = parse_size("--memory", args.memory)
    settings = gather_settings(args, use_env=True)
    outputs = parse_outputs(args)
    setup_logging(args, use_env=True)
    try:
        placement = launched.start(command, limit)
    except OSError as exc:
        # As a shell says it: 127 when there is no such command, 126 when it cannot run.
        name = command[0] if command[0].isprintable() and command[0] else repr(command[0])
        if exc.errno == errno.ENOENT or not command[0]:
            print(f"oomhero: error: command not found: {name}", file=sys.stderr)
            return 127
        print(f"oomhero: error: cannot run {name}: {exc.strerror or exc}", file=sys.stderr)
        return 126
    except subprocess.SubprocessError as exc:  # the child could not join the group
        print(f"oomhero: error: cannot start the command in its group: {exc}", file=sys.stderr)
        return 126
    pid = placement.process.pid
    try:
        if placement.enforced:
            log.event(logging.INFO, "running under a cgroup v2 limit", pid=pid, how=placement.why)
        else:
            log.event(
                logging.WARNING,
                "SOFT LIMIT: watching the process tree's RSS, the kernel does not enforce it",
                pid=pid,
                why=placement.why,
            )
        with Engine(placement.scanner, settings) as engine:
            start_outputs(outputs, engine)
            say_cautions(settings)
            engine.run(until=lambda: placement.process.poll() is not None)
    finally:
        code = placement.finish()  # oomhero was told to stop: passed on to the command
    return code if code >= 0 else 128 - code
