"""A workload steered line by line on stdin, for guest tests that need usage to go up and down.

    to PCT   allocate or free 1 MiB chunks until the cgroup's usage is in [PCT, PCT + 2) % of its
             limit; answers "ok <percent>"
    quit     exit 0
Every signal it receives is appended as a JSON line to EVENTS, with CLOCK_MONOTONIC time and the
cgroup's usage at that moment.

usage: workload.py USAGE_FILE LIMIT_FILE EVENTS
"""

from __future__ import annotations

import json
import mmap
import signal
import sys
import time

CHUNK = 1 << 20
PAGE = mmap.PAGESIZE


def main() -> int:
    usage_file, limit_file, events_path = sys.argv[1:4]
    with open(limit_file) as f:
        limit = int(f.read())
    held: list[mmap.mmap] = []
    events = open(events_path, "a")

    def percent() -> float:
        with open(usage_file) as f:
            return int(f.read()) * 100 / limit

    def on_signal(signum: int, _frame: object) -> None:
        record = {
            "signal": signal.Signals(signum).name,
            "t": time.monotonic(),
            "percent": percent(),
        }
        events.write(json.dumps(record) + "\n")
        events.flush()

    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, on_signal)

    for line in sys.stdin:
        words = line.split()
        if words == ["quit"]:
            return 0
        target = float(words[1])
        while percent() < target:
            chunk = mmap.mmap(-1, CHUNK)
            chunk[::PAGE] = b"\x01" * (CHUNK // PAGE)
            held.append(chunk)
        while percent() >= target + 2 and held:
            held.pop().close()
        print(f"ok {percent():.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
