"""The bloat app: a workload that grows at a set rate and reacts to oomhero's signals.

SIGUSR1 (warning)  → drops its "cache": frees up to --free-on-warning once, and logs it.
SIGUSR2 (critical) → marks ``/healthz`` unhealthy (HTTP 500) and logs it (and, with
                     --shed-on-critical, stops growing; with --exit-on-critical, exits 0, as
                     a batch job that saves its work and ends would).
SIGTERM            → exits 0.
Each event is a JSON line on stdout (and in ``--events FILE``) with CLOCK_MONOTONIC time and, where
the app can read its own cgroup, the kernel's usage figure at that moment — the ground truth
tests compare oomhero against.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import stat
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from oomhero.config import ConfigError, parse_port, parse_size
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.kernel.locate import open_own

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

CHUNK = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def read_usage(cgroup: CgroupDir | None) -> int | None:
    """Its own cgroup's usage, found as oomhero finds any process's cgroup."""
    if cgroup is None:
        return None
    try:
        return cgroup.usage()
    except CgroupError:
        return None  # e.g. the root cgroup, which has no memory.current


class Bloat:
    def __init__(
        self,
        rate: int,
        cache: int,
        stop_at: int | None,
        events,
        shed_on_critical: bool = False,
        exit_on_critical: bool = False,
    ) -> None:
        self.rate = rate
        self.cache = cache  # what is left to give back on a warning
        self.stop_at = stop_at
        self.events = events
        self.held: list[mmap.mmap] = []
        self.cgroup = open_own()
        self.healthy = True
        self.running = True
        self.shed_on_critical = shed_on_critical
        self.exit_on_critical = exit_on_critical

    @property
    def held_bytes(self) -> int:
        return len(self.held) * CHUNK

    def say(self, event: str, **fields: object) -> None:
        line = json.dumps(
            {
                "event": event,
                "t": time.clock_gettime(time.CLOCK_MONOTONIC),
                "pid": os.getpid(),
                "held": self.held_bytes,
                "cgroup_usage": read_usage(self.cgroup),
                **fields,
            }
        )
        print(line, flush=True)
        if self.events:
            self.events.write(line + "\n")
            self.events.flush()

    def on_warning(self, signum: int, _frame: object) -> None:
        before = self.held_bytes
        usage = read_usage(self.cgroup)
        keep = max(len(self.held) - self.cache // CHUNK, 0)
        self.cache -= (len(self.held) - keep) * CHUNK
        for chunk in self.held[keep:]:
            chunk.close()
        del self.held[keep:]
        self.say(
            "signal",
            signal=signal.Signals(signum).name,
            usage_at_signal=usage,
            freed=before - self.held_bytes,
        )

    def on_critical(self, signum: int, _frame: object) -> None:
        self.healthy = False
        self.say("signal", signal=signal.Signals(signum).name, healthz=500)
        if self.exit_on_critical:
            self.running = False

    def on_term(self, signum: int, _frame: object) -> None:
        self.running = False

    def grow(self) -> None:
        # Anonymous mmap, not bytearray: freeing unmaps at once (malloc could keep freed heap).
        chunk = mmap.mmap(-1, CHUNK)
        # Pages are charged when first written: touch one byte per page.
        chunk[::PAGE] = b"\x01" * (CHUNK // PAGE)
        self.held.append(chunk)

    def run(self) -> int:
        self.say("start", rate=self.rate)
        started = time.monotonic()
        grown = 0
        while self.running:
            shedding = self.shed_on_critical and not self.healthy
            if not shedding and (self.stop_at is None or self.held_bytes < self.stop_at):
                self.grow()
                grown += CHUNK
            # Pace by bytes allocated, so signals and frees do not change the rate.
            delay = started + grown / self.rate - time.monotonic()
            time.sleep(max(delay, 0.001))
        self.say("exit")
        return 0


def serve_health(bloat: Bloat, port: int) -> ThreadingHTTPServer:
    # Imported here: every oomhero command imports this module (bloat is a verb), and
    # imports are most of the start-up.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200 if bloat.healthy else 500
            body = b"ok\n" if bloat.healthy else b"unhealthy: memory critical\n"
            self.send_response(code if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="oomhero bloat", description=__doc__)
    parser.add_argument("--rate", default="16M", help="bytes allocated per second (default 16M)")
    parser.add_argument(
        "--free-on-warning",
        default="16M",
        metavar="SIZE",
        help="a cache it can drop: the first SIGUSR1 frees this much, later ones find nothing "
        "left, so growth goes on to critical (default 16M, 0 to free nothing)",
    )
    parser.add_argument("--stop-at", help="stop growing once this much is held (default: never)")
    parser.add_argument(
        "--port",
        default="8080",
        help="/healthz port on 127.0.0.1, 0 for none (default 8080)",
    )
    parser.add_argument("--events", help="also append the JSON event lines to this file")
    parser.add_argument(
        "--shed-on-critical",
        action="store_true",
        help="stop growing after SIGUSR2, as an app that sheds load would (default: keep growing)",
    )
    parser.add_argument(
        "--exit-on-critical",
        action="store_true",
        help="exit 0 after SIGUSR2, as a batch job that saves its work and ends would",
    )
    return parser


def open_events(path: str) -> TextIO:
    """The --events file, appended to: a regular file (created if missing), opened without
    blocking (a FIFO with no reader would hang the open)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise ConfigError(f"--events={path!r} cannot be opened: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"--events={path!r} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a")


def run_from_args(args: argparse.Namespace) -> int:
    try:
        rate = parse_size("--rate", args.rate)
        cache = (
            0
            if args.free_on_warning == "0"
            else parse_size("--free-on-warning", args.free_on_warning)
        )
        stop_at = parse_size("--stop-at", args.stop_at) if args.stop_at else None
        port = 0 if args.port == "0" else parse_port("--port", args.port)
        events = open_events(args.events) if args.events else None
    except ConfigError as exc:
        print(f"oomhero bloat: error: {exc}", file=sys.stderr)
        return 2
    bloat = Bloat(rate, cache, stop_at, events, args.shed_on_critical, args.exit_on_critical)
    signal.signal(signal.SIGUSR1, bloat.on_warning)
    signal.signal(signal.SIGUSR2, bloat.on_critical)
    signal.signal(signal.SIGTERM, bloat.on_term)
    if port:
        try:
            serve_health(bloat, port)
        except OSError as exc:
            print(
                f"oomhero bloat: error: cannot serve /healthz on port {args.port}: {exc.strerror}",
                file=sys.stderr,
            )
            return 2
    return bloat.run()


def main() -> int:
    return run_from_args(build_parser().parse_args())


if __name__ == "__main__":
    sys.exit(main())
