"""Helpers for guest tests: real cgroups, processes placed in them, pods of "containers".

Everything here writes to /sys/fs/cgroup, so every entry point first checks that this is the
oomhero qemu guest and refuses otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import guest_version

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "tests" / "real_kernel" / "workload.py"
TEST_ROOT = "oomhero-test"
MIB = 1 << 20


def require_guest() -> str:
    version = guest_version()
    if version is None:
        raise RuntimeError("refusing to touch cgroups outside the oomhero qemu guest")
    return version


def _write(path: str | Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


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


class Watcher:
    """`oomhero watch` on cgroups, logging JSON to a file; stop() returns the log records."""

    def __init__(
        self,
        cgroups: list[Cgroup],
        log: Path,
        *flags: str,
        uid: int | None = None,
        command: tuple[str, ...] = ("watch",),
        expect: int | None = None,
    ):
        """``command`` replaces ``watch CGROUPS...`` (e.g. a node agent); ``expect`` is how many
        targets to wait for (default: one per cgroup)."""
        self.log = log
        as_user = (
            [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        )
        targets = [str(c.path) for c in cgroups] if command == ("watch",) else []
        argv = oomhero(*command, *targets, "--log-format", "json", *flags)
        self.process = subprocess.Popen([*as_user, *argv], stderr=open(log, "w"))
        wanted = len(cgroups) if expect is None else expect
        wait_for(
            lambda: len(self.records("watching target")) == wanted,
            60,
            "oomhero to watch every cgroup",
        )

    def records(self, msg: str | None = None) -> list[dict]:
        records = read_jsonl(self.log)
        return records if msg is None else [r for r in records if r.get("msg") == msg]

    def stop(self) -> list[dict]:
        if self.process.poll() is None:
            self.process.terminate()
        assert self.process.wait(timeout=60) == 0, "oomhero did not stop cleanly"
        records = self.records()
        assert not [r for r in records if "raw" in r], [r for r in records if "raw" in r]
        return records


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
        return subprocess.Popen(argv, preexec_fn=lambda: _write(procs, "0"), **popen)

    def kill_all(self) -> None:
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


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
            _write(parent / "cgroup.subtree_control", "+memory")
            parent = parent / part
            parent.mkdir(exist_ok=True)
    else:
        path.mkdir(parents=True, exist_ok=True)
    cgroup = Cgroup(path, version)
    if memory_max is not None:
        _write(cgroup.limit_file, str(memory_max))
    return cgroup


def remove_test_cgroups() -> None:
    """Kill everything in the test tree and remove it, deepest first."""
    version = 2 if require_guest() == "v2" else 1
    root = cgroup_base(version) / TEST_ROOT
    if not root.exists():
        return
    dirs = sorted((Path(d) for d, _, _ in os.walk(root)), key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        Cgroup(d, version).kill_all()
    for d in dirs:
        for _ in range(100):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


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


# -- pods -----------------------------------------------------------------------------------


@dataclass
class Container:
    """One "container": its own cgroup (with an optional limit), its own mount namespace with
    its own cgroup namespace and cgroup filesystem at /sys/fs/cgroup, as Kubernetes sets up."""

    name: str
    argv: list[str]
    memory_max: int | None = None
    uid: int | None = None
    caps: tuple[str, ...] = ()  # capabilities kept under ``uid``, e.g. ("sys_ptrace", "kill")
    cgroup: Cgroup | None = field(default=None, init=False)


def _container_shell(container: Container, version: int) -> str:
    """The command the pod's init runs for a container (see pod_init.py)."""
    if version == 2:
        # The kernel refuses the same cgroup2 superblock on top of its own mount root: detach
        # the pod's view first (this mount namespace only).
        mount = "umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup"
    else:
        mount = (
            "mount -t tmpfs none /sys/fs/cgroup && mkdir /sys/fs/cgroup/memory && "
            "mount -t cgroup -o memory none /sys/fs/cgroup/memory"
        )
    run = shlex.join(container.argv)
    if container.uid is not None:
        caps = ",".join(f"+{cap}" for cap in container.caps)
        keep = f"--inh-caps {caps} --ambient-caps {caps} " if caps else ""
        run = f"setpriv --reuid={container.uid} --regid={container.uid} --clear-groups {keep}{run}"
    inner = f"{mount} && exec {run}"
    # Join the cgroup first, then unshare: the new cgroup namespace is rooted at that cgroup.
    return (
        f"echo $$ > {shlex.quote(str(container.cgroup.path / 'cgroup.procs'))} && "
        f"exec unshare --cgroup --mount sh -c {shlex.quote(inner)}"
    )


class Pod:
    """Containers sharing one PID namespace, whose PID 1 is a "pause" process (pod_init.py)."""

    def __init__(self, name: str, containers: list[Container], workdir: Path) -> None:
        self.name = name
        self.containers = {c.name: c for c in containers}
        self.workdir = workdir
        self.version = 2 if require_guest() == "v2" else 1
        self.pause = make_cgroup(f"{name}/pause")
        for c in containers:
            c.cgroup = make_cgroup(f"{name}/{c.name}", c.memory_max)
        spec = {c.name: _container_shell(c, self.version) for c in containers}
        spec_path = workdir / f"{name}-spec.json"
        spec_path.write_text(json.dumps(spec))
        self.init = self.pause.spawn(
            [
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                sys.executable,
                str(REPO / "tests" / "guest" / "pod_init.py"),
                str(spec_path),
            ],
            stdout=open(workdir / f"{name}-init.log", "w"),
            stderr=subprocess.STDOUT,
        )
        for c in containers:
            wait_for(lambda c=c: c.cgroup.pids(), 30, f"container {c.name} to start")

    def stop(self) -> None:
        for c in self.containers.values():
            c.cgroup.kill_all()
        self.pause.kill_all()
        with contextlib.suppress(ProcessLookupError):
            self.init.kill()
        self.init.wait()
