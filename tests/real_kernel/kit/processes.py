"""Processes the tests run: oomhero itself, the bloat app, the steerable workload."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.real_kernel.kit.cgroups import Cgroup
from tests.real_kernel.kit.guest import REPO, read_jsonl

WORKLOAD = REPO / "tests" / "real_kernel" / "workload.py"


def oomhero(*args: str) -> list[str]:
    return [sys.executable, "-m", "oomhero", *args]


def bloat_argv(events: Path, rate: str, *extra: str) -> list[str]:
    """The bloat app growing at ``rate`` without freeing, recording its signals to ``events``."""
    return oomhero(
        "bloat",
        "--rate",
        rate,
        "--port",
        "0",
        "--free-on-warning",
        "0",
        "--events",
        str(events),
        *extra,
    )


def signals_handled(events: Path) -> list[str]:
    """The signals the bloat app recorded handling, in order."""
    return [e["signal"] for e in read_jsonl(events) if e.get("event") == "signal"]


class Workload:
    """tests/real_kernel/workload.py in a cgroup, steered to usage levels."""

    def __init__(
        self, cgroup: Cgroup, events: Path, uid: int | None = None, env: dict | None = None
    ) -> None:
        self.events = events
        as_user = [] if uid is None else [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        self.process = cgroup.spawn(
            [
                *(["setpriv", *as_user] if as_user else []),
                sys.executable,
                str(WORKLOAD),
                str(cgroup.usage_file),
                str(cgroup.limit_file),
                str(events),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def to(self, percent: float) -> float:
        self.process.stdin.write(f"to {percent}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().split()
        assert answer[:1] == ["ok"], f"workload answered {answer}"
        return float(answer[1])

    def signals(self) -> list[dict]:
        return read_jsonl(self.events)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
