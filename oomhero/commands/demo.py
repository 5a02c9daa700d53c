"""``oomhero demo``: see it work, the bloat app under a limit, end to end."""

from __future__ import annotations

import argparse

from oomhero.commands.common import gather_settings, setup_logging
from oomhero.config import WatchSettings, parse_duration, parse_size
from oomhero.demo import driver

HELP = "see it work: the bloat app under a limit, end to end"
DESCRIPTION = driver.__doc__
FLAGS = ("watch",)
WATCH_DEFAULTS = WatchSettings(warning=65, critical=90)  # pod.yaml's, so the demo shows it


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory", default="128M", metavar="SIZE", help="the app's limit (default 128M)"
    )
    parser.add_argument(
        "--rate", default="32M", metavar="SIZE", help="app growth per second (default 32M)"
    )
    parser.add_argument(
        "--timeout", default="60s", metavar="DUR", help="give up after (default 60s)"
    )


def run(args: argparse.Namespace) -> int:
    settings = gather_settings(args, use_env=False)
    memory = parse_size("--memory", args.memory)
    rate = parse_size("--rate", args.rate)
    timeout = parse_duration("--timeout", args.timeout, 1, 3600)
    setup_logging(args, use_env=False)
    return driver.run_demo(memory, rate, settings, timeout)
