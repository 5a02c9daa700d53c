"""Command line: the parser built from the settings table and the commands' own arguments.

Each verb is a module of ``oomhero.commands`` with HELP, DESCRIPTION, FLAGS (which groups of the
settings table it takes), ``run(args)``, and where it has them TARGETS (nargs of the CGROUP|PID
positional) and ``arguments(parser)`` for its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import NoReturn

from oomhero import __version__, log
from oomhero.commands import bloat, demo, doctor, node, run, sidecar, status, top, watch
from oomhero.config import ConfigError, WatchSettings
from oomhero.config.table import KNOWN_ENV, LOG_FLAGS, OUTPUT_FLAGS, WATCH_FLAGS, Flag
from oomhero.kernel.procfs import raise_open_file_limit
from oomhero.targets.node import CONTAINER_ENV

COMMANDS = {
    "sidecar": sidecar,
    "watch": watch,
    "top": top,
    "node": node,
    "status": status,
    "run": run,
    "doctor": doctor,
    "demo": demo,
    "bloat": bloat,
}

DESCRIPTION = """\
oomhero watches memory cgroups and signals their processes before the OOM killer does:
SIGUSR1 when usage crosses the warning share of the limit, SIGUSR2 at the critical share.

With no command it runs as a Kubernetes sidecar (pod with shareProcessNamespace: true),
configured by the env vars WARNING, CRITICAL, COOLDOWN, WARNING_SIGNAL, CRITICAL_SIGNAL."""

EPILOG = """\
examples:
  oomhero demo                                  see it work, on any Linux
  oomhero                                       sidecar mode (env vars or flags)
  WARNING=65 CRITICAL=90 COOLDOWN=10s oomhero   OOMHero's settings, unchanged
  oomhero status                                memory cgroups of this machine
  oomhero watch /sys/fs/cgroup/my.slice 1234    watch a cgroup and a PID's cgroup
  oomhero run --memory 256M -- python app.py    run a command under a limit, watched
  oomhero top /sys/fs/cgroup/my.slice           the same, as a live view
  oomhero node --all                            node agent: every container under kubepods
  oomhero doctor                                what this kernel supports"""


def add_flags(
    parser: argparse.ArgumentParser, flags: tuple[Flag, ...], defaults: WatchSettings, env: bool
) -> None:
    """The table's ``flags`` as argument groups; ``env``: the help names each env var."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in flags:
        if flag.group not in groups:
            beat = " (flags beat env vars)" if env else ""
            groups[flag.group] = parser.add_argument_group(flag.group + beat)
        text = flag.help.format(**defaults.__dict__) + (f" (env {flag.env})" if env else "")
        if flag.const is not None:
            groups[flag.group].add_argument(
                flag.flag, dest=flag.key, action="store_const", const=flag.const, help=text
            )
        else:
            groups[flag.group].add_argument(
                flag.flag,
                dest=flag.key,
                metavar=flag.metavar,
                help=text,
                action="append" if flag.repeat else "store",
            )


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, as every other error is (the usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="oomhero",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"oomhero {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        # A module docstring as description keeps its own lines; a sentence is wrapped.
        raw = "\n" in command.DESCRIPTION
        p = sub.add_parser(
            name,
            help=command.HELP,
            description=command.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter,
        )
        if hasattr(command, "TARGETS"):  # the commands that take cgroups or PIDs
            p.add_argument("targets", nargs=command.TARGETS, metavar="CGROUP|PID")
        if hasattr(command, "arguments"):
            command.arguments(p)
        # A command with defaults of its own (the demo) takes no env vars: it shows, it is not
        # configured.
        own_defaults = getattr(command, "WATCH_DEFAULTS", None)
        defaults, env = own_defaults or WatchSettings(), own_defaults is None
        if "watch" in command.FLAGS:
            add_flags(p, WATCH_FLAGS + LOG_FLAGS, defaults, env)
            p.set_defaults(watch_defaults=defaults)
        if "output" in command.FLAGS:
            add_flags(p, OUTPUT_FLAGS, defaults, env=True)
    return parser


# The commands that take settings from the env, where a misspelt OOMHERO_* would be lost;
# status, bloat and demo ignore the env (a pod's configuration) and start whatever it holds.
ENV_COMMANDS = ("sidecar", "watch", "top", "node", "run", "doctor")


def check_unknown_env(command: str = "sidecar") -> None:
    """An OOMHERO_* variable that nothing reads is a typo: refuse it. A node agent's
    per-container opt-in (OOMHERO_WARNING, ...) is known: any container may carry it, the
    agent's own or an app's that runs this image."""
    if command not in ENV_COMMANDS:
        return
    known = KNOWN_ENV | set(CONTAINER_ENV)
    # OOMHERO_GUEST_* belong to the test harness (guest/run), not to oomhero.
    unknown = sorted(
        k
        for k in os.environ
        if k.startswith("OOMHERO_") and not k.startswith("OOMHERO_GUEST_") and k not in known
    )
    if unknown:
        raise ConfigError(
            f"unknown setting {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_ENV))})"
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "sidecar")
    args = build_parser().parse_args(argv)
    try:
        check_unknown_env(args.command)
        raise_open_file_limit()  # a target holds a few descriptors for as long as it is watched
        return COMMANDS[args.command].run(args)
    except ConfigError as exc:
        print(f"oomhero: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not log.LOGGER.handlers:
            raise  # a command that does not log: Python's traceback
        # Once lines go to a log agent, a crash is one more line of the same format.
        why = f"{type(exc).__name__}: {exc}"
        log.event(logging.CRITICAL, "crashed", why=why, traceback=traceback.format_exc())
        return 1
