"""``oomhero top``: the watch engine with a live terminal view (top_view.py) instead of log lines.

It watches and signals exactly as ``oomhero watch`` does.

Keys (when stdin is a terminal, read in cbreak mode and restored on exit): ``s`` cycles the
sort (name → usage % → level), ``r`` reverses it, ``q`` quits; Ctrl-C and SIGTERM quit too.

Log lines: while stderr is a terminal they would tear the view, so the view shows the last
few instead; with stderr redirected (``2>top.log``) they go there, as ``watch``'s do. With
stdout not a terminal the view is printed once, when oomhero stops.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from typing import TYPE_CHECKING

from oomhero import log
from oomhero.commands.common import (
    gather_settings,
    parse_outputs,
    resolve_targets,
    say_cautions,
    setup_logging,
    start_outputs,
)
from oomhero.config import ConfigError
from oomhero.engine import Engine
from oomhero.targets.cgroups import CgroupScanner
from oomhero.targets.pod import PodScanner

if TYPE_CHECKING:
    from rich.console import Console

    from oomhero.commands.top_view import TopView

HELP = "watch as watch does, with a live view instead of log lines"
DESCRIPTION = (
    "The watch engine (it signals, as watch does) with a live view: usage against the limit "
    "and its marks, the last minute, level, last signal, wake-up sources, PSI. Keys: s sort, "
    "r reverse, q quit. Targets default to what sidecar mode would watch."
)
TARGETS = "*"
FLAGS = ("watch", "output")


def run(args: argparse.Namespace) -> int:
    try:
        import rich  # noqa: F401  (the view is drawn with it; imported where used, see show)
    except ImportError:
        raise ConfigError(
            "oomhero top draws its view with rich, which is not installed: "
            "pip install 'oomhero[cli]' (status and watch work without it)"
        ) from None
    settings = gather_settings(args, use_env=True)
    outputs = parse_outputs(args)
    cgroups = resolve_targets(args.targets)
    setup_logging(args, use_env=True)
    with Engine(CgroupScanner(cgroups) if cgroups else PodScanner(), settings) as engine:
        start_outputs(outputs, engine)
        say_cautions(settings)
        return show(engine)


class KeySource:
    """stdin as one more file descriptor of the engine's loop: each byte is a key."""

    name = "keys"
    mask = select.EPOLLIN

    def __init__(self, fd: int, view: TopView) -> None:
        self.fd = fd
        self.view = view

    def fileno(self) -> int:
        return self.fd

    def consume(self) -> set[str]:
        try:
            data = os.read(self.fd, 256)
        except (BlockingIOError, InterruptedError):
            return set()
        if not data:  # the terminal is gone: nobody is looking
            self.view.engine.stopping = True
        for char in data.decode(errors="ignore"):
            self.view.key(char)
        return set()


# -- running ---------------------------------------------------------------------------------
@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """Keys without Enter and without echo; the terminal's settings come back however this
    ends (an exception, q, SIGTERM or SIGINT: those stop the engine's loop)."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def show(engine, console: Console | None = None, stdin=None) -> int:
    """Run ``engine`` under the live view until q, SIGTERM or SIGINT."""
    # rich here: the CLI imports every command, and imports are most of oomhero's start-up.
    from rich.console import Console
    from rich.live import Live

    from oomhero.commands.top_view import REDRAW, TopView

    if console is None:
        # Piped output has no terminal width to fit: keep rows on one line, as status does.
        console = Console(width=None if sys.stdout.isatty() else 200)
    stdin = sys.stdin if stdin is None else stdin
    keyboard = _isatty(stdin)
    view = TopView(engine, keys=keyboard)
    engine.listeners.append(view)

    def stop(_signum: int, _frame: object) -> None:
        engine.stopping = True

    # SIGTERM before or after engine.run (which installs its own) still leaves through finally.
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with contextlib.ExitStack() as stack:
            if keyboard:
                stack.enter_context(cbreak(stdin.fileno()))
                engine.epoll.add(KeySource(stdin.fileno(), view))
            if _isatty(sys.stderr):
                stack.enter_context(view.capturing_logs())
            view.live = stack.enter_context(
                Live(
                    view.renderable(),
                    console=console,
                    auto_refresh=False,
                    screen=console.is_terminal,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
            )
            engine.run(max_wait=REDRAW)
            view.redraw(force=True)  # what a non-terminal stdout gets printed
    finally:
        signal.signal(signal.SIGTERM, previous)
        engine.listeners.remove(view)
    log.event(logging.INFO, "oomhero stopped", samples_by_wakeup=dict(engine.samples_by_wakeup))
    return 0


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
