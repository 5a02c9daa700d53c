"""Real memory cgroups for a test, under the guest's hierarchy (v2 or v1), removed after."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import wait_until
from tests.real_kernel.kit.guest import require_guest, write_file

TEST_ROOT = "oomhero-test"


# How long a killed cgroup's processes may take to leave, and the cgroup to go: a deadline
# against a hang, never a measure of time.
GONE_WITHIN = 60


def _rmdir(path: Path) -> bool:
    """Removed (or already gone); False while the kernel still refuses (EBUSY)."""
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


@dataclass
class Cgroup:
    """A memory cgroup created for a test under the guest's hierarchy (v2 or v1)."""

    path: Path
    version: int

    @property
    def usage_file(self) -> Path:
        return self.path / ("memory.current" if self.version == 2 else "memory.usage_in_bytes")

    @property
    def limit_file(self) -> Path:
        return self.path / ("memory.max" if self.version == 2 else "memory.limit_in_bytes")

    def usage(self) -> int:
        return int(self.usage_file.read_text())

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def pids(self) -> list[int]:
        return [int(p) for p in self.read("cgroup.procs").split()]

    def events(self) -> dict[str, int]:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return {k: int(v) for k, v in (line.split() for line in self.read(name).splitlines())}

    def spawn(self, argv: list[str], **popen: object) -> subprocess.Popen:
        """Start argv inside this cgroup (it joins between fork and exec)."""
        procs = str(self.path / "cgroup.procs")
        return subprocess.Popen(argv, preexec_fn=lambda: write_file(procs, "0"), **popen)

    def kill_all(self) -> None:
        """SIGKILL what is in it until it is empty: a process killed while it frees a large
        heap takes a while to leave, longer on a busy machine."""

        def emptied() -> bool:
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return not pids

        def left() -> str:
            return f"left in {self.path}: {self.pids()}"

        wait_until(emptied, f"{self.path} to empty", GONE_WITHIN, step=0.05, explain=left)

    def remove(self) -> None:
        """Kill what is in it, then remove it (the kernel refuses while it is still busy)."""
        self.kill_all()
        wait_until(lambda: _rmdir(self.path), f"{self.path} removed", GONE_WITHIN, step=0.05)


def cgroup_base(version: int) -> Path:
    return Path("/sys/fs/cgroup") if version == 2 else Path("/sys/fs/cgroup/memory")


def make_cgroup(relative: str, memory_max: int | None = None) -> Cgroup:
    """Create /sys/fs/cgroup[/memory]/oomhero-test/<relative>, with the memory controller
    enabled down to it (v2) and the limit set."""
    version = 2 if require_guest() == "v2" else 1
    base = cgroup_base(version)
    path = base / TEST_ROOT / relative
    if version == 2:
        parent = base
        for part in (TEST_ROOT, *Path(relative).parts):
            write_file(parent / "cgroup.subtree_control", "+memory")
            parent = parent / part
            parent.mkdir(exist_ok=True)
    else:
        path.mkdir(parents=True, exist_ok=True)
    cgroup = Cgroup(path, version)
    if memory_max is not None:
        write_file(cgroup.limit_file, str(memory_max))
    return cgroup


def remove_test_cgroups() -> None:
    """Kill everything in the test tree and remove it, deepest first."""
    version = 2 if require_guest() == "v2" else 1
    root = cgroup_base(version) / TEST_ROOT
    if not root.exists():
        return
    dirs = sorted((Path(d) for d, _, _ in os.walk(root)), key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        Cgroup(d, version).remove()
