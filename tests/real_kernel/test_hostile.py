"""A container that can mount shapes its own /sys/fs/cgroup, which the sidecar reads through
/proc/<pid>/root: a plain directory instead of cgroupfs (FIFO, symlinks into the sidecar's own
files, a huge file, non-UTF-8), or single files mounted over the real cgroupfs. The sidecar
refuses each such container with one line, reads none of it whole, writes nothing there, echoes
none of it, and goes on watching and signalling the honest container beside them."""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path

import pytest

from tests.real_kernel.kit import (
    MIB,
    Container,
    Pod,
    bloat_argv,
    oomhero_container,
    read_jsonl,
    remove_test_cgroups,
    require_guest,
    signals_handled,
    wait_for,
)

pytestmark = [pytest.mark.guest_v2, pytest.mark.guest_v1]

SECRET = b"bearer s3cr3t-token-of-the-sidecar\n"
HUGE = 900 * MIB  # sparse: no memory used until read


def names(version: int) -> dict[str, str]:
    """The files each hostile container replaces, by role, in this cgroup version."""
    if version == 2:
        return {
            "usage": "memory.current",
            "limit": "memory.max",
            "written": "memory.pressure",  # oomhero writes its PSI trigger there
            "events": "memory.events",
        }
    return {
        "usage": "memory.usage_in_bytes",
        "limit": "memory.limit_in_bytes",
        "written": "cgroup.event_control",  # oomhero writes its v1 thresholds there
        "events": "memory.oom_control",
    }


def plain_view(workdir: Path, version: int) -> Path:
    """A plain directory (on the guest's tmpfs) posing as the container's cgroup: a FIFO for
    usage, the limit a symlink to the sidecar's token, the written file a symlink to a file of
    the sidecar's, a huge memory.stat, non-UTF-8 events, a process list naming the container."""
    files = names(version)
    fake = workdir / "plain-view"
    fake.mkdir()
    os.mkfifo(fake / files["usage"])
    (fake / files["limit"]).symlink_to(workdir / "token")
    (fake / files["written"]).symlink_to(workdir / "sidecar-own")
    with open(fake / "memory.stat", "wb") as f:
        f.truncate(HUGE)
    (fake / files["events"]).write_bytes(b"oom_kill \xff\xfe\n\x80 1\n")
    (fake / "cgroup.kill").symlink_to("/dev/zero")
    (fake / "cgroup.procs").write_text("")
    return fake


def hostile_containers(workdir: Path, version: int) -> list[Container]:
    files = names(version)
    base = "/sys/fs/cgroup" if version == 2 else "/sys/fs/cgroup/memory"
    fake = plain_view(workdir, version)
    procs = shlex.quote(str(fake / "cgroup.procs"))
    os.mkfifo(workdir / "fifo")
    (workdir / "written").write_bytes(SECRET)
    (workdir / "events").write_bytes(b"oom_kill \xff\xfe\n\x80 1\n")
    with open(workdir / "huge", "wb") as f:
        f.truncate(HUGE)

    def over(name: str, source: Path | str) -> str:
        return f"mount --bind {shlex.quote(str(source))} {base}/{name}"

    setups = {
        # The whole view: a plain directory instead of cgroupfs, listing this container.
        "plain": f"umount -l {base} && mount --bind {fake} {base} && echo $$ > {procs}",
        # Single files mounted over the real cgroupfs.
        "fifo": over(files["usage"], workdir / "fifo"),
        "written": over(files["written"], workdir / "written"),
        "events": over(files["events"], workdir / "events"),
        "zero": over(files["usage"], "/dev/zero"),
        "huge": over("memory.stat", workdir / "huge"),
        "token": over(files["limit"], workdir / "token"),
    }
    return [
        Container(f"hostile-{kind}", ["sleep", "1000"], memory_max=64 * MIB, setup=setup)
        for kind, setup in setups.items()
    ]


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    remove_test_cgroups()


def test_hostile_containers_are_refused_and_the_honest_one_is_still_signalled(workdir):
    version = 2 if require_guest() == "v2" else 1
    (workdir / "token").write_bytes(SECRET)
    (workdir / "sidecar-own").write_bytes(SECRET)
    hostile = hostile_containers(workdir, version)
    untouched = {
        path: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in (workdir / "token", workdir / "sidecar-own", workdir / "written")
    }
    events = workdir / "app.jsonl"
    app = Container("app", bloat_argv(events, "16M", "--shed-on-critical"), memory_max=96 * MIB)
    pod = Pod(
        "pod",
        [*hostile, app, oomhero_container("sidecar", OOMHERO_INTERVAL="100ms")],
        workdir,
    )
    log = workdir / "sidecar.out"
    try:
        wait_for(lambda: "SIGUSR2" in signals_handled(events), 120, "the app to handle SIGUSR2")

        def refused() -> set[str]:
            lines = [r for r in read_jsonl(log) if r.get("msg") == "target refused: not watched"]
            return {r["target"].rsplit("/", 1)[-1] for r in lines}

        wanted = {c.name for c in hostile}
        wait_for(lambda: refused() >= wanted, 60, "every hostile container refused")
        (sidecar_pid,) = pod.containers["sidecar"].cgroup.pids()
        os.kill(sidecar_pid, signal.SIGTERM)  # it stops cleanly: nothing holds its loop
        wait_for(
            lambda: [r for r in read_jsonl(log) if r.get("msg") == "oomhero stopped"],
            30,
            "the sidecar to stop on SIGTERM",
        )
    finally:
        pod.stop()
    records = read_jsonl(log)
    assert not [r for r in records if "raw" in r], [r for r in records if "raw" in r]
    refusals = [r for r in records if r.get("msg") == "target refused: not watched"]
    by_container = {}
    for r in refusals:
        by_container.setdefault(r["target"].rsplit("/", 1)[-1], []).append(r["why"])
    assert {k: len(v) for k, v in by_container.items()} == {c.name: 1 for c in hostile}, (
        by_container
    )
    files = names(version)
    expected = {
        "hostile-plain": "not on cgroupfs",
        "hostile-fifo": f"{files['usage']} is a FIFO",
        "hostile-written": f"{files['written']} is on tmpfs",
        "hostile-events": f"{files['events']} is on tmpfs",
        "hostile-zero": f"{files['usage']} is a character device",
        "hostile-huge": "memory.stat is on tmpfs",
        "hostile-token": f"{files['limit']} is on tmpfs",
    }
    for name, words in expected.items():
        assert words in by_container[name][0], (name, by_container[name])
    watched = {r["target"].rsplit("/", 1)[-1] for r in records if r.get("msg") == "watching target"}
    assert not watched & set(expected), watched
    assert signals_handled(events)[:2] == ["SIGUSR1", "SIGUSR2"]
    text = log.read_bytes()
    assert b"s3cr3t" not in text
    for path, (data, mtime) in untouched.items():
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime, path
