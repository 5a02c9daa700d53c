"""The guest itself: refuse to run elsewhere, wait for things, read JSON-line logs."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import guest_version
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[3]


MIB = 1 << 20


def require_guest() -> str:
    version = guest_version()
    if version is None:
        raise RuntimeError("refusing to touch cgroups outside the oomhero qemu guest")
    return version


def write_file(path: str | Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """The guest tests' order of arguments for ``wait_until``, at 50 ms steps."""
    return wait_until(predicate, what, timeout, step=0.05)


def log_time(record: dict) -> float:
    """A JSON log line's ``time`` (RFC 3339, UTC, milliseconds) as seconds since the epoch."""
    return datetime.datetime.fromisoformat(record["time"]).timestamp()


def read_jsonl(path: Path) -> list[dict]:
    """JSON lines; any other line (a traceback, say) comes back as {"raw": line}."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append({"raw": line})
    return records
