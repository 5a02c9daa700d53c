"""Grows 1 MiB at a time and tells exactly when its SIGUSR2 handler ran, relative to its own
allocations: with the signal sent from the charge path (--bpf-signal) the handler must run
before the allocation after the crossing one begins.

usage: charge_race.py USAGE_FILE CRITICAL_BYTES OUT_JSON   (exits once handled, or at 95 %)
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
    usage_file, critical, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    held: list[mmap.mmap] = []
    state = {"chunks_when_handled": None, "crossed_in_chunk": None, "handled": 0}

    def on_critical(_signum: int, _frame: object) -> None:
        state["handled"] += 1
        if state["chunks_when_handled"] is None:
            state["chunks_when_handled"] = len(held)

    signal.signal(signal.SIGUSR2, on_critical)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the warning on the way up is not the point
    with open(usage_file) as f:
        limit_guard = critical * 95 // 80  # stop well before the OOM killer
        while state["chunks_when_handled"] is None and _usage(f) < limit_guard:
            chunk = mmap.mmap(-1, CHUNK)
            chunk[::PAGE] = b"\x01" * (CHUNK // PAGE)  # the charges happen here
            held.append(chunk)
            if state["crossed_in_chunk"] is None and _usage(f) >= critical:
                state["crossed_in_chunk"] = len(held)
        time.sleep(1)  # a late or second signal would still be counted
    with open(out, "w") as f:
        json.dump(state, f)
    return 0


def _usage(f) -> int:
    f.seek(0)
    return int(f.read())


if __name__ == "__main__":
    sys.exit(main())
