"""``oomhero bloat``: the example app (oomhero.demo.bloat) as a command."""

from __future__ import annotations

import argparse

from oomhero.demo import bloat

HELP = "the example app: grows, frees on SIGUSR1, fails /healthz on SIGUSR2"
DESCRIPTION = bloat.__doc__
FLAGS = ()


def arguments(parser: argparse.ArgumentParser) -> None:
    bloat.build_parser(parser)


def run(args: argparse.Namespace) -> int:
    return bloat.run_from_args(args)
